// The OpenAI / vLLM logit adjustments a request may ask for, applied to a
// sequence's row of logits before the sampler chooses, in this order:
//   repetition_penalty r (vLLM / transformers; 1 = off): every token seen in
//     the prompt or the generated text has its logit divided by r if positive,
//     multiplied by r otherwise;
//   presence_penalty a and frequency_penalty f (OpenAI; 0 = off): every token
//     generated c > 0 times so far loses a + c * f;
//   logit_bias: a fixed amount added to the logits of the listed ids.
// The sampler's draw is unchanged (a seed still gives one output), and the
// logprobs a server reports stay the model's (before these adjustments), as
// vLLM reports them by default.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace megamoe {

struct LogitAdjustParams {
  double presence_penalty = 0.0;    // [-2, 2]
  double frequency_penalty = 0.0;   // [-2, 2]
  double repetition_penalty = 1.0;  // (0, 10]
  std::vector<std::pair<int32_t, float>> logit_bias;  // (id >= 0, bias in [-100, 100]), ids distinct

  bool active() const;  // false: every adjustment is off (the row goes to the sampler as it is)
};

class LogitAdjuster {
 public:
  // Validates the parameters (std::invalid_argument naming the bad one).
  LogitAdjuster(const LogitAdjustParams& params, std::span<const int32_t> prompt);

  // Adjusts the row in place; ids past its end (a bias for an id the model lacks) are an error.
  void apply(std::span<float> logits) const;
  // Counts a generated token.
  void record(int32_t id);

  const LogitAdjustParams& params() const { return params_; }

 private:
  LogitAdjustParams params_;
  std::unordered_map<int32_t, int64_t> generated_;  // id -> times generated
  std::unordered_set<int32_t> seen_;                // prompt and generated ids (repetition penalty)
};

}  // namespace megamoe
