#include "runtime/logit_adjust.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace megamoe {
namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("logit adjustment: " + what);
}

}  // namespace

bool LogitAdjustParams::active() const {
  return presence_penalty != 0.0 || frequency_penalty != 0.0 || repetition_penalty != 1.0 || !logit_bias.empty() ||
         (min_tokens > 0 && !min_tokens_ids.empty()) || min_p > 0.0;
}

LogitAdjuster::LogitAdjuster(const LogitAdjustParams& params, std::span<const int32_t> prompt, double temperature)
    : params_(params), temperature_(temperature) {
  check(params.presence_penalty >= -2.0 && params.presence_penalty <= 2.0, "presence_penalty must be in [-2, 2]");
  check(params.frequency_penalty >= -2.0 && params.frequency_penalty <= 2.0, "frequency_penalty must be in [-2, 2]");
  check(params.repetition_penalty > 0.0 && params.repetition_penalty <= 10.0, "repetition_penalty must be in (0, 10]");
  std::unordered_set<int32_t> biased;
  for (const auto& [id, bias] : params.logit_bias) {
    check(id >= 0, "logit_bias id " + std::to_string(id) + " is negative");
    check(std::isfinite(bias) && bias >= -100.0f && bias <= 100.0f,
          "logit_bias of id " + std::to_string(id) + " must be in [-100, 100]");
    check(biased.insert(id).second, "logit_bias lists id " + std::to_string(id) + " twice");
  }
  check(params.min_tokens >= 0, "min_tokens must be >= 0");
  for (const int32_t id : params.min_tokens_ids) {
    check(id >= 0, "min_tokens id " + std::to_string(id) + " is negative");
  }
  check(params.min_p >= 0.0 && params.min_p <= 1.0, "min_p must be in [0, 1]");
  check(std::isfinite(temperature) && temperature >= 0.0, "the temperature must be finite and >= 0");
  if (params.repetition_penalty != 1.0) seen_.insert(prompt.begin(), prompt.end());
}

void LogitAdjuster::apply(std::span<float> logits) const {
  const auto n = static_cast<int64_t>(logits.size());
  const auto r = static_cast<float>(params_.repetition_penalty);
  if (r != 1.0f) {
    for (const int32_t id : seen_) {
      if (id >= n) continue;  // a prompt id the row lacks cannot be sampled anyway
      float& v = logits[static_cast<size_t>(id)];
      v = v > 0.0f ? v / r : v * r;
    }
  }
  if (params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0) {
    for (const auto& [id, count] : generated_) {
      if (id >= n) continue;
      logits[static_cast<size_t>(id)] -=
          static_cast<float>(params_.presence_penalty + static_cast<double>(count) * params_.frequency_penalty);
    }
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id >= n) {
      throw std::invalid_argument("logit adjustment: logit_bias id " + std::to_string(id) +
                                  " is past the vocabulary (" + std::to_string(n) + " ids)");
    }
    logits[static_cast<size_t>(id)] += bias;
  }
  constexpr float kDropped = std::numeric_limits<float>::lowest();
  if (generated_total_ < params_.min_tokens) {
    for (const int32_t id : params_.min_tokens_ids) {
      if (id < n) logits[static_cast<size_t>(id)] = kDropped;
    }
  }
  if (params_.min_p > 0.0 && temperature_ > 0.0 && n > 0) {
    const double threshold = *std::max_element(logits.begin(), logits.end()) + temperature_ * std::log(params_.min_p);
    for (float& v : logits) {
      if (v < threshold) v = kDropped;
    }
  }
}

void LogitAdjuster::record(int32_t id) {
  ++generated_total_;
  ++generated_[id];
  if (params_.repetition_penalty != 1.0) seen_.insert(id);
}

}  // namespace megamoe
