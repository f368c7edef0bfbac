// The OpenAI / vLLM logit adjustments a request may ask for, applied to a
// sequence's row of logits before the sampler chooses, in this order:
//   repetition_penalty r (vLLM / transformers; 1 = off): every token seen in
//     the prompt or the generated text has its logit divided by r if positive,
//     multiplied by r otherwise;
//   presence_penalty a and frequency_penalty f (OpenAI; 0 = off): every token
//     generated c > 0 times so far loses a + c * f;
//   logit_bias: a fixed amount added to the logits of the listed ids;
//   min_tokens (vLLM): the listed end ids (EOS) cannot be chosen before that
//     many tokens were generated;
//   min_p (vLLM; 0 = off): with temperature T > 0, a token whose probability
//     is below min_p times the most likely one's is dropped, i.e. a logit below
//     max + T * ln(min_p); top_k / top_p then work on what is left, as in vLLM.
// Dropped tokens get the lowest finite logit (probability 0 in the sampler).
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
  int64_t min_tokens = 0;                  // >= 0
  std::vector<int32_t> min_tokens_ids;     // the ids held back before min_tokens (the request's EOS ids)
  double min_p = 0.0;                      // [0, 1]

  bool active() const;  // false: every adjustment is off (the row goes to the sampler as it is)
};

class LogitAdjuster {
 public:
  // Validates the parameters (std::invalid_argument naming the bad one);
  // temperature is the sampler's (min_p's threshold depends on it).
  LogitAdjuster(const LogitAdjustParams& params, std::span<const int32_t> prompt, double temperature);

  // Adjusts the row in place; ids past its end (a bias for an id the model lacks) are an error.
  void apply(std::span<float> logits) const;
  // Counts a generated token.
  void record(int32_t id);

  const LogitAdjustParams& params() const { return params_; }

 private:
  LogitAdjustParams params_;
  double temperature_ = 0.0;
  int64_t generated_total_ = 0;
  std::unordered_map<int32_t, int64_t> generated_;  // id -> times generated
  std::unordered_set<int32_t> seen_;                // prompt and generated ids (repetition penalty)
};

}  // namespace megamoe
