// Server counters and latency histograms, rendered as Prometheus text
// (GET /metrics). Updated from the scheduler and the HTTP threads.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace megamoe::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines of `name`.
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bound, plus +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

struct Metrics {
  Metrics();
  std::atomic<int64_t> requests_running{0};  // holding a state slot
  std::atomic<int64_t> requests_waiting{0};  // admitted, waiting for a slot
  std::atomic<int64_t> slots_in_use{0};
  int64_t slots_total = 0;
  std::atomic<uint64_t> prompt_tokens{0};
  std::atomic<uint64_t> generation_tokens{0};
  std::atomic<uint64_t> steps{0};
  std::atomic<uint64_t> step_errors{0};
  Histogram ttft, tpot, e2e;

  // Finished requests by finish reason (stop, length, tool_calls, cancelled, error)
  // and HTTP replies by status.
  void count_request(const std::string& finish_reason);
  void count_reply(int status);
  std::string render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> finished_;
  std::map<int, uint64_t> replies_;
};

}  // namespace megamoe::server
