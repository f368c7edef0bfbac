// Token ids given on a command line ("3,17,42", spaces allowed around items)
// or in a file / on stdin (--ids-file: ids separated by commas and/or any
// whitespace, newlines included).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace megamoe {

// Throws naming `source` and the offending item (cut short, never the whole
// list) for anything but non-negative integers that fit in int32, and for an
// empty list.
std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& source = "--ids");

// The ids of a file ("-" = stdin), read with the bounded reader (kMaxIdsFileBytes).
std::vector<int32_t> read_token_ids_file(const std::string& path);

}  // namespace megamoe
