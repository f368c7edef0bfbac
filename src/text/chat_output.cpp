#include "text/chat_output.hpp"

#include <optional>

#include "text/chat_encoding.hpp"
#include "text/python_json.hpp"

namespace megamoe::text {
namespace {

using namespace chat_tokens;

const std::string kToolCallsStart = std::string("\n\n<") + kDsml + "tool_calls";
const std::string kToolCallsEnd = std::string("</") + kDsml + "tool_calls>";
const std::string kInvokeOpen = std::string("<") + kDsml + "invoke";
const std::string kInvokeClose = std::string("</") + kDsml + "invoke";
const std::string kParamOpen = std::string("<") + kDsml + "parameter";
const std::string kParamClose = std::string("/") + kDsml + "parameter";

struct Stop {
  std::size_t next;                 // index after the stop string (or text size)
  std::string_view before;          // text up to the stop string
  std::optional<std::string> stop;  // which one matched
};

// The earliest of `stops` at or after `index`.
Stop read_until(std::string_view text, std::size_t index, std::initializer_list<std::string_view> stops) {
  std::size_t best = std::string_view::npos;
  std::string_view matched;
  for (const std::string_view s : stops) {
    const std::size_t p = text.find(s, index);
    if (p < best) {
      best = p;
      matched = s;
    }
  }
  if (best == std::string_view::npos) return Stop{text.size(), text.substr(index), std::nullopt};
  return Stop{best + matched.size(), text.substr(index, best - index), std::string(matched)};
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) { return s.size() >= p.size() && s.substr(s.size() - p.size()) == p; }

// The tool-call block after "\n\n<｜DSML｜tool_calls"; sets `error` on bad markup.
std::size_t parse_tool_calls(std::string_view text, std::size_t index, std::vector<ToolCall>& calls,
                             std::optional<std::string>& stop, std::string& error) {
  while (index < text.size()) {
    Stop s = read_until(text, index, {kInvokeOpen, kToolCallsEnd});
    index = s.next;
    stop = s.stop;
    if (s.before != ">\n") {
      error = "tool call format error: expected '>\\n' but got '" + std::string(s.before) + "'";
      return index;
    }
    if (stop == kToolCallsEnd) break;
    if (!stop) {
      error = "missing special token in tool calls";
      return index;
    }
    s = read_until(text, index, {kParamOpen, kInvokeClose});
    index = s.next;
    stop = s.stop;
    // name="NAME">\n, after optional whitespace
    std::string_view head = s.before;
    while (!head.empty() && (head[0] == ' ' || head[0] == '\n' || head[0] == '\t' || head[0] == '\r')) head.remove_prefix(1);
    if (!starts_with(head, "name=\"") || !ends_with(head, "\">\n") || head.size() < 9) {
      error = "tool name format error: '" + std::string(s.before) + "'";
      return index;
    }
    ToolCall call;
    call.name = std::string(head.substr(6, head.size() - 9));
    std::vector<std::pair<std::string, std::string>> args;  // name -> JSON value text
    while (stop == kParamOpen) {
      s = read_until(text, index, {kParamClose});
      index = s.next;
      stop = s.stop;
      // ` name="K" string="true|false">VALUE<`
      const std::string_view p = s.before;
      const std::size_t name_end = p.find("\" string=\"");
      bool good = starts_with(p, " name=\"") && name_end != std::string_view::npos && ends_with(p, "<");
      std::string_view flag, value;
      if (good) {
        const std::string_view rest = p.substr(name_end + 10);
        if (starts_with(rest, "true\">")) {
          flag = "true";
          value = rest.substr(6);
        } else if (starts_with(rest, "false\">")) {
          flag = "false";
          value = rest.substr(7);
        } else {
          good = false;
        }
      }
      if (!good) {
        error = "parameter format error: '" + std::string(p) + "'";
        return index;
      }
      value.remove_suffix(1);
      const std::string name(p.substr(7, name_end - 7));
      for (const auto& a : args) {
        if (a.first == name) {
          error = "duplicate parameter name: '" + name + "'";
          return index;
        }
      }
      args.emplace_back(name, flag == "true" ? python_json_string(value) : std::string(value));
      s = read_until(text, index, {kParamOpen, kInvokeClose});
      index = s.next;
      stop = s.stop;
      if (s.before != ">\n") {
        error = "parameter format error: expected '>\\n' but got '" + std::string(s.before) + "'";
        return index;
      }
    }
    call.arguments = "{";
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (i) call.arguments += ", ";
      call.arguments += python_json_string(args[i].first) + ": " + args[i].second;
    }
    call.arguments += "}";
    calls.push_back(std::move(call));
  }
  return index;
}

}  // namespace

