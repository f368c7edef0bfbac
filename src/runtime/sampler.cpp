#include "runtime/sampler.hpp"

#include <cmath>

#include "backend/cpu/sample.hpp"
#include "core/error.hpp"

namespace megamoe {
namespace {

void validate(const SamplingParams& params) {
  MEGAMOE_CHECK(std::isfinite(params.temperature) && params.temperature >= 0.0,
                "sampling: temperature must be a finite number >= 0 (0 = greedy), got ", params.temperature);
  MEGAMOE_CHECK(params.top_k >= 0, "sampling: top_k must be >= 0, got ", params.top_k);
  MEGAMOE_CHECK(params.top_p > 0.0 && params.top_p <= 1.0, "sampling: top_p must be in (0, 1], got ", params.top_p);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { validate(params); }

int32_t Sampler::sample(std::span<const float> logits) {
  MEGAMOE_CHECK(!logits.empty(), "sampling: empty logits");
  // Never a token from non-finite logits (greedy argmax over NaN would say token 0 forever).
  for (size_t i = 0; i < logits.size(); ++i) {
    MEGAMOE_CHECK(std::isfinite(logits[i]), "sampling: the model produced a non-finite logit (", logits[i],
                  ") for token id ", i, "; no token is emitted from it (`megamoe inspect` scans the weights)");
  }
  return choose(logits, params_, params_.temperature > 0.0 ? next_uniform() : 0.0);
}

double Sampler::next_uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::choose(std::span<const float> logits, const SamplingParams& params, double u01) {
  validate(params);
  return cpu::choose_token(logits, params.temperature, params.top_k, params.top_p, u01);
}

}  // namespace megamoe
