// The sharded forward on the CPU backend over rank threads (docs/parallel.md):
// N ranks, each holding its heads, groups, experts, shared-expert slice and
// vocabulary rows, joined by all-reduces and the logits all-gather, equal one
// rank within fp32 rounding (only the order of the partial sums differs), and
// greedy generation and mixed batched steps are token-identical.
//
// Bound: max |diff| <= 8e-6 x max(1, max |logit|), 3x the largest measured
// (2.7e-6: tiny-b on 3 ranks, a mixed batched step; prefill 1.0-1.5e-6,
// decode rows 0.4-1.6e-6 on every case; each check prints its value).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "backend/cpu/cpu_backend.hpp"
#include "core/error.hpp"
#include "model/deepseek_v4/model.hpp"
#include "model/tiny_models.hpp"

namespace megamoe {
namespace {

using testing::max_abs;
using testing::max_abs_diff;
using testing::tiny_model_dir;

constexpr double kRelativeBound = 8e-6;

struct Case {
  const char* model;
  int64_t ranks;
};
std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = std::string(info.param.model) + "_" + std::to_string(info.param.ranks) + "ranks";
  for (char& c : name)
    if (c == '-') c = '_';
  return name;
}

std::unique_ptr<dsv4::Model> load(const char* model, int64_t ranks) {
  dsv4::ModelOptions options;
  options.ranks = ranks;
  options.backend.max_sequences = 4;
  return dsv4::Model::load(tiny_model_dir(model), options);
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

// Asserts the bound and prints the measured error (the numbers in the header).
void expect_close(const std::vector<float>& sharded, const std::vector<float>& whole, const std::string& what) {
  ASSERT_EQ(sharded.size(), whole.size()) << what;
  const double scale = std::max(1.0f, max_abs(whole));
  const double err = max_abs_diff(sharded, whole) / scale;
  std::printf("[ measured ] %s: max |diff| / max(1, max |logit|) = %.3g\n", what.c_str(), err);
  EXPECT_LE(err, kRelativeBound) << what;
}

class Sharded : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    whole_ = load(GetParam().model, 1);
    sharded_ = load(GetParam().model, GetParam().ranks);
    ASSERT_EQ(sharded_->ranks(), GetParam().ranks);
  }
  std::unique_ptr<dsv4::Model> whole_, sharded_;
};

TEST_P(Sharded, PrefillAndDecodeLogitsMatchOneRank) {
  const int64_t v = whole_->config().vocab_size;
  const std::vector<int32_t> prompt = random_ids(40, v, 11);
  dsv4::SequenceState a = whole_->new_sequence(), b = sharded_->new_sequence();
  expect_close(sharded_->forward(prompt, b), whole_->forward(prompt, a), std::string(GetParam().model) + " prefill");
  for (int step = 0; step < 4; ++step) {  // decode rows, logits read back
    const int32_t id = static_cast<int32_t>((step * 31 + 5) % v);
    std::vector<std::vector<float>> la, lb;
    const dsv4::DecodeInput ia{id, &a, {}}, ib{id, &b, {}};
    whole_->decode({&ia, 1}, {true, &la});
    sharded_->decode({&ib, 1}, {true, &lb});
    expect_close(lb.at(0), la.at(0), std::string(GetParam().model) + " decode " + std::to_string(step));
  }
}

TEST_P(Sharded, GreedyGenerationOf32TokensIsIdentical) {
  const int64_t v = whole_->config().vocab_size;
  const std::vector<int32_t> prompt = random_ids(9, v, 23);
  dsv4::SequenceState a = whole_->new_sequence(), b = sharded_->new_sequence();
  std::vector<float> la = whole_->forward(prompt, a, {true}), lb = sharded_->forward(prompt, b, {true});
  int32_t ta = static_cast<int32_t>(std::max_element(la.begin(), la.end()) - la.begin());
  int32_t tb = static_cast<int32_t>(std::max_element(lb.begin(), lb.end()) - lb.begin());
  std::vector<int32_t> gen_a{ta}, gen_b{tb};
  for (int i = 1; i < 32; ++i) {
    const dsv4::DecodeInput ia{ta, &a, {}}, ib{tb, &b, {}};
    ta = whole_->decode({&ia, 1}).at(0);
    tb = sharded_->decode({&ib, 1}).at(0);
    gen_a.push_back(ta);
    gen_b.push_back(tb);
  }
  EXPECT_EQ(gen_b, gen_a);
}

