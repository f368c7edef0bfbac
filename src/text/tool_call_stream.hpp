// Incremental parse of one DSML tool-call block: the text after
// "\n\n<｜DSML｜tool_calls" up to the first "</｜DSML｜tool_calls>". It runs the
// checks of the one-shot parser (parse_completion) on the growing text and
// takes a step only once no later text can change it, so its events add up to
// the one-shot result and its errors are the one-shot parser's messages.
// Argument text goes out as soon as it is certain; held back is only a value's
// tail that may still be its closing "</｜DSML｜parameter" (or the block's
// end), an unfinished UTF-8 character and, in a raw JSON value, an unfinished
// string escape.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "text/output_event.hpp"

namespace megamoe::text {

class ToolCallStream {
 public:
  // `block` is all the text seen since the block's opening marker (it only
  // grows between calls and may run past the block). Appends the events it
  // makes certain; returns true once the block is done: parsed to its closing
  // marker, or found malformed (then error() is set, an open call gets
  // kToolCallAbort, and the rest of the block up to its closing marker is
  // dropped). consumed() is then the block's length in `block`.
  bool step(std::string_view block, std::vector<OutputEvent>& events);
  std::size_t consumed() const { return end_; }

  // The stream ended inside the block: an open call gets kToolCallAbort.
  void cut(std::vector<OutputEvent>& events);

  const std::string& error() const { return error_; }

 private:
  enum class Phase { kBetweenCalls, kInvokeHead, kParam, kAfterParam, kSkip, kDone };

  bool advance(std::string_view view, bool complete, std::vector<OutputEvent>& events);
  void parse_param(std::string_view p, std::vector<OutputEvent>& events);
  void stream_value(std::string_view view, std::vector<OutputEvent>& events);
  std::size_t raw_escape_safe_end(std::string_view view, std::size_t to);
  void emit_arguments(std::string_view text, std::vector<OutputEvent>& events);
  void emit_value(std::string_view raw, std::vector<OutputEvent>& events);
  void end_call(std::vector<OutputEvent>& events);
  void fail(std::string message, std::vector<OutputEvent>& events);
  bool is_duplicate(std::string_view name) const;

  Phase phase_ = Phase::kBetweenCalls;
  std::size_t pos_ = 0;     // the next unparsed byte
  std::size_t scan_ = 0;    // no stop of the current phase starts in [pos_, scan_)
  std::size_t end_ = std::string::npos;  // the block's length, once its closing marker is seen
  std::size_t end_scan_ = 0;             // no closing marker starts before this
  std::string error_;

  // The call being parsed.
  bool open_ = false;
  ToolCall call_;  // the name and the arguments text reported so far
  std::vector<std::string> param_names_;

  // The parameter being parsed (kParam): once its header is known its value streams.
  bool streaming_ = false;
  bool unstreamable_ = false;  // the header can't be good: wait for the close and let the checks say why
  bool string_value_ = false;
  std::size_t value_start_ = 0;
  std::size_t emitted_ = 0;     // value bytes before this are reported
  bool raw_in_string_ = false;  // a raw value's text up to emitted_ ends inside a JSON string
};

}  // namespace megamoe::text
