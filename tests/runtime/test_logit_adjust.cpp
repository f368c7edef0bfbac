// LogitAdjuster (runtime/logit_adjust.hpp) against the formulas written out
// by hand on small rows: OpenAI's presence / frequency penalties over the
// generated tokens, transformers' repetition penalty over prompt and generated
// tokens, logit_bias, their order, and the parameter checks.
#include <gtest/gtest.h>

#include <limits>
#include <stdexcept>
#include <vector>

#include "runtime/logit_adjust.hpp"
#include "runtime/sampler.hpp"

namespace megamoe {
namespace {

TEST(LogitAdjust, DefaultsAreInactiveAndLeaveTheRowAlone) {
  const LogitAdjustParams p;
  EXPECT_FALSE(p.active());
  LogitAdjuster a(p, std::vector<int32_t>{0, 1}, 1.0);
  std::vector<float> row = {1.0f, -2.0f, 3.0f};
  a.record(2);
  a.apply(row);
  EXPECT_EQ(row, (std::vector<float>{1.0f, -2.0f, 3.0f}));
}

TEST(LogitAdjust, PresenceAndFrequencyCountGeneratedTokensOnly) {
  LogitAdjustParams p;
  p.presence_penalty = 0.5;
  p.frequency_penalty = 0.25;
  EXPECT_TRUE(p.active());
  LogitAdjuster a(p, std::vector<int32_t>{3}, 1.0);  // the prompt does not count
  a.record(1);
  a.record(1);
  a.record(2);
  std::vector<float> row = {1.0f, 1.0f, 1.0f, 1.0f};
  a.apply(row);
  EXPECT_FLOAT_EQ(row[0], 1.0f);
  EXPECT_FLOAT_EQ(row[1], 1.0f - (0.5f + 2 * 0.25f));
  EXPECT_FLOAT_EQ(row[2], 1.0f - (0.5f + 1 * 0.25f));
  EXPECT_FLOAT_EQ(row[3], 1.0f);
}

TEST(LogitAdjust, NegativePenaltiesEncourageRepeats) {
  LogitAdjustParams p;
  p.presence_penalty = -1.0;
  LogitAdjuster a(p, {}, 1.0);
  a.record(0);
  std::vector<float> row = {0.0f, 0.5f};
  a.apply(row);
  EXPECT_FLOAT_EQ(row[0], 1.0f);
  EXPECT_EQ(Sampler::choose(row, SamplingParams{}, 0.0), 0);  // greedy now picks the repeat
}

TEST(LogitAdjust, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfSeenTokens) {
  LogitAdjustParams p;
  p.repetition_penalty = 2.0;
  LogitAdjuster a(p, std::vector<int32_t>{0, 1, 1, 99}, 1.0);  // 99: past the row, ignored
  a.record(2);
  std::vector<float> row = {3.0f, -3.0f, 0.5f, 4.0f};
  a.apply(row);
  EXPECT_FLOAT_EQ(row[0], 1.5f);   // prompt, positive: / 2
  EXPECT_FLOAT_EQ(row[1], -6.0f);  // prompt, negative: * 2 (once, though it appears twice)
  EXPECT_FLOAT_EQ(row[2], 0.25f);  // generated
  EXPECT_FLOAT_EQ(row[3], 4.0f);   // never seen
}

TEST(LogitAdjust, OrderIsRepetitionThenPresenceFrequencyThenBias) {
  LogitAdjustParams p;
  p.repetition_penalty = 2.0;
  p.presence_penalty = 1.0;
  p.frequency_penalty = 0.5;
  p.logit_bias = {{0, 10.0f}, {1, -100.0f}};
  LogitAdjuster a(p, {}, 1.0);
  a.record(0);
  std::vector<float> row = {4.0f, 4.0f};
  a.apply(row);
  EXPECT_FLOAT_EQ(row[0], 4.0f / 2.0f - (1.0f + 0.5f) + 10.0f);
  EXPECT_FLOAT_EQ(row[1], 4.0f - 100.0f);
}

TEST(LogitAdjust, BiasForcesAGreedyChoice) {
  LogitAdjustParams p;
  p.logit_bias = {{2, 100.0f}};
  LogitAdjuster a(p, {}, 1.0);
  std::vector<float> row = {5.0f, 9.0f, -20.0f};
  a.apply(row);
  EXPECT_EQ(Sampler::choose(row, SamplingParams{}, 0.0), 2);
}

TEST(LogitAdjust, MinTokensHoldsTheEndIdsBack) {
  LogitAdjustParams p;
  p.min_tokens = 2;
  p.min_tokens_ids = {1};
  p.logit_bias = {{1, 100.0f}};  // even a +100 end id waits
  LogitAdjuster a(p, {}, 0.0);
  for (int step = 0; step < 3; ++step) {
    std::vector<float> row = {0.0f, 5.0f, 1.0f};
    a.apply(row);
    const int32_t id = Sampler::choose(row, SamplingParams{}, 0.0);
    EXPECT_EQ(id, step < 2 ? 2 : 1) << step;
    a.record(id);
  }
}

TEST(LogitAdjust, MinPDropsTokensBelowTheFractionOfTheTopProbability) {
  LogitAdjustParams p;
  p.min_p = 0.25;
  // T = 2: probabilities relative to the top are exp((l - 4) / 2): 1, e^-1 = 0.37, e^-1.5 = 0.22, e^-3 = 0.05.
  LogitAdjuster a(p, {}, 2.0);
  std::vector<float> row = {4.0f, 2.0f, 1.0f, -2.0f};
  a.apply(row);
  EXPECT_EQ(row[0], 4.0f);
  EXPECT_EQ(row[1], 2.0f);
  EXPECT_EQ(row[2], std::numeric_limits<float>::lowest());
  EXPECT_EQ(row[3], std::numeric_limits<float>::lowest());
  // Sampling never returns a dropped token, over the whole range of draws.
  SamplingParams s;
  s.temperature = 2.0;
  for (int i = 0; i < 1000; ++i) EXPECT_LT(Sampler::choose(row, s, i / 1000.0), 2) << i;
  // Greedy: min_p changes nothing.
  LogitAdjuster greedy(p, {}, 0.0);
  std::vector<float> g = {4.0f, 2.0f, 1.0f, -2.0f};
  greedy.apply(g);
  EXPECT_EQ(g, (std::vector<float>{4.0f, 2.0f, 1.0f, -2.0f}));
}

TEST(LogitAdjust, BadParametersThrow) {
  auto make = [](LogitAdjustParams p) { LogitAdjuster a(p, {}, 1.0); };
  LogitAdjustParams p;
  p.presence_penalty = 2.5;
  EXPECT_THROW(make(p), std::invalid_argument);
  p = {};
  p.frequency_penalty = -3.0;
  EXPECT_THROW(make(p), std::invalid_argument);
  p = {};
  p.repetition_penalty = 0.0;
  EXPECT_THROW(make(p), std::invalid_argument);
  p = {};
  p.logit_bias = {{-1, 1.0f}};
  EXPECT_THROW(make(p), std::invalid_argument);
  p.logit_bias = {{1, 101.0f}};
  EXPECT_THROW(make(p), std::invalid_argument);
  p.logit_bias = {{1, 1.0f}, {1, 2.0f}};
  EXPECT_THROW(make(p), std::invalid_argument);
  p = {};
  p.min_p = 1.5;
  EXPECT_THROW(make(p), std::invalid_argument);
  p = {};
  p.min_tokens = -1;
  EXPECT_THROW(make(p), std::invalid_argument);
  // A bias past the row is an error when applied (the server rejects it up front).
  p = {};
  p.logit_bias = {{5, 1.0f}};
  LogitAdjuster a(p, {}, 1.0);
  std::vector<float> row = {0.0f, 0.0f};
  EXPECT_THROW(a.apply(row), std::invalid_argument);
}

}  // namespace
}  // namespace megamoe
