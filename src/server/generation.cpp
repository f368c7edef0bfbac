#include "server/generation.hpp"

namespace megamoe::server {

std::shared_ptr<Generation> Generation::create(const text::Tokenizer& tokenizer, TextStreamOptions options,
                                               GenerationParams params) {
  auto g = std::make_shared<Generation>(tokenizer, std::move(options), std::move(params));
  std::weak_ptr<Generation> weak = g;
  g->job_->on_token = [weak](const TokenOut& t) {
    const auto self = weak.lock();
    return self ? self->on_token(t) : false;
  };
  g->job_->on_end = [weak](EndReason reason, const std::string& error) {
    if (const auto self = weak.lock()) self->on_end(reason, error);
  };
  return g;
}

Generation::Generation(const text::Tokenizer& tokenizer, TextStreamOptions options, GenerationParams params)
    : tokenizer_(tokenizer), stop_strings_(options.stop_strings), job_(std::make_shared<Job>()) {
  job_->params = std::move(params);
  TextSinks sinks;
  sinks.answer = [this](std::string_view t) { add(Delta{Delta::Kind::kContent, std::string(t), {}, 0}); };
  sinks.reasoning = [this](std::string_view t) { add(Delta{Delta::Kind::kReasoning, std::string(t), {}, 0}); };
  sinks.tool_call = [this](const text::OutputEvent& e) { on_tool_event(e); };
  streamer_ = std::make_unique<TextStreamer>(tokenizer, std::move(options), std::move(sinks));
}

// Called with mu_ held (from the streamer's sinks).
void Generation::add(Delta d) {
  using Kind = Delta::Kind;
  const bool text = d.kind == Kind::kReasoning || d.kind == Kind::kContent || d.kind == Kind::kToolCallArguments;
  if (text && d.text.empty()) return;
  auto merge = [&](std::vector<Delta>& list) {
    if (text && !list.empty() && list.back().kind == d.kind && list.back().tool_index == d.tool_index) {
      list.back().text += d.text;
    } else {
      list.push_back(d);
    }
  };
  merge(pending_.deltas);
  if (d.kind == Kind::kReasoning || d.kind == Kind::kContent || d.kind == Kind::kToolCallEnd) merge(all_);
}

void Generation::on_tool_event(const text::OutputEvent& e) {
  using Kind = text::OutputEvent::Kind;
  switch (e.kind) {
    case Kind::kToolCallBegin:
      add(Delta{Delta::Kind::kToolCallBegin, {}, e.tool_call, tool_calls_begun_++});
      break;
    case Kind::kToolCallArguments:
      add(Delta{Delta::Kind::kToolCallArguments, e.text, {}, tool_calls_begun_ - 1});
      break;
    case Kind::kToolCallEnd:
      ++tool_calls_;
      add(Delta{Delta::Kind::kToolCallEnd, {}, e.tool_call, tool_calls_begun_ - 1});
      break;
    case Kind::kToolCallAbort:
      add(Delta{Delta::Kind::kToolCallAbort, {}, {}, tool_calls_begun_ - 1});
      break;
    default:
      break;
  }
}

TokenLogprob Generation::logprob_entry(int32_t id, float logprob) const {
  TokenLogprob e;
  e.id = id;
  e.logprob = logprob;
  if (id >= 0 && static_cast<std::size_t>(id) < tokenizer_.vocab_size()) {
    e.bytes = tokenizer_.token_bytes(id);
    e.token = tokenizer_.decode({id});
  }
  return e;
}

bool Generation::on_token(const TokenOut& t) {
  bool more;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (job_->params.want_logprobs) {
      TokenLogprob e = logprob_entry(t.id, t.logprob);
      for (const auto& [id, lp] : t.top) e.top.push_back(logprob_entry(id, lp));
      pending_.logprobs.push_back(e);
      all_logprobs_.push_back(std::move(e));
    }
    more = streamer_->push(t.id);
  }
  cv_.notify_all();
  return more;
}

void Generation::on_end(EndReason reason, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      streamer_->finish();
    } catch (const std::exception&) {
    }
    truncated_ = streamer_->truncated();
    tool_call_error_ = streamer_->parse_error();
    matched_stop_ = streamer_->matched_stop();
    reason_ = reason;
    error_ = error;
    ended_ = true;
    pending_.ended = true;
  }
  cv_.notify_all();
}

Batch Generation::take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return ended_ || !pending_.deltas.empty() || !pending_.logprobs.empty(); });
  Batch out = std::move(pending_);
  pending_ = Batch{};
  pending_.ended = ended_;
  out.ended = ended_;
  return out;
}

void Generation::cancel() { job_->cancel(); }

std::string Generation::matched_stop() const {
  std::lock_guard<std::mutex> lock(mu_);
  return matched_stop_;
}

std::string Generation::tool_call_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tool_call_error_;
}

double Generation::ttft_seconds() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!job_->first_token) return -1.0;
  return std::chrono::duration<double>(*job_->first_token - job_->arrival).count();
}

std::string Generation::finish_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (reason_ == EndReason::kLength) return "length";
  if (reason_ == EndReason::kStop) return tool_calls_ > 0 ? "tool_calls" : "stop";
  return end_reason_name(reason_);
}

}  // namespace megamoe::server
