// The model's output side: split DeepSeek-V4 completions into reasoning,
// answer and tool calls (DSML markup), so no markup reaches the user.
//
// parse_completion follows the official parse_message_from_completion_text of
// encoding_dsv4.py (same results, same rejections; tests/text goldens).
// ChatOutputParser does the same incrementally on streamed text deltas,
// holding back any text that may be the start of a marker, and reports each
// tool call as it is generated (output_event.hpp, tool_call_stream.hpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "text/output_event.hpp"
#include "text/tool_call_stream.hpp"

namespace megamoe::text {

struct ParsedCompletion {
  bool ok = false;
  std::string error;  // why the text is not a well-formed completion (when !ok)
  std::string reasoning_content;
  std::string content;
  std::vector<ToolCall> tool_calls;
};

// `text` is the decoded completion, special tokens included, ending with
// <｜end▁of▁sentence｜> (or cut off right after a tool-call block). In
// thinking mode it starts inside the reasoning (the prompt ended in <think>).
ParsedCompletion parse_completion(std::string_view text, bool thinking);

class ChatOutputParser {
 public:
  explicit ChatOutputParser(bool thinking);

  // Feeds the next decoded text delta; returns the events it completes.
  std::vector<OutputEvent> feed(std::string_view delta);

  // The stream ended (EOS or length). Flushes held-back text that turned out
  // not to be a marker; an unfinished tool-call block is dropped and reported
  // by truncated(), never shown as text (its open call gets kToolCallAbort).
  std::vector<OutputEvent> finish();

  bool truncated() const { return truncated_; }
  // A malformed tool-call block (the one-shot parser's message): its open call
  // got kToolCallAbort, the rest of the block is dropped, text after it goes on.
  const std::string& error() const { return error_; }

 private:
  enum class State { kReasoning, kContent, kToolCalls, kDone };
  void step(std::vector<OutputEvent>& events, bool at_end);

  State state_;
  std::string buffer_;
  ToolCallStream block_;  // kToolCalls: buffer_ holds the block from its start
  bool truncated_ = false;
  std::string error_;
};

}  // namespace megamoe::text
