// JSON inputs, read and parsed with the errors every input gets:
// "<source>: cannot open the file", "<source>: not a regular file (...)",
// "<source>: the file has N bytes, over the limit ...", "<source>: not valid
// JSON (<parser's reason>)". Parsing is strict beyond RFC 8259's minimum:
//   - a duplicate key in any object is an error naming the key (nlohmann would
//     silently keep the last one, as safetensors headers already refuse);
//   - a NUL byte anywhere is an error naming its offset (the parser would stop
//     at it and ignore the rest);
//   - nesting deeper than kMaxJsonDepth is an error (no recursion blow-ups later).
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/input_file.hpp"

namespace megamoe {

inline constexpr int kMaxJsonDepth = 64;

nlohmann::json parse_json_text(std::string_view text, const std::string& source);
// Keeps the key order of objects (chat messages are rendered in file order).
nlohmann::ordered_json parse_ordered_json_text(std::string_view text, const std::string& source);

// read_input_file(path, max_bytes) then parse_json_text.
nlohmann::json read_json_file(const std::filesystem::path& path, std::size_t max_bytes);
nlohmann::ordered_json read_ordered_json_file(const std::filesystem::path& path, std::size_t max_bytes);

}  // namespace megamoe
