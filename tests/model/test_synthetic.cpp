// write_synthetic_checkpoint makes checkpoints the loader accepts and the CPU
// forward runs in every mode with equal results (the GPU comparison is
// tests/kernels/test_cuda_synthetic.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/synthetic_checkpoint.hpp"
#include "model/deepseek_v4/model.hpp"
#include "model/tiny_models.hpp"
#include "runtime/session.hpp"

namespace megamoe {
namespace {

TEST(SyntheticCheckpoint, LoadsAndRunsInEveryModeWithBothExpertFormats) {
  for (const char* experts : {"nvfp4", "mxfp4"}) {
    const auto dir = std::filesystem::temp_directory_path() / (std::string("megamoe-synth-cpu-") + experts);
    SyntheticSpec spec;
    spec.preset = "small";
    spec.layers = 3;
    spec.experts = experts;
    EXPECT_GT(write_synthetic_checkpoint(dir, spec), 1000000u);
    const auto ckpt = Checkpoint::open(dir);
    EXPECT_EQ(ckpt->config().layer_types[0], AttentionType::kCompressedSparse);
    EXPECT_EQ(ckpt->config().layer_types[1], AttentionType::kHeavilyCompressed);
    EXPECT_EQ(ckpt->config().layer_types[2], AttentionType::kSliding);
    EXPECT_EQ(ckpt->config().mlp_types[0], MlpType::kHashMoe);
    EXPECT_EQ(ckpt->weight("model.layers.0.self_attn.q_b_proj", 4 * 128, 128).format, WeightFormat::kFp8Block);
    EXPECT_EQ(ckpt->expert_weight(1, 3, "down_proj").format,
              std::string(experts) == "nvfp4" ? WeightFormat::kNvfp4 : WeightFormat::kMxfp4);
    const auto model = dsv4::Model::load(dir);
    const std::vector<int32_t> ids = {5, 17, 42, 7, 99, 3, 250, 11, 64, 8};
    const std::vector<float> prefill = compute_logits(*model, ids, LogitsMode{LogitsMode::kPrefill, 0});
    const std::vector<float> decode = compute_logits(*model, ids, LogitsMode{LogitsMode::kDecode, 1});
    for (float v : prefill) ASSERT_TRUE(std::isfinite(v));
    // Logits of a random model at these widths are O(1): not collapsed, not exploding.
    EXPECT_GT(testing::max_abs(prefill), 0.1f);
    EXPECT_LT(testing::max_abs(prefill), 1e3f);
    // Measured 0 (bit-identical) for both expert formats; was 1e-4.
    EXPECT_LE(testing::max_abs_diff(prefill, decode), 1e-6f * std::max(1.f, testing::max_abs(prefill)));
    std::filesystem::remove_all(dir);
  }
}

TEST(SyntheticCheckpoint, RejectsBadSpecs) {
  SyntheticSpec spec;
  spec.preset = "huge";
  EXPECT_THROW(write_synthetic_checkpoint(std::filesystem::temp_directory_path() / "megamoe-bad", spec), Error);
  spec.preset = "small";
  spec.experts = "int4";
  EXPECT_THROW(write_synthetic_checkpoint(std::filesystem::temp_directory_path() / "megamoe-bad", spec), Error);
}

}  // namespace
}  // namespace megamoe
