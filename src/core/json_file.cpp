#include "core/json_file.hpp"

#include <fstream>
#include <sstream>
#include <string>

#include "core/error.hpp"

namespace megamoe {
namespace {

std::string read_file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  MEGAMOE_CHECK(in, path.string(), ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

template <typename Json>
Json parse_json_file(const std::filesystem::path& path) {
  const std::string text = read_file_text(path);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    MEGAMOE_THROW(path.string(), ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path) { return parse_json_file<nlohmann::json>(path); }

nlohmann::ordered_json read_ordered_json_file(const std::filesystem::path& path) {
  return parse_json_file<nlohmann::ordered_json>(path);
}

}  // namespace megamoe
