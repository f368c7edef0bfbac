// Continuous batching. One thread owns the engine; every step runs one token
// of every sequence that is decoding plus prompt chunks of sequences that are
// prefilling (at most `prefill_chunk` prompt tokens per step), then samples
// the next token of each sequence whose prompt is done.
//
// Admission: at most max_batch sequences hold a state slot; up to max_queue
// more wait for one; past that submit() throws a 503. A request of n choices
// is n sequences, queued all or none. A finished or cancelled sequence frees
// its slot at once. A cancelled request (client gone) is
// dropped at the start of the next step.
//
// Independence from the batch: a request's prompt is cut into chunks at fixed
// offsets (multiples of prefill_chunk) whatever else is running, and it
// samples from its own seeded Sampler, so its output for a seed (or greedy)
// does not depend on what else is in the batch.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/logit_adjust.hpp"
#include "runtime/sampler.hpp"
#include "server/engine.hpp"
#include "server/metrics.hpp"

namespace megamoe::server {

using Clock = std::chrono::steady_clock;

struct TokenOut {
  int32_t id = 0;
  float logprob = 0.0f;                           // log-softmax of the raw logits (with want_logprobs)
  std::vector<std::pair<int32_t, float>> top;     // the top_logprobs most likely (id, logprob)
};

enum class EndReason { kLength, kStop, kCancelled, kError, kShutdown };
const char* end_reason_name(EndReason r);

struct GenerationParams {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  LogitAdjustParams adjust;  // penalties and logit_bias, applied before the sampler (runtime/logit_adjust.hpp)
  int64_t max_tokens = 16;
  bool want_logprobs = false;
  int64_t top_logprobs = 0;  // 0..20
};

// One request as the scheduler sees it. The callbacks run on the scheduler
// thread and must be quick; on_token returns false to stop (EOS or a stop
// string, found by the caller's text processing). on_end is called exactly once.
class Job {
 public:
  GenerationParams params;
  std::function<bool(const TokenOut&)> on_token;
  std::function<void(EndReason, const std::string& error)> on_end;

  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

  // Timing, final once on_end ran.
  Clock::time_point arrival = Clock::now();
  std::optional<Clock::time_point> first_token;
  Clock::time_point end;
  int64_t generated = 0;

 private:
  friend class Scheduler;
  std::atomic<bool> cancelled_{false};
  // Scheduler-thread state.
  std::unique_ptr<EngineSequence> sequence_;
  std::optional<Sampler> sampler_;
  std::optional<LogitAdjuster> adjuster_;  // only when params.adjust is active
  int64_t prefilled_ = 0;
  int32_t last_token_ = 0;
};

struct SchedulerOptions {
  int64_t max_batch = 4;
  int64_t max_queue = 64;
  int64_t prefill_chunk = 512;
};

class Scheduler {
 public:
  Scheduler(StepEngine& engine, SchedulerOptions options, Metrics& metrics);
  ~Scheduler();  // stop()

  // Queues the jobs of one request (its n choices, validated by the caller)
  // all or none; throws ApiError 503 when the queue has no room for all of
  // them or the scheduler is stopping, 400 for limits it checks (empty
  // prompt, prompt + max_tokens past the engine's context, more jobs than
  // max_batch + max_queue, which could never all be admitted).
  void submit(std::span<const std::shared_ptr<Job>> jobs);
  // Wakes the thread (after a cancel()).
  void poke();
  // Ends every queued and running job (EndReason::kShutdown) and joins the thread.
  void stop();

  bool idle() const;          // nothing running or waiting
  bool healthy() const;       // thread alive and the last step did not fail
  const SchedulerOptions& options() const { return options_; }

 private:
  void run();
  void step_once();
  void end_job(Job& job, EndReason reason, const std::string& error = {});

  StepEngine& engine_;
  SchedulerOptions options_;
  Metrics& metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> waiting_;
  bool stopping_ = false;
  std::atomic<int64_t> running_count_{0};
  std::atomic<bool> last_step_failed_{false};
  std::atomic<bool> alive_{false};

  std::vector<std::shared_ptr<Job>> active_;  // scheduler thread only
  std::thread thread_;
};

}  // namespace megamoe::server
