#include "text/tool_call_stream.hpp"

#include <algorithm>
#include <optional>

#include "text/dsml_markup.hpp"
#include "text/python_json.hpp"

namespace megamoe::text {
namespace {

using namespace dsml;

const std::string kValueEnd = "<" + kParamClose;  // what ends a parameter's value
constexpr std::string_view kNameLead = " name=\"";
constexpr std::string_view kFlagLead = "\" string=\"";

// `to` moved back to the start of an unfinished UTF-8 character at the end of
// s[from, to), if there is one: a fragment never splits a character.
std::size_t utf8_safe_end(std::string_view s, std::size_t from, std::size_t to) {
  for (std::size_t i = to; i > from && to - i < 4; --i) {
    const auto c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: the lead is further back
    const std::size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return to - (i - 1) < need ? i - 1 : to;
  }
  return to;
}

// The arguments text in front of a parameter's value: `, "K": ` (the first
// one without the comma: "{" is out already) and a string value's quote.
std::string param_head(std::string_view name, bool is_string, bool first) {
  return std::string(first ? "" : ", ") + python_json_string(name) + ": " + (is_string ? "\"" : "");
}

}  // namespace

bool ToolCallStream::step(std::string_view block, std::vector<OutputEvent>& events) {
  if (phase_ == Phase::kDone) return true;
  if (end_ == std::string::npos) {
    const std::size_t p = block.find(kToolCallsEnd, end_scan_);
    if (p != std::string::npos) {
      end_ = p + kToolCallsEnd.size();
    } else if (block.size() >= kToolCallsEnd.size()) {
      end_scan_ = block.size() - kToolCallsEnd.size() + 1;
    }
  }
  // Like the one-shot parser on a block cut at its first closing marker: a
  // value can't hold that marker, so none ever reaches the arguments.
  const bool complete = end_ != std::string::npos;
  const std::string_view view = complete ? block.substr(0, end_) : block;
  while (advance(view, complete, events)) {
  }
  return phase_ == Phase::kDone;
}

void ToolCallStream::cut(std::vector<OutputEvent>& events) {
  if (open_) events.push_back(OutputEvent{OutputEvent::Kind::kToolCallAbort, {}, {}});
  open_ = false;
  phase_ = Phase::kDone;
}

// One step of the one-shot parse; false when it has to wait for more text.
bool ToolCallStream::advance(std::string_view view, bool complete, std::vector<OutputEvent>& events) {
  // The one-shot parser's read_until from pos_, once no later text can change it.
  auto read = [&](std::initializer_list<std::string_view> stops) -> std::optional<Stop> {
    const Stop s = read_until(view, pos_, stops, scan_);
    if (!s.stop && !complete) {
      std::size_t longest = 0;
      for (const std::string_view stop : stops) longest = std::max(longest, stop.size());
      if (view.size() >= longest) scan_ = std::max(pos_, view.size() - longest + 1);
      return std::nullopt;
    }
    pos_ = scan_ = s.next;
    return s;
  };
  auto next_param_or_end = [&](const Stop& s) {
    if (s.stop == kParamOpen) {
      phase_ = Phase::kParam;
      streaming_ = unstreamable_ = false;
    } else {
      end_call(events);
    }
  };

  switch (phase_) {
    case Phase::kBetweenCalls: {
      if (complete && pos_ >= view.size()) {  // the one-shot loop's own end
        phase_ = Phase::kDone;
        return false;
      }
      const std::optional<Stop> s = read({kInvokeOpen, kToolCallsEnd});
      if (!s) return false;
      if (s->before != ">\n") {
        fail("tool call format error: expected '>\\n' but got '" + std::string(s->before) + "'", events);
      } else if (s->stop == kToolCallsEnd) {
        phase_ = Phase::kDone;
        return false;
      } else if (!s->stop) {
        fail("missing special token in tool calls", events);
      } else {
        phase_ = Phase::kInvokeHead;
      }
      return true;
    }
    case Phase::kInvokeHead: {
      const std::optional<Stop> s = read({kParamOpen, kInvokeClose});
      if (!s) return false;
      const std::optional<std::string_view> name = invoke_name(s->before);
      if (!name) {
        fail("tool name format error: '" + std::string(s->before) + "'", events);
        return true;
      }
      open_ = true;
      call_ = ToolCall{std::string(*name), {}};
      param_names_.clear();
      events.push_back(OutputEvent{OutputEvent::Kind::kToolCallBegin, {}, ToolCall{call_.name, {}}});
      emit_arguments("{", events);
      next_param_or_end(*s);
      return true;
    }
    case Phase::kParam: {
      const std::optional<Stop> s = read({kParamClose});
      if (!s) {
        stream_value(view, events);
        return false;
      }
      parse_param(s->before, events);
      return true;
    }
    case Phase::kAfterParam: {
      const std::optional<Stop> s = read({kParamOpen, kInvokeClose});
      if (!s) return false;
      if (s->before != ">\n") {
        fail("parameter format error: expected '>\\n' but got '" + std::string(s->before) + "'", events);
      } else {
        next_param_or_end(*s);
      }
      return true;
    }
    case Phase::kSkip:  // malformed: drop the rest of the block
      if (complete) {
        pos_ = view.size();
        phase_ = Phase::kDone;
      }
      return false;
    case Phase::kDone:
      return false;
  }
  return false;
}

// The parameter's whole text is there: the one-shot checks, then the rest of its value.
void ToolCallStream::parse_param(std::string_view p, std::vector<OutputEvent>& events) {
  const std::optional<Param> param = split_param(p);
  if (!param) return fail("parameter format error: '" + std::string(p) + "'", events);
  if (is_duplicate(param->name)) return fail("duplicate parameter name: '" + std::string(param->name) + "'", events);
  // A streamed header came from a prefix of these same checks, so the value starts at value_start_.
  std::string_view rest = param->value;
  if (streaming_) {
    rest.remove_prefix(std::min(rest.size(), emitted_ - value_start_));
  } else {
    emit_arguments(param_head(param->name, param->is_string, param_names_.empty()), events);
    string_value_ = param->is_string;
  }
  emit_value(rest, events);
  if (param->is_string) emit_arguments("\"", events);
  param_names_.emplace_back(param->name);
  streaming_ = false;
  phase_ = Phase::kAfterParam;
}

// The parameter's close is not there yet: once its header is known (and can
// pass the checks), report its value up to where the close may begin.
void ToolCallStream::stream_value(std::string_view view, std::vector<OutputEvent>& events) {
  if (!streaming_ && !unstreamable_) {
    const std::string_view q = view.substr(pos_);
    if (!starts_with(q, kNameLead)) {
      unstreamable_ = q.size() >= kNameLead.size() || !starts_with(kNameLead, q);
      return;
    }
    const std::size_t name_end = q.find(kFlagLead);
    if (name_end == std::string_view::npos) return;
    if (name_end < kNameLead.size()) {  // odd enough to leave to the checks at the close
      unstreamable_ = true;
      return;
    }
    const std::string_view flag = q.substr(name_end + kFlagLead.size());
    bool is_string = false;
    std::size_t flag_size = 0;
    if (starts_with(flag, "true\">")) {
      is_string = true;
      flag_size = 6;
    } else if (starts_with(flag, "false\">")) {
      flag_size = 7;
    } else {
      unstreamable_ = !starts_with("true\">", flag) && !starts_with("false\">", flag);
      return;
    }
    const std::string_view name = q.substr(kNameLead.size(), name_end - kNameLead.size());
    if (is_duplicate(name)) {  // it will fail: nothing of it goes out
      unstreamable_ = true;
      return;
    }
    streaming_ = true;
    string_value_ = is_string;
    raw_in_string_ = false;
    value_start_ = emitted_ = pos_ + name_end + kFlagLead.size() + flag_size;
    emit_arguments(param_head(name, is_string, param_names_.empty()), events);
  }
  if (!streaming_) return;
  const std::size_t held = held_tail(view.substr(emitted_), {kValueEnd, kParamClose, kToolCallsEnd});
  std::size_t certain = utf8_safe_end(view, emitted_, view.size() - held);
  if (!string_value_) certain = raw_escape_safe_end(view, certain);
  emit_value(view.substr(emitted_, certain - emitted_), events);
  emitted_ = certain;
}

// A raw (JSON) value: `to` moved back off an unfinished string escape ("\"
// or "\u" and its digits), so a fragment never ends inside one.
std::size_t ToolCallStream::raw_escape_safe_end(std::string_view view, std::size_t to) {
  std::size_t safe = emitted_;
  bool in_string = raw_in_string_, safe_in_string = raw_in_string_;
  int pending = 0;  // escape characters still to come
  for (std::size_t i = emitted_; i < to; ++i) {
    const char c = view[i];
    if (pending == 5) {
      pending = c == 'u' ? 4 : 0;
    } else if (pending > 0) {
      --pending;
    } else if (in_string && c == '\\') {
      pending = 5;
    } else if (c == '"') {
      in_string = !in_string;
    }
    if (pending == 0) {
      safe = i + 1;
      safe_in_string = in_string;
    }
  }
  raw_in_string_ = safe_in_string;
  return safe;
}

void ToolCallStream::emit_arguments(std::string_view text, std::vector<OutputEvent>& events) {
  if (text.empty()) return;
  call_.arguments += text;
  if (!events.empty() && events.back().kind == OutputEvent::Kind::kToolCallArguments) {
    events.back().text += text;
  } else {
    events.push_back(OutputEvent{OutputEvent::Kind::kToolCallArguments, std::string(text), {}});
  }
}

// Escapes go per byte and non-ASCII bytes pass as they are, so escaping each
// piece gives the pieces of the escaped whole.
void ToolCallStream::emit_value(std::string_view raw, std::vector<OutputEvent>& events) {
  if (raw.empty()) return;
  if (!string_value_) return emit_arguments(raw, events);
  const std::string quoted = python_json_string(raw);
  emit_arguments(std::string_view(quoted).substr(1, quoted.size() - 2), events);
}

void ToolCallStream::end_call(std::vector<OutputEvent>& events) {
  emit_arguments("}", events);
  events.push_back(OutputEvent{OutputEvent::Kind::kToolCallEnd, {}, call_});
  open_ = false;
  phase_ = Phase::kBetweenCalls;
}

void ToolCallStream::fail(std::string message, std::vector<OutputEvent>& events) {
  error_ = std::move(message);
  if (open_) events.push_back(OutputEvent{OutputEvent::Kind::kToolCallAbort, {}, {}});
  open_ = false;
  phase_ = Phase::kSkip;
}

bool ToolCallStream::is_duplicate(std::string_view name) const {
  return std::find(param_names_.begin(), param_names_.end(), name) != param_names_.end();
}

}  // namespace megamoe::text
