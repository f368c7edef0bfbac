// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes
// it (", " and ": " separators, repr() floats, keys in insertion order): the
// DeepSeek-V4 chat encoding embeds tool schemas and arguments in that form.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace megamoe::text {

std::string python_json_dumps(const nlohmann::ordered_json& value);
std::string python_json_string(std::string_view s);  // a quoted, escaped string

}  // namespace megamoe::text