ParsedCompletion parse_completion(std::string_view text, bool thinking) {
  ParsedCompletion r;
  std::size_t index = 0;
  std::optional<std::string> stop;
  if (thinking) {
    const Stop s = read_until(text, index, {kThinkEnd, kToolCallsStart});
    index = s.next;
    r.reasoning_content = std::string(s.before);
    if (s.stop != kThinkEnd) {
      r.error = "invalid thinking format: missing </think>";
      return r;
    }
  }
  Stop s = read_until(text, index, {kEos, kToolCallsStart});
  index = s.next;
  stop = s.stop;
  r.content = std::string(s.before);
  if (stop == kToolCallsStart) {
    index = parse_tool_calls(text, index, r.tool_calls, stop, r.error);
    if (!r.error.empty()) return r;
    s = read_until(text, index, {kEos});
    index = s.next;
    stop = s.stop;
    if (!s.before.empty()) {
      r.error = "unexpected content after tool calls";
      return r;
    }
  } else if (stop != kEos) {
    r.error = "invalid format: missing EOS token";
    return r;
  }
  if (index != text.size() || (stop && stop != kEos)) {
    r.error = "unexpected content at end";
    return r;
  }
  for (const char* token : {kBos, kEos, kThinkStart, kThinkEnd, kDsml}) {
    if (r.content.find(token) != std::string::npos || r.reasoning_content.find(token) != std::string::npos) {
      r.error = std::string("unexpected special token '") + token + "' in content";
      return r;
    }
  }
  r.ok = true;
  return r;
}

ChatOutputParser::ChatOutputParser(bool thinking) : state_(thinking ? State::kReasoning : State::kContent) {}

std::vector<OutputEvent> ChatOutputParser::feed(std::string_view delta) {
  std::vector<OutputEvent> events;
  buffer_ += delta;
  step(events, /*at_end=*/false);
  return events;
}

std::vector<OutputEvent> ChatOutputParser::finish() {
  std::vector<OutputEvent> events;
  step(events, /*at_end=*/true);
  if (state_ == State::kToolCalls) truncated_ = true;  // an unfinished block: dropped, never shown
  if (state_ != State::kDone) events.push_back(OutputEvent{OutputEvent::Kind::kEnd, {}, {}});
  state_ = State::kDone;
  buffer_.clear();
  return events;
}

void ChatOutputParser::step(std::vector<OutputEvent>& events, bool at_end) {
  auto emit_text = [&](OutputEvent::Kind kind, std::string_view t) {
    if (t.empty()) return;
    if (!events.empty() && events.back().kind == kind) {
      events.back().text += t;
    } else {
      events.push_back(OutputEvent{kind, std::string(t), {}});
    }
  };
  // Longest tail of buffer_ that is a proper prefix of one of `markers`.
  auto held_tail = [&](std::initializer_list<std::string_view> markers) {
    std::size_t keep = 0;
    for (const std::string_view m : markers) {
      for (std::size_t k = std::min(m.size() - 1, buffer_.size()); k > keep; --k) {
        if (buffer_.compare(buffer_.size() - k, k, m.data(), k) == 0) {
          keep = k;
          break;
        }
      }
    }
    return keep;
  };

  for (;;) {
    if (state_ == State::kReasoning || state_ == State::kContent) {
      const bool reasoning = state_ == State::kReasoning;
      const auto kind = reasoning ? OutputEvent::Kind::kReasoning : OutputEvent::Kind::kContent;
      const std::string_view end_marker = reasoning ? std::string_view(kThinkEnd) : std::string_view(kEos);
      const Stop s = read_until(buffer_, 0, {end_marker, kToolCallsStart});
      if (s.stop) {
        emit_text(kind, s.before);
        buffer_.erase(0, s.next);
        if (*s.stop == kToolCallsStart) {
          state_ = State::kToolCalls;
        } else if (reasoning) {
          state_ = State::kContent;
        } else {
          state_ = State::kDone;
          events.push_back(OutputEvent{OutputEvent::Kind::kEnd, {}, {}});
        }
        continue;
      }
      std::size_t keep = held_tail({end_marker, kToolCallsStart});
      // At the end, a held-back prefix that is only blank lines is real text;
      // anything else was the start of markup and is dropped.
      if (at_end && buffer_.find_first_not_of('\n', buffer_.size() - keep) == std::string::npos) keep = 0;
      emit_text(kind, std::string_view(buffer_).substr(0, buffer_.size() - keep));
      buffer_.erase(0, buffer_.size() - keep);
      if (at_end) buffer_.clear();
      return;
    }
    if (state_ == State::kToolCalls) {
      const std::size_t end = buffer_.find(kToolCallsEnd);
      if (end == std::string::npos) return;  // wait for the whole block
      std::vector<ToolCall> calls;
      std::optional<std::string> stop;
      const std::string block = buffer_.substr(0, end + kToolCallsEnd.size());
      parse_tool_calls(block, 0, calls, stop, error_);
      for (ToolCall& c : calls) events.push_back(OutputEvent{OutputEvent::Kind::kToolCall, {}, std::move(c)});
      buffer_.erase(0, block.size());
      state_ = State::kContent;  // only EOS may follow; anything else is shown as content
      continue;
    }
    buffer_.clear();  // kDone: text after EOS is ignored
    return;
  }
}

}  // namespace megamoe::text
