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
#include <vector>

#include <nlohmann/json.hpp>

#include "text/tokenizer.hpp"

namespace megamoe::text {

struct ChatOptions {
  bool thinking = false;         // thinking_mode "thinking" (else "chat")
  bool drop_thinking = true;     // drop reasoning of turns before the last user turn
  bool add_bos = true;           // start with <｜begin▁of▁sentence｜>
  std::string reasoning_effort;  // "", "high" or "max" ("max" adds a prefix in thinking mode)
  // encode_chat_ids: let special-token text inside message content become
  // control tokens, as the official pipeline (encode_messages, then
  // tokenizer.encode of the whole string) does. Off by default: content is text.
  bool special_tokens_in_content = false;
};

// The prompt text and where in it the text taken from the messages lies
// (content, reasoning, tool schemas, call names and arguments, tool results):
// everything else is the template's markup.
struct ChatPrompt {
  std::string text;
  std::vector<TextRange> content;  // sorted, disjoint
};

// The prompt text, byte-identical to the official encoder. Throws megamoe::Error
// naming the message index and field on malformed input.
ChatPrompt render_chat(const nlohmann::ordered_json& messages, const ChatOptions& options = {});
std::string encode_chat(const nlohmann::ordered_json& messages, const ChatOptions& options = {});

// The prompt's token ids. Special-token text inside the messages' content is
// encoded as plain text (a user cannot write role markers into the prompt),
// unless options.special_tokens_in_content; where the content holds no such
// text the ids equal tokenizer.encode(encode_chat(...)), i.e. the official
// encoder's.
std::vector<TokenId> encode_chat_ids(const Tokenizer& tokenizer, const nlohmann::ordered_json& messages,
                                     const ChatOptions& options = {});

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
