// DeepSeek-V4 chat encoding: messages -> prompt text, following the official
// rules of DeepSeek's `encoding_dsv4.py` (byte-identical; tests/text goldens).
//
// Messages are OpenAI-style objects: role system | developer | user |
// assistant | tool | latest_reminder; "content" (string; tool content may be
// a list of {"type": "text", ...} blocks); assistant "reasoning_content" and
// "tool_calls" ([{"id", "type", "function": {"name", "arguments"}}]); tool
// "tool_call_id"; "tools" and "response_format" on system/developer messages
// (see attach_tools); optional "wo_eos" (assistant prefill without EOS) and
// "task". Tool results are merged into user turns as <tool_result> blocks.
//
// Note (official behaviour, kept): the generation prompt "<｜Assistant｜>" +
// "<think>" / "</think>" is appended only after a final user/developer turn;
// a conversation ending in a system or assistant turn gets none.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace megamoe::text {

struct ChatOptions {
  bool thinking = false;         // thinking_mode "thinking" (else "chat")
  bool drop_thinking = true;     // drop reasoning of turns before the last user turn
  bool add_bos = true;           // start with <｜begin▁of▁sentence｜>
  std::string reasoning_effort;  // "", "high" or "max" ("max" adds a prefix in thinking mode)
};

// The prompt text; tokenize it with Tokenizer::encode (special-token strings
// in it are recognised there). Throws megamoe::Error naming the message index
// and field on malformed input.
std::string encode_chat(const nlohmann::ordered_json& messages, const ChatOptions& options = {});

// Returns `messages` with the OpenAI-style `tools` list attached where the
// encoding expects it: on the first system message, or a new empty system
// message in front when there is none.
nlohmann::ordered_json attach_tools(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools);

namespace chat_tokens {
inline constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEos = "<｜end▁of▁sentence｜>";
inline constexpr const char* kUser = "<｜User｜>";
inline constexpr const char* kAssistant = "<｜Assistant｜>";
inline constexpr const char* kLatestReminder = "<｜latest_reminder｜>";
inline constexpr const char* kThinkStart = "<think>";
inline constexpr const char* kThinkEnd = "</think>";
inline constexpr const char* kDsml = "｜DSML｜";
}  // namespace chat_tokens

}  // namespace megamoe::text
