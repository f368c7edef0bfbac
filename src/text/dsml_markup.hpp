// DeepSeek-V4's output markers and the scanning helper both output parsers
// share (parse_completion in chat_output.cpp, ToolCallStream): the markers as
// encoding_dsv4.py spells them and its read_until.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "text/chat_encoding.hpp"

namespace megamoe::text::dsml {

inline const std::string kToolCallsStart = std::string("\n\n<") + chat_tokens::kDsml + "tool_calls";
inline const std::string kToolCallsEnd = std::string("</") + chat_tokens::kDsml + "tool_calls>";
inline const std::string kInvokeOpen = std::string("<") + chat_tokens::kDsml + "invoke";
inline const std::string kInvokeClose = std::string("</") + chat_tokens::kDsml + "invoke";
inline const std::string kParamOpen = std::string("<") + chat_tokens::kDsml + "parameter";
inline const std::string kParamClose = std::string("/") + chat_tokens::kDsml + "parameter";

struct Stop {
  std::size_t next;                 // index after the stop string (or text size)
  std::string_view before;          // text up to the stop string
  std::optional<std::string> stop;  // which one matched
};

// The earliest of `stops` at or after `index` (`from` >= index: where the
// search may start because no stop begins in [index, from)).
inline Stop read_until(std::string_view text, std::size_t index, std::initializer_list<std::string_view> stops,
                       std::size_t from = 0) {
  std::size_t best = std::string_view::npos;
  std::string_view matched;
  for (const std::string_view s : stops) {
    const std::size_t p = text.find(s, std::max(index, from));
    if (p < best) {
      best = p;
      matched = s;
    }
  }
  if (best == std::string_view::npos) return Stop{text.size(), text.substr(index), std::nullopt};
  return Stop{best + matched.size(), text.substr(index, best - index), std::string(matched)};
}

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
inline bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// An invoke's head, up to its first parameter or its close: `name="NAME">\n`
// after optional whitespace; nullopt when it is not that.
inline std::optional<std::string_view> invoke_name(std::string_view head) {
  while (!head.empty() && (head[0] == ' ' || head[0] == '\n' || head[0] == '\t' || head[0] == '\r')) head.remove_prefix(1);
  if (!starts_with(head, "name=\"") || !ends_with(head, "\">\n") || head.size() < 9) return std::nullopt;
  return head.substr(6, head.size() - 9);
}

// A parameter's text between "<｜DSML｜parameter" and "/｜DSML｜parameter":
// ` name="K" string="true|false">VALUE<`; nullopt when it is not that.
struct Param {
  std::string_view name;
  bool is_string;  // string="true": the value is text, JSON-escaped into the arguments
  std::string_view value;
};
inline std::optional<Param> split_param(std::string_view p) {
  const std::size_t name_end = p.find("\" string=\"");
  if (!starts_with(p, " name=\"") || name_end == std::string_view::npos || !ends_with(p, "<")) return std::nullopt;
  const std::string_view rest = p.substr(name_end + 10);
  Param r{p.substr(7, name_end - 7), false, {}};
  if (starts_with(rest, "true\">")) {
    r.is_string = true;
    r.value = rest.substr(6);
  } else if (starts_with(rest, "false\">")) {
    r.value = rest.substr(7);
  } else {
    return std::nullopt;
  }
  r.value.remove_suffix(1);  // the "<" of "</｜DSML｜parameter"
  return r;
}

// Length of the longest tail of `text` that is a proper prefix of one of `markers`.
inline std::size_t held_tail(std::string_view text, std::initializer_list<std::string_view> markers) {
  std::size_t keep = 0;
  for (const std::string_view m : markers) {
    for (std::size_t k = std::min(m.size() - 1, text.size()); k > keep; --k) {
      if (text.substr(text.size() - k) == m.substr(0, k)) {
        keep = k;
        break;
      }
    }
  }
  return keep;
}

}  // namespace megamoe::text::dsml
