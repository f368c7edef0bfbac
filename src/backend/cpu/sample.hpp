// The token choice from one row of logits, shared by megamoe::Sampler and the
// CPU backend, and the oracle of the device sampler. temperature <= 0 is
// greedy (argmax, ties to the lower id). Otherwise: candidates by descending
// logit (ties: lower id first), keep the top_k highest (0 = all), probs
// exp((l - l_max) / temperature) in double, the smallest prefix whose
// cumulative probability reaches top_p, and the first candidate whose running
// sum exceeds u01 * (mass of that prefix). u01 is a uniform draw in [0, 1).
#pragma once

#include <cstdint>
#include <span>

namespace megamoe::cpu {

int32_t choose_token(std::span<const float> logits, double temperature, int64_t top_k, double top_p, double u01);

}  // namespace megamoe::cpu
