#include "server/scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <exception>

#include "server/api_error.hpp"

namespace megamoe::server {

const char* end_reason_name(EndReason r) {
  switch (r) {
    case EndReason::kLength: return "length";
    case EndReason::kStop: return "stop";
    case EndReason::kCancelled: return "cancelled";
    case EndReason::kError: return "error";
    case EndReason::kShutdown: return "shutdown";
  }
  return "?";
}

namespace {

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The chosen token's log-probability and the top-n (id, logprob), from the raw logits.
void fill_logprobs(std::span<const float> logits, int64_t top_n, TokenOut& out) {
  float max = -INFINITY;
  for (const float v : logits) max = std::max(max, v);
  double sum = 0.0;
  for (const float v : logits) sum += std::exp(static_cast<double>(v) - max);
  const double log_z = max + std::log(sum);
  out.logprob = static_cast<float>(logits[static_cast<std::size_t>(out.id)] - log_z);
  if (top_n <= 0) return;
  std::vector<int32_t> order(logits.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  const auto n = static_cast<std::ptrdiff_t>(std::min<std::size_t>(static_cast<std::size_t>(top_n), order.size()));
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    const float la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
    return la != lb ? la > lb : a < b;
  });
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    out.top.emplace_back(order[static_cast<std::size_t>(i)],
                         static_cast<float>(logits[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] - log_z));
  }
}

}  // namespace

Scheduler::Scheduler(StepEngine& engine, SchedulerOptions options, Metrics& metrics)
    : engine_(engine), options_(options), metrics_(metrics) {
  MEGAMOE_CHECK(options_.max_batch >= 1, "scheduler: max_batch must be >= 1, got ", options_.max_batch);
  MEGAMOE_CHECK(options_.max_batch <= engine_.slots(), "scheduler: max_batch ", options_.max_batch,
                " exceeds the engine's ", engine_.slots(), " state slots");
  MEGAMOE_CHECK(options_.max_queue >= 0, "scheduler: max_queue must be >= 0, got ", options_.max_queue);
  MEGAMOE_CHECK(options_.prefill_chunk >= 1, "scheduler: prefill_chunk must be >= 1, got ", options_.prefill_chunk);
  metrics_.slots_total = options_.max_batch;
  alive_ = true;
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::submit(std::span<const std::shared_ptr<Job>> jobs) {
  const auto count = static_cast<int64_t>(jobs.size());
  MEGAMOE_CHECK(count >= 1, "scheduler: nothing to submit");
  if (count > options_.max_batch + options_.max_queue) {
    MEGAMOE_BAD_REQUEST("n", "n = ", count, " choices can never be admitted: the server runs at most ",
                        options_.max_batch + options_.max_queue, " sequences at once (--max-batch ",
                        options_.max_batch, " + --max-queue ", options_.max_queue, ")");
  }
  for (const std::shared_ptr<Job>& job : jobs) {
    MEGAMOE_CHECK(job && job->on_token && job->on_end, "scheduler: a job needs on_token and on_end");
    const auto prompt = static_cast<int64_t>(job->params.prompt.size());
    if (prompt == 0) MEGAMOE_BAD_REQUEST("prompt", "the prompt is empty");
    if (job->params.max_tokens < 1) MEGAMOE_BAD_REQUEST("max_tokens", "max_tokens must be >= 1");
    const int64_t limit = engine_.max_context();
    if (prompt + job->params.max_tokens > limit) {
      MEGAMOE_API_ERROR(400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                        "this model's maximum context length is ", limit, " tokens; the request has ", prompt,
                        " prompt tokens and asks for up to ", job->params.max_tokens, " more (",
                        prompt + job->params.max_tokens, " in all)");
    }
    for (const int32_t id : job->params.prompt) {
      if (id < 0 || id >= engine_.vocab_size()) {
        MEGAMOE_BAD_REQUEST("prompt", "token id ", id, " is outside the vocabulary (", engine_.vocab_size(),
                            " tokens)");
      }
    }
    job->sampler_.emplace(job->params.sampling);  // validates the sampling parameters
    for (const auto& [id, bias] : job->params.adjust.logit_bias) {
      if (id >= engine_.vocab_size()) {
        MEGAMOE_BAD_REQUEST("logit_bias", "logit_bias names token id ", id, ", outside the vocabulary (",
                            engine_.vocab_size(), " tokens)");
      }
    }
    if (job->params.adjust.active()) {  // the constructor validates
      job->adjuster_.emplace(job->params.adjust, job->params.prompt, job->params.sampling.temperature);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) MEGAMOE_API_ERROR(503, "server_error", "", "shutting_down", "the server is shutting down");
    const int64_t taken = running_count_.load() + static_cast<int64_t>(waiting_.size());
    if (taken + count > options_.max_batch + options_.max_queue) {
      MEGAMOE_API_ERROR(503, "server_error", "", "queue_full", "the server is at capacity (", options_.max_batch,
                        " running, ", waiting_.size(), " waiting, --max-queue ", options_.max_queue,
                        ", this request needs ", count, " sequences); retry later");
    }
    waiting_.insert(waiting_.end(), jobs.begin(), jobs.end());
    metrics_.requests_waiting = static_cast<int64_t>(waiting_.size());
  }
  cv_.notify_one();
}

void Scheduler::poke() { cv_.notify_one(); }

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

bool Scheduler::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.empty() && running_count_.load() == 0;
}

