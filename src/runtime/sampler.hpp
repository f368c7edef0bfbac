// Next-token choice from a row of logits. temperature 0 is greedy (argmax,
// ties to the lower id). Otherwise: logits / temperature, keep the top_k
// highest (0 = all), then the smallest prefix whose probability reaches top_p,
// renormalise and draw with a seeded 64-bit Mersenne Twister (the draw is our
// own 53-bit mapping, so a seed gives the same ids on every platform).
// The choice itself is cpu::choose_token (src/backend/cpu/sample.hpp), which
// the device sampler reproduces from the same draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace megamoe {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy; negative is rejected
  int64_t top_k = 0;         // 0: no top-k filter
  double top_p = 1.0;        // in (0, 1]
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);  // validates the parameters
  // choose(logits, params, temperature > 0 ? next_uniform() : 0); throws on a
  // NaN or Inf logit instead of choosing.
  int32_t sample(std::span<const float> logits);
  const SamplingParams& params() const { return params_; }

  // The two halves of sample(), public so that a device sampler can be fed the
  // same draw: the next uniform in [0, 1), (rng() >> 11) * 2^-53 ...
  double next_uniform();
  // ... and the choice from one row given that draw (u01 unused when greedy).
  static int32_t choose(std::span<const float> logits, const SamplingParams& params, double u01);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace megamoe
