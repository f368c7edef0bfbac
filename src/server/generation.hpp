// One request's output on the HTTP side: the scheduler's tokens go through
// the TextStreamer (UTF-8, stop strings, EOS, and in chat mode the output
// parser) into text deltas that the HTTP thread takes in order. The token
// callbacks run on the scheduler thread; everything is behind one mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/text_generation.hpp"
#include "server/scheduler.hpp"
#include "text/tokenizer.hpp"

namespace megamoe::server {

// A tool call streams as kToolCallBegin, kToolCallArguments fragments, then
// kToolCallEnd (the whole call) or kToolCallAbort (its block was malformed or
// cut off; fragments already out stay out). Only text and kToolCallEnd make
// the non-streamed reply (all_deltas).
struct Delta {
  enum class Kind { kReasoning, kContent, kToolCallBegin, kToolCallArguments, kToolCallEnd, kToolCallAbort };
  Kind kind;
  std::string text;        // kReasoning / kContent / kToolCallArguments
  text::ToolCall call;     // kToolCallBegin: the name; kToolCallEnd: the whole call
  int64_t tool_index = 0;  // tool-call kinds: 0, 1, ... in the order calls begin
};

struct TokenLogprob {
  int32_t id = 0;
  std::string token;  // the token's text (U+FFFD for a partial character)
  std::string bytes;  // its raw bytes
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;  // (top entries have no top of their own)
};

// What arrived since the last take().
struct Batch {
  std::vector<Delta> deltas;  // consecutive text of one kind (or one call's arguments) merged
  std::vector<TokenLogprob> logprobs;
  bool ended = false;
};

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  // The job's callbacks hold the generation weakly, so a reply that is
  // dropped (client gone) never keeps it alive or dangling.
  static std::shared_ptr<Generation> create(const text::Tokenizer& tokenizer, TextStreamOptions options,
                                            GenerationParams params);
  Generation(const text::Tokenizer& tokenizer, TextStreamOptions options, GenerationParams params);

  const std::shared_ptr<Job>& job() const { return job_; }

  // Waits up to `timeout` for news (returns at once when there is some).
  Batch take(std::chrono::milliseconds timeout);
  void cancel();

  // Valid once ended (a take() returned ended).
  EndReason reason() const { return reason_; }
  const std::string& error() const { return error_; }
  int64_t tool_calls() const { return tool_calls_; }  // complete ones
  std::string tool_call_error() const;  // a malformed tool-call block's, if any
  std::string matched_stop() const;  // "" unless a stop string ended it
  bool truncated() const { return truncated_; }
  int64_t completion_tokens() const { return job_->generated; }
  int64_t prompt_tokens() const { return static_cast<int64_t>(job_->params.prompt.size()); }
  double ttft_seconds() const;
  // Text and whole tool calls, for non-streamed replies (merged per kind in arrival order).
  const std::vector<Delta>& all_deltas() const { return all_; }
  const std::vector<TokenLogprob>& all_logprobs() const { return all_logprobs_; }
  // OpenAI's finish_reason: stop, length, tool_calls.
  std::string finish_reason() const;

 private:
  bool on_token(const TokenOut& t);
  void on_end(EndReason reason, const std::string& error);
  void add(Delta d);
  void on_tool_event(const text::OutputEvent& e);
  TokenLogprob logprob_entry(int32_t id, float logprob) const;

  const text::Tokenizer& tokenizer_;
  std::vector<std::string> stop_strings_;
  std::shared_ptr<Job> job_;
  std::unique_ptr<TextStreamer> streamer_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Batch pending_;
  std::vector<Delta> all_;
  std::vector<TokenLogprob> all_logprobs_;
  bool ended_ = false;
  EndReason reason_ = EndReason::kLength;
  std::string error_;
  int64_t tool_calls_ = 0;
  int64_t tool_calls_begun_ = 0;
  std::string tool_call_error_;
  bool truncated_ = false;
  std::string matched_stop_;
};

// The choices of one request: entry i is choice i (OpenAI's n; one for Anthropic).
using Choices = std::vector<std::shared_ptr<Generation>>;

}  // namespace megamoe::server