bool Scheduler::healthy() const { return alive_.load() && !last_step_failed_.load(); }

void Scheduler::end_job(Job& job, EndReason reason, const std::string& error) {
  job.end = Clock::now();
  if (job.sequence_) {
    job.sequence_.reset();  // the slot is free from here on
    --metrics_.slots_in_use;
  }
  metrics_.e2e.observe(seconds(job.end - job.arrival));
  if (job.first_token && job.generated > 1) {
    metrics_.tpot.observe(seconds(job.end - *job.first_token) / static_cast<double>(job.generated - 1));
  }
  try {
    job.on_end(reason, error);
  } catch (...) {
  }
}

void Scheduler::run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !active_.empty(); });
      if (stopping_) break;
    }
    step_once();
  }
  // Shutdown: everything still queued or running ends now.
  std::deque<std::shared_ptr<Job>> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(waiting_);
    metrics_.requests_waiting = 0;
  }
  for (auto& job : active_) end_job(*job, EndReason::kShutdown);
  active_.clear();
  running_count_ = 0;
  metrics_.requests_running = 0;
  for (auto& job : waiting) end_job(*job, EndReason::kShutdown);
  alive_ = false;
}

void Scheduler::step_once() {
  // Drop cancelled requests, then admit waiting ones into free slots.
  for (auto it = active_.begin(); it != active_.end();) {
    if ((*it)->cancelled()) {
      end_job(**it, EndReason::kCancelled);
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::shared_ptr<Job>> cancelled_waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if ((*it)->cancelled()) {
        cancelled_waiting.push_back(*it);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    while (static_cast<int64_t>(active_.size()) < options_.max_batch && !waiting_.empty()) {
      std::shared_ptr<Job> job = std::move(waiting_.front());
      waiting_.pop_front();
      active_.push_back(std::move(job));
    }
    metrics_.requests_waiting = static_cast<int64_t>(waiting_.size());
  }
  for (auto& job : cancelled_waiting) end_job(*job, EndReason::kCancelled);
  for (auto it = active_.begin(); it != active_.end();) {
    Job& job = **it;
    if (!job.sequence_) {
      try {
        job.sequence_ = engine_.new_sequence();
        ++metrics_.slots_in_use;
      } catch (const std::exception& e) {
        end_job(job, EndReason::kError, std::string("no state slot: ") + e.what());
        it = active_.erase(it);
        continue;
      }
    }
    ++it;
  }
  running_count_ = static_cast<int64_t>(active_.size());
  metrics_.requests_running = running_count_.load();
  if (active_.empty()) return;

  // The step: every decode, then prompt chunks in arrival order within the budget.
  std::vector<StepInput> inputs;
  std::vector<Job*> jobs;
  std::vector<bool> samples;  // this input ends the prompt or is a decode: sample after it
  for (auto& p : active_) {
    Job& job = *p;
    if (job.prefilled_ == static_cast<int64_t>(job.params.prompt.size())) {
      inputs.push_back(StepInput{std::span<const int32_t>(&job.last_token_, 1), job.sequence_.get()});
      jobs.push_back(&job);
      samples.push_back(true);
    }
  }
  int64_t budget = options_.prefill_chunk;
  for (auto& p : active_) {
    Job& job = *p;
    const auto prompt = static_cast<int64_t>(job.params.prompt.size());
    if (job.prefilled_ == prompt) continue;
    // The chunk at a fixed offset: up to the next multiple of prefill_chunk.
    const int64_t chunk_end = std::min(prompt, (job.prefilled_ / options_.prefill_chunk + 1) * options_.prefill_chunk);
    const int64_t n = chunk_end - job.prefilled_;
    if (n > budget && budget < options_.prefill_chunk) break;  // the first chunk always runs
    inputs.push_back(StepInput{std::span<const int32_t>(job.params.prompt.data() + job.prefilled_,
                                                        static_cast<std::size_t>(n)),
                               job.sequence_.get()});
    jobs.push_back(&job);
    samples.push_back(chunk_end == prompt);
    budget -= n;
    if (budget <= 0) break;
  }

  std::vector<std::vector<float>> logits;
  try {
    logits = engine_.step(inputs);
    MEGAMOE_CHECK(logits.size() == inputs.size(), "engine step returned ", logits.size(), " rows for ",
                  inputs.size(), " sequences");
    ++metrics_.steps;
    last_step_failed_ = false;
  } catch (const std::exception& e) {
    ++metrics_.step_errors;
    last_step_failed_ = true;
    const std::string error = std::string("engine step failed: ") + e.what();
    for (Job* job : jobs) job->cancel();  // marked, ended below
    for (auto it = active_.begin(); it != active_.end();) {
      if (std::find(jobs.begin(), jobs.end(), it->get()) != jobs.end()) {
        end_job(**it, EndReason::kError, error);
        it = active_.erase(it);
      } else {
        ++it;
      }
    }
    running_count_ = static_cast<int64_t>(active_.size());
    metrics_.requests_running = running_count_.load();
    return;
  }

  std::vector<Job*> finished;
  std::vector<EndReason> reasons;
  std::vector<std::string> errors;
  std::vector<float> adjusted;  // a row with a job's penalties and biases
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    Job& job = *jobs[i];
    const bool prefill = job.prefilled_ < static_cast<int64_t>(job.params.prompt.size());
    if (prefill) {
      job.prefilled_ += static_cast<int64_t>(inputs[i].ids.size());
      metrics_.prompt_tokens += inputs[i].ids.size();
    }
    if (!samples[i] || job.cancelled()) continue;
    const std::vector<float>& row = logits[i];
    TokenOut out;
    try {
      if (job.adjuster_) {
        adjusted.assign(row.begin(), row.end());
        job.adjuster_->apply(adjusted);
        out.id = job.sampler_->sample(adjusted);
        job.adjuster_->record(out.id);
      } else {
        out.id = job.sampler_->sample(row);
      }
      if (job.params.want_logprobs) fill_logprobs(row, job.params.top_logprobs, out);  // the model's, unadjusted
    } catch (const std::exception& e) {
      finished.push_back(&job);
      reasons.push_back(EndReason::kError);
      errors.push_back(e.what());
      continue;
    }
    if (!job.first_token) {
      job.first_token = Clock::now();
      metrics_.ttft.observe(seconds(*job.first_token - job.arrival));
    }
    ++job.generated;
    ++metrics_.generation_tokens;
    job.last_token_ = out.id;
    bool more = false;
    std::string error;
    try {
      more = job.on_token(out);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty() || !more || job.generated >= job.params.max_tokens) {
      finished.push_back(&job);
      reasons.push_back(!error.empty() ? EndReason::kError : !more ? EndReason::kStop : EndReason::kLength);
      errors.push_back(error);
    }
  }
  for (std::size_t i = 0; i < finished.size(); ++i) {
    Job* job = finished[i];
    const auto it = std::find_if(active_.begin(), active_.end(), [&](const auto& p) { return p.get() == job; });
    std::shared_ptr<Job> keep = *it;
    active_.erase(it);
    end_job(*keep, reasons[i], errors[i]);
  }
  running_count_ = static_cast<int64_t>(active_.size());
  metrics_.requests_running = running_count_.load();
}

}  // namespace megamoe::server
