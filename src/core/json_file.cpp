#include "core/json_file.hpp"

#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace megamoe {
namespace {

template <typename Json>
Json parse_strict(std::string_view text, const std::string& source) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    MEGAMOE_THROW(source, ": not valid JSON (a NUL byte at offset ", nul, ")");
  }
  // Keys seen in each open object, by depth; the path of keys for messages.
  std::vector<std::set<std::string>> keys_by_depth;
  std::vector<std::string> path;
  auto callback = [&](int depth, typename Json::parse_event_t event, Json& parsed) {
    const auto d = static_cast<size_t>(depth);
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        MEGAMOE_CHECK(depth < kMaxJsonDepth, source, ": not valid JSON for megamoe (nesting deeper than ",
                      kMaxJsonDepth, " levels)");
        if (event == Json::parse_event_t::object_start) {
          if (keys_by_depth.size() <= d + 1) keys_by_depth.resize(d + 2);
          keys_by_depth[d + 1].clear();
        }
        break;
      case Json::parse_event_t::key: {
        if (keys_by_depth.size() <= d) keys_by_depth.resize(d + 1);
        if (path.size() < d) path.resize(d);
        const std::string& key = parsed.template get_ref<const std::string&>();
        if (d >= 1) path[d - 1] = key;
        if (!keys_by_depth[d].insert(key).second) {
          std::string where;
          for (size_t i = 0; i + 1 < d && i < path.size(); ++i) {
            if (!path[i].empty()) where += (where.empty() ? "" : ".") + path[i];
          }
          MEGAMOE_THROW(source, ": not valid JSON for megamoe (the key '", quote_for_message(key), "' appears twice in ",
                        where.empty() ? std::string("the top-level object") : "object '" + quote_for_message(where) + "'",
                        ")");
        }
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    MEGAMOE_THROW(source, ": not valid JSON (", quote_for_message(e.what(), 200), ")");
  }
}

}  // namespace

nlohmann::json parse_json_text(std::string_view text, const std::string& source) {
  return parse_strict<nlohmann::json>(text, source);
}

nlohmann::ordered_json parse_ordered_json_text(std::string_view text, const std::string& source) {
  return parse_strict<nlohmann::ordered_json>(text, source);
}

nlohmann::json read_json_file(const std::filesystem::path& path, std::size_t max_bytes) {
  return parse_json_text(read_input_file(path, max_bytes), path.string());
}

nlohmann::ordered_json read_ordered_json_file(const std::filesystem::path& path, std::size_t max_bytes) {
  return parse_ordered_json_text(read_input_file(path, max_bytes), path.string());
}

}  // namespace megamoe
