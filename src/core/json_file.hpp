// Reading a whole file as JSON, with the errors every input file gets:
// "<file>: cannot open the file" and "<file>: not valid JSON (<parser's reason>)".
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

namespace megamoe {

nlohmann::json read_json_file(const std::filesystem::path& path);
// Keeps the key order of objects (chat messages are rendered in file order).
nlohmann::ordered_json read_ordered_json_file(const std::filesystem::path& path);

}  // namespace megamoe
