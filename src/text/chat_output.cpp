#include "text/chat_output.hpp"

#include <optional>

#include "text/dsml_markup.hpp"
#include "text/python_json.hpp"

namespace megamoe::text {
namespace {

using namespace chat_tokens;
using namespace dsml;

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
    const std::optional<std::string_view> tool_name = invoke_name(s.before);
    if (!tool_name) {
      error = "tool name format error: '" + std::string(s.before) + "'";
      return index;
    }
    ToolCall call;
    call.name = std::string(*tool_name);
    std::vector<std::pair<std::string, std::string>> args;  // name -> JSON value text
    while (stop == kParamOpen) {
      s = read_until(text, index, {kParamClose});
      index = s.next;
      stop = s.stop;
      const std::optional<Param> param = split_param(s.before);
      if (!param) {
        error = "parameter format error: '" + std::string(s.before) + "'";
        return index;
      }
      const std::string name(param->name);
      for (const auto& a : args) {
        if (a.first == name) {
          error = "duplicate parameter name: '" + name + "'";
          return index;
        }
      }
      args.emplace_back(name, param->is_string ? python_json_string(param->value) : std::string(param->value));
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
  if (state_ == State::kToolCalls) {  // an unfinished block: dropped, never shown
    truncated_ = true;
    block_.cut(events);
  }
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
          block_ = ToolCallStream();
        } else if (reasoning) {
          state_ = State::kContent;
        } else {
          state_ = State::kDone;
          events.push_back(OutputEvent{OutputEvent::Kind::kEnd, {}, {}});
        }
        continue;
      }
      std::size_t keep = held_tail(buffer_, {end_marker, kToolCallsStart});
      // At the end, a held-back prefix that is only blank lines is real text;
      // anything else was the start of markup and is dropped.
      if (at_end && buffer_.find_first_not_of('\n', buffer_.size() - keep) == std::string::npos) keep = 0;
      emit_text(kind, std::string_view(buffer_).substr(0, buffer_.size() - keep));
      buffer_.erase(0, buffer_.size() - keep);
      if (at_end) buffer_.clear();
      return;
    }
    if (state_ == State::kToolCalls) {
      const bool done = block_.step(buffer_, events);
      if (!block_.error().empty()) error_ = block_.error();
      if (!done) return;
      buffer_.erase(0, block_.consumed());
      state_ = State::kContent;  // only EOS may follow; anything else is shown as content
      continue;
    }
    buffer_.clear();  // kDone: text after EOS is ignored
    return;
  }
}

}  // namespace megamoe::text