TEST_P(Sharded, MixedBatchedStepsMatchOneRank) {
  const int64_t v = whole_->config().vocab_size;
  // Three sequences; each step gives each a chunk (1 = a decode row).
  const std::vector<std::vector<int64_t>> chunks = {{7, 1, 1, 5}, {1, 9, 3, 1}, {13, 1, 1, 1}};
  std::vector<dsv4::SequenceState> sa, sb;
  std::vector<std::vector<int32_t>> ids;
  for (size_t s = 0; s < chunks.size(); ++s) {
    sa.push_back(whole_->new_sequence());
    sb.push_back(sharded_->new_sequence());
    ids.push_back(random_ids(32, v, 40 + static_cast<uint32_t>(s)));
  }
  std::vector<int64_t> offset(chunks.size(), 0);
  for (size_t step = 0; step < chunks[0].size(); ++step) {
    std::vector<dsv4::SequenceInput> ia, ib;
    for (size_t s = 0; s < chunks.size(); ++s) {
      const auto part = std::span<const int32_t>(ids[s]).subspan(offset[s], chunks[s][step]);
      ia.push_back({part, &sa[s]});
      ib.push_back({part, &sb[s]});
      offset[s] += chunks[s][step];
    }
    const auto out_a = whole_->forward_batch(ia), out_b = sharded_->forward_batch(ib);
    for (size_t s = 0; s < chunks.size(); ++s)
      expect_close(out_b[s], out_a[s],
                   std::string(GetParam().model) + " step " + std::to_string(step) + " seq " + std::to_string(s));
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, Sharded,
                         ::testing::Values(Case{"tiny-a", 2}, Case{"tiny-a-nvfp4", 2}, Case{"tiny-a-mxfp4", 2},
                                           Case{"tiny-b", 3}, Case{"tiny-b-fp8", 3}),
                         case_name);

// Experts left in the checkpoint and dequantized on use (the path real
// Flash/Pro sizes take on the CPU): each rank keeps only its experts' references.
TEST(ShardedLazyExperts, TwoRanksMatchOneRank) {
  const auto load_lazy = [](int64_t ranks) {
    dsv4::ModelOptions options;
    options.ranks = ranks;
    options.backend.eager_expert_bytes = 0;
    return dsv4::Model::load(tiny_model_dir("tiny-a-nvfp4"), options);
  };
  const auto whole = load_lazy(1), sharded = load_lazy(2);
  ASSERT_FALSE(static_cast<cpu::CpuBackend&>(sharded->backend(1)).weights().layers.at(0).moe.expert_refs.empty());
  const std::vector<int32_t> prompt = random_ids(20, whole->config().vocab_size, 5);
  dsv4::SequenceState a = whole->new_sequence(), b = sharded->new_sequence();
  expect_close(sharded->forward(prompt, b), whole->forward(prompt, a), "tiny-a-nvfp4 lazy experts prefill");
}

std::string load_error(const char* model, int64_t ranks) {
  try {
    load(model, ranks);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ShardedErrors, RankCountsTheModelCannotBeSplitByAreClearErrors) {
  EXPECT_NE(load_error("tiny-c", 2).find("o_groups = 1 is not a multiple of 2"), std::string::npos);
  EXPECT_NE(load_error("tiny-a", 3).find("num_attention_heads = 4 is not a multiple of 3"), std::string::npos);
  EXPECT_NE(load_error("tiny-a", 4).find("o_groups = 2 is not a multiple of 4"), std::string::npos);
  EXPECT_NE(load_error("tiny-b", 2).find("o_groups = 3 is not a multiple of 2"), std::string::npos);
  EXPECT_NE(load_error("tiny-a", 0).find("the rank count must be >= 1"), std::string::npos);
}

TEST(ShardedErrors, ASequenceOfAnotherModelIsRefused) {
  const auto whole = load("tiny-a", 1), sharded = load("tiny-a", 2);
  dsv4::SequenceState foreign = whole->new_sequence();
  const std::vector<int32_t> ids = {1, 2, 3};
  try {
    sharded->forward(ids, foreign);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("was not made by this model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace megamoe
