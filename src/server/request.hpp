// Request bodies of the three generation endpoints (OpenAI chat completions,
// OpenAI completions, Anthropic messages) checked and turned into one shape:
// prompt ids, sampling, limits and text options. Every problem is an
// ApiError 400 naming the field; a parameter that would change the output
// but is not supported (best_of > 1, constrained output ...) is a 400
// naming it rather than being ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/text_generation.hpp"
#include "server/scheduler.hpp"
#include "text/tokenizer.hpp"

namespace megamoe::server {

struct ApiContext {
  const text::Tokenizer& tokenizer;
  int64_t bos_id = -1;  // < 0: none
  int64_t eos_id = -1;  // < 0: none
  int64_t model_vocab = 0;
  int64_t max_context = 0;
};

// The most choices (n) one OpenAI request may ask for.
constexpr int64_t kMaxChoices = 16;

struct ParsedRequest {
  GenerationParams gen;    // choice 0's; choice i samples with seed + i (choice_params)
  int64_t n = 1;           // choices
  TextStreamOptions text;  // chat, thinking, eos ids, stop strings
  bool stream = false;
  bool include_usage = false;
  bool has_tools = false;
  std::string model;  // as the client named it ("" if absent)
};

// Choice i of a request: its sampler stream is seed + i (wrapping), so each
// choice is distinct and reproducible for a given seed.
GenerationParams choice_params(const GenerationParams& gen, int64_t i);

// The body as JSON: an object, else a 400 saying what is wrong (and where).
nlohmann::ordered_json parse_body(const std::string& body);

ParsedRequest parse_chat_request(const nlohmann::ordered_json& body, const ApiContext& ctx);
ParsedRequest parse_completion_request(const nlohmann::ordered_json& body, const ApiContext& ctx);
// count_tokens: the same body without the required max_tokens (POST /v1/messages/count_tokens).
ParsedRequest parse_messages_request(const nlohmann::ordered_json& body, const ApiContext& ctx,
                                     bool count_tokens = false);

}  // namespace megamoe::server
