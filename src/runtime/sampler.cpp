#include "runtime/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.hpp"

namespace megamoe {

namespace {

void validate(const SamplingParams& params) {
  MEGAMOE_CHECK(std::isfinite(params.temperature), "sampling: temperature must be finite");
  MEGAMOE_CHECK(params.top_k >= 0, "sampling: top_k must be >= 0, got ", params.top_k);
  MEGAMOE_CHECK(params.top_p > 0.0 && params.top_p <= 1.0, "sampling: top_p must be in (0, 1], got ", params.top_p);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { validate(params); }

int32_t Sampler::sample(std::span<const float> logits) {
  MEGAMOE_CHECK(!logits.empty(), "sampling: empty logits");
  return choose(logits, params_, params_.temperature > 0.0 ? next_uniform() : 0.0);
}

double Sampler::next_uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::choose(std::span<const float> logits, const SamplingParams& params, double u01) {
  MEGAMOE_CHECK(!logits.empty(), "sampling: empty logits");
  validate(params);
  if (params.temperature <= 0.0) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates by descending logit (ties: lower id first).
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = order.size();
  if (params.top_k > 0) keep = std::min(keep, static_cast<size_t>(params.top_k));
  std::vector<double> probs(keep);
  const double mx = logits[order[0]];
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += (probs[i] = std::exp((logits[order[i]] - mx) / params.temperature));
  // Nucleus: smallest prefix with cumulative probability >= top_p.
  double cumulative = 0.0;
  size_t nucleus = keep;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs[i] / total;
    if (cumulative >= params.top_p) {
      nucleus = i + 1;
      break;
    }
  }
  double mass = 0.0;
  for (size_t i = 0; i < nucleus; ++i) mass += probs[i];
  const double u = u01 * mass;  // uniform in [0, mass)
  double acc = 0.0;
  for (size_t i = 0; i < nucleus; ++i) {
    acc += probs[i];
    if (u < acc) return order[i];
  }
  return order[nucleus - 1];
}

}  // namespace megamoe
