// What the incremental output parser (ChatOutputParser) reports: text deltas
// of the reasoning and the answer, and each tool call as it is generated.
#pragma once

#include <string>

namespace megamoe::text {

struct ToolCall {
  std::string name;
  std::string arguments;  // a JSON object, as text
};

// A tool call arrives as kToolCallBegin (its name), kToolCallArguments
// fragments (their concatenation is the call's arguments text, byte for byte
// what parse_completion gives; never split inside a UTF-8 character or an
// escape), then kToolCallEnd (the whole call, for those who want it whole), or
// kToolCallAbort when the call can no longer complete: its block turned out
// malformed (the parser's error() says why) or the stream ended inside it
// (truncated()). Fragments already reported are not taken back.
struct OutputEvent {
  enum class Kind { kReasoning, kContent, kToolCallBegin, kToolCallArguments, kToolCallEnd, kToolCallAbort, kEnd };
  Kind kind;
  std::string text;    // kReasoning / kContent / kToolCallArguments: the delta
  ToolCall tool_call;  // kToolCallBegin: the name; kToolCallEnd: name and arguments
};

}  // namespace megamoe::text
