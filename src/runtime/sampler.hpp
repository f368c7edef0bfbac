// Next-token choice from a row of logits. temperature <= 0 is greedy (argmax,
// ties to the lower id). Otherwise: logits / temperature, keep the top_k
// highest (0 = all), then the smallest prefix whose probability reaches top_p,
// renormalise and draw with a seeded 64-bit Mersenne Twister (the draw is our
// own 53-bit mapping, so a seed gives the same ids on every platform).
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace megamoe {

struct SamplingParams {
  double temperature = 0.0;  // <= 0: greedy
  int64_t top_k = 0;         // 0: no top-k filter
  double top_p = 1.0;        // in (0, 1]
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);  // validates the parameters
  int32_t sample(std::span<const float> logits);
  // The next uniform draw in [0, 1) (53 bits); sample() takes one per sampled
  // (temperature > 0) token. A device sampler is fed these so it picks what
  // sample() would (cpu::choose_token).
  double next_uniform();
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace megamoe
