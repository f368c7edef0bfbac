// Building blocks checked against values stated in dsv4-architecture.md (not
// computed by our code): the RoPE frequency tables of §12, Sinkhorn producing a
// doubly-stochastic matrix, the indexer's top-k tie rule, and the activation
// dumps covering every layer.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>

#include "backend/cpu/dsv4/hyper_connection.hpp"
#include "backend/cpu/dsv4/attention.hpp"
#include "model/deepseek_v4/model.hpp"
#include "backend/cpu/dsv4/rope.hpp"
#include "model/tiny_models.hpp"

namespace megamoe {
namespace {

TEST(Rope, TablesOfTheSection12Config) {
  // §12: with d_r = 8, compress table omega = [1, 0.05, 0.00171875, 4.6875e-5] (YaRN lo = 1, hi = 4),
  // main table [1, 0.1, 0.01, 0.001].
  RopeParams compress;
  compress.theta = 160000.0;
  compress.yarn = true;
  compress.factor = 16.0;
  compress.original_max_position = 65536;
  const dsv4::RopeTable yarn(compress, 8);
  const std::vector<double> expect_yarn = {1.0, 0.05, 0.00171875, 4.6875e-5};
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(yarn.frequencies()[i], expect_yarn[i], 1e-6 * expect_yarn[i]) << i;
  RopeParams main;
  const dsv4::RopeTable plain(main, 8);
  const std::vector<double> expect_main = {1.0, 0.1, 0.01, 0.001};
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(plain.frequencies()[i], expect_main[i], 1e-6 * expect_main[i]) << i;
}

TEST(Rope, RotatesAdjacentTailPairsAndInverts) {
  RopeParams main;
  const dsv4::RopeTable rope(main, 4);  // omega = [1, 0.01]
  std::vector<float> v = {7.f, 8.f, 1.f, 0.f, 0.f, 1.f};  // 2 untouched channels + 2 pairs
  rope.apply(v.data(), 6, 3);
  EXPECT_EQ(v[0], 7.f);
  EXPECT_EQ(v[1], 8.f);
  EXPECT_NEAR(v[2], std::cos(3.0), 1e-6);  // (1, 0) rotated by 3 rad
  EXPECT_NEAR(v[3], std::sin(3.0), 1e-6);
  EXPECT_NEAR(v[4], -std::sin(0.03), 1e-6);  // (0, 1) rotated by 0.03 rad
  EXPECT_NEAR(v[5], std::cos(0.03), 1e-6);
  rope.apply(v.data(), 6, 3, /*inverse=*/true);
  const std::vector<float> back = {7.f, 8.f, 1.f, 0.f, 0.f, 1.f};
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], back[i], 1e-6) << i;
}

TEST(HyperConnection, SinkhornIsDoublyStochastic) {
  std::vector<float> m = {3.f, -1.f, 0.5f, 2.f, 0.f, 1.f, -2.f, 4.f, 1.5f, 0.2f, -0.7f, 2.5f, 1.f, 1.f, -3.f, 0.f};
  dsv4::sinkhorn(m, 4, 20, 1e-6f);
  for (int j = 0; j < 4; ++j) {
    float row = 0.f, col = 0.f;
    for (int k = 0; k < 4; ++k) {
      row += m[j * 4 + k];
      col += m[k * 4 + j];
    }
    EXPECT_NEAR(col, 1.f, 1e-5f);  // the last step normalises columns
    EXPECT_NEAR(row, 1.f, 1e-3f);
  }
}

TEST(HyperConnection, PostAppliesCombTransposed) {
  // X' [k] = post_k y + sum_j comb[j][k] X[j]  (§5.2: the first index of comb is summed over).
  dsv4::HcParams p;
  p.streams = 2;
  p.hidden = 1;
  dsv4::HcMix mix;
  mix.post = {0.5f, 2.f};
  mix.comb = {0.9f, 0.1f, 0.3f, 0.7f};
  const float x[2] = {1.f, 10.f}, y[1] = {4.f};
  float out[2];
  dsv4::hc_post(x, y, mix, p, out);
  EXPECT_FLOAT_EQ(out[0], 0.5f * 4.f + 0.9f * 1.f + 0.3f * 10.f);
  EXPECT_FLOAT_EQ(out[1], 2.f * 4.f + 0.1f * 1.f + 0.7f * 10.f);
}

TEST(Indexer, TopKTakesHighestScoresTiesToLowerIndex) {
  EXPECT_EQ(dsv4::indexer_top_k({0.5f, 2.f, 2.f, -1.f, 3.f}, 3), (std::vector<int64_t>{4, 1, 2}));
  EXPECT_EQ(dsv4::indexer_top_k({0.f, 0.f, 0.f}, 2), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(dsv4::indexer_top_k({1.f, 2.f}, 5), (std::vector<int64_t>{1, 0}));  // fewer entries than K_I
  EXPECT_TRUE(dsv4::indexer_top_k({}, 3).empty());
}

TEST(Dumps, EveryLayerReportsItsIntermediates) {
  const auto model = dsv4::Model::load(testing::tiny_model_dir("tiny-a"));
  std::map<std::string, Shape> seen;
  dsv4::DumpFn fn = [&](const std::string& name, const Shape& shape, std::span<const float> values) {
    EXPECT_EQ(static_cast<int64_t>(values.size()), shape_numel(shape)) << name;
    seen[name] = shape;
  };
  dsv4::SequenceState state = model->new_sequence();
  dsv4::ForwardOptions options;
  options.dump = &fn;
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  model->forward(ids, state, options);
  const ModelConfig& cfg = model->config();
  EXPECT_EQ(seen.at("embed"), (Shape{9, cfg.hidden_size}));
  EXPECT_EQ(seen.at("final_norm"), (Shape{9, cfg.hidden_size}));
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    const std::string p = "layers." + std::to_string(l);
    EXPECT_EQ(seen.at(p + ".attn.q"), (Shape{9, cfg.num_heads, cfg.head_dim}));
    EXPECT_EQ(seen.at(p + ".attn_out"), (Shape{9, cfg.hidden_size}));
    EXPECT_EQ(seen.at(p + ".ffn_out"), (Shape{9, cfg.hidden_size}));
    EXPECT_EQ(seen.at(p + ".streams"), (Shape{9, cfg.hc_mult, cfg.hidden_size}));
    EXPECT_EQ(seen.count(p + ".attn.index_q"), cfg.layer_types[l] == AttentionType::kCompressedSparse ? 1u : 0u);
  }
}

}  // namespace
}  // namespace megamoe
