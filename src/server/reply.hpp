// Replies in each API's shape: a whole JSON reply, or the server-sent events
// of a streamed one (OpenAI chunks ending in `data: [DONE]`, or Anthropic's
// message_start ... message_stop events).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "server/generation.hpp"

namespace megamoe::server {

enum class Api { kChat, kCompletion, kMessages };

struct ReplyInfo {
  Api api = Api::kChat;
  std::string id;       // chatcmpl-..., cmpl-..., msg_...
  std::string model;    // the served model name
  int64_t created = 0;  // unix seconds
  bool include_usage = false;
  bool logprobs = false;
  int64_t prompt_tokens = 0;
  int64_t n = 1;  // choices (OpenAI; always 1 for Anthropic)
};

class ReplyFormat {
 public:
  virtual ~ReplyFormat() = default;
  virtual std::string stream_start() = 0;                                    // events before any text
  virtual std::string stream_batch(const Batch& batch, int64_t choice) = 0;  // events for a choice's new text
  // A choice's own last events, as soon as it ends ("" where the API has none).
  virtual std::string stream_choice_end(const Generation& g, int64_t choice) = 0;
  virtual std::string stream_end(const Choices& choices) = 0;  // the last events, once every choice ended
  virtual std::string stream_error(const std::string& message) = 0;
  virtual nlohmann::ordered_json whole(const Choices& choices) = 0;  // the non-streamed reply
};

std::unique_ptr<ReplyFormat> make_reply_format(const ReplyInfo& info);

// The error body of an API: OpenAI's {"error": {message, type, param, code}}
// or Anthropic's {"type": "error", "error": {type, message}}.
nlohmann::ordered_json error_body(Api api, int status, const std::string& type, const std::string& message,
                                  const std::string& param, const std::string& code);

}  // namespace megamoe::server
