#include "runtime/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu/sample.hpp"
#include "core/error.hpp"

namespace megamoe {

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  MEGAMOE_CHECK(std::isfinite(params.temperature), "sampling: temperature must be finite");
  MEGAMOE_CHECK(params.top_k >= 0, "sampling: top_k must be >= 0, got ", params.top_k);
  MEGAMOE_CHECK(params.top_p > 0.0 && params.top_p <= 1.0, "sampling: top_p must be in (0, 1], got ", params.top_p);
}

double Sampler::next_uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::sample(std::span<const float> logits) {
  // The draw is taken only when sampling, so greedy rows leave the stream untouched.
  const double u01 = params_.temperature > 0.0 ? next_uniform() : 0.0;
  return cpu::choose_token(logits, params_.temperature, params_.top_k, params_.top_p, u01);
}

}  // namespace megamoe
