// Token ids given on a command line: "3,17,42" (spaces allowed after commas).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace megamoe {

// Throws naming the offending item for anything but non-negative integers
// that fit in int32, and for an empty list.
std::vector<int32_t> parse_token_ids(const std::string& text);

}  // namespace megamoe
