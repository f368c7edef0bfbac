#include "server/metrics.hpp"

#include <algorithm>
#include <cstdio>

namespace megamoe::server {
namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

void line(std::string& out, const std::string& name, const std::string& type, const std::string& help,
          const std::string& value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + value + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mu_);
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft({0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      tpot({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}),
      e2e({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}) {}

void Metrics::count_request(const std::string& finish_reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++finished_[finish_reason];
}

void Metrics::count_reply(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++replies_[status];
}

std::string Metrics::render() const {
  std::string out;
  line(out, "megamoe_requests_running", "gauge", "Requests holding a state slot.", std::to_string(requests_running.load()));
  line(out, "megamoe_requests_waiting", "gauge", "Requests queued for a state slot.",
       std::to_string(requests_waiting.load()));
  line(out, "megamoe_state_slots_in_use", "gauge", "Sequence state slots in use.", std::to_string(slots_in_use.load()));
  line(out, "megamoe_state_slots_total", "gauge", "Sequence state slots (--max-batch).", std::to_string(slots_total));
  line(out, "megamoe_prompt_tokens_total", "counter", "Prompt tokens prefilled.", std::to_string(prompt_tokens.load()));
  line(out, "megamoe_generation_tokens_total", "counter", "Tokens generated.",
       std::to_string(generation_tokens.load()));
  line(out, "megamoe_engine_steps_total", "counter", "Batched engine steps run.", std::to_string(steps.load()));
  line(out, "megamoe_engine_step_errors_total", "counter", "Engine steps that failed.",
       std::to_string(step_errors.load()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    out += "# HELP megamoe_requests_finished_total Generation requests ended, by finish reason.\n"
           "# TYPE megamoe_requests_finished_total counter\n";
    for (const auto& [reason, n] : finished_) {
      out += "megamoe_requests_finished_total{finish_reason=\"" + reason + "\"} " + std::to_string(n) + "\n";
    }
    out += "# HELP megamoe_http_replies_total HTTP replies, by status.\n# TYPE megamoe_http_replies_total counter\n";
    for (const auto& [status, n] : replies_) {
      out += "megamoe_http_replies_total{status=\"" + std::to_string(status) + "\"} " + std::to_string(n) + "\n";
    }
  }
  ttft.render(out, "megamoe_time_to_first_token_seconds", "Time from arrival to the first generated token.");
  tpot.render(out, "megamoe_time_per_output_token_seconds", "Mean time per generated token after the first.");
  e2e.render(out, "megamoe_e2e_request_latency_seconds", "Time from arrival to the end of generation.");
  return out;
}

}  // namespace megamoe::server
