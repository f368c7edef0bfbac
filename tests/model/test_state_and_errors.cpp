// The per-sequence state of dsv4-architecture.md §9.1 (sizes after n tokens,
// -inf overlap gates before the first window closes) and the model's errors
// for bad input: ids outside the vocabulary, empty input, a missing tensor, a
// tensor of the wrong shape.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "model/deepseek_v4/model.hpp"
#include "model/tiny_models.hpp"

namespace megamoe {
namespace {

using testing::golden_ids;
using testing::tiny_model_dir;

TEST(SequenceState, SizesFollowSection9AfterEachStep) {
  const auto model = dsv4::Model::load(tiny_model_dir("tiny-a"));
  const ModelConfig& cfg = model->config();
  const std::vector<int32_t> ids = golden_ids("tiny-a");
  dsv4::SequenceState state = model->new_sequence();
  const auto& cache = dynamic_cast<const cpu::CpuCache&>(*state.cache);
  // Before anything: CSA overlap state is keys 0 / gates -inf (§11 item 10).
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    if (cfg.layer_types[l] != AttentionType::kCompressedSparse) continue;
    for (float g : cache.layers[l].compressor.overlap_gate) EXPECT_EQ(g, -INFINITY);
    for (float g : cache.layers[l].indexer.overlap_gate) EXPECT_EQ(g, -INFINITY);
  }
  for (size_t n = 1; n <= ids.size(); ++n) {
    model->forward(std::span<const int32_t>(&ids[n - 1], 1), state);
    ASSERT_EQ(state.position, static_cast<int64_t>(n));
    for (int64_t l = 0; l < cfg.num_layers; ++l) {
      const dsv4::LayerState& layer = cache.layers[l];
      const int64_t window_rows = std::min<int64_t>(cfg.sliding_window - 1, n);
      EXPECT_EQ(static_cast<int64_t>(layer.window.size()), window_rows * cfg.head_dim) << "layer " << l;
      if (cfg.layer_types[l] == AttentionType::kSliding) {
        EXPECT_EQ(layer.compressor.entry_count(), 0);
        continue;
      }
      const int64_t m = cfg.compress_rates[l];
      EXPECT_EQ(layer.compressor.entry_count(), static_cast<int64_t>(n) / m) << "layer " << l << " n " << n;
      EXPECT_EQ(layer.compressor.buffered, static_cast<int64_t>(n) % m);
      if (cfg.layer_types[l] == AttentionType::kCompressedSparse) {
        EXPECT_EQ(layer.indexer.entry_count(), static_cast<int64_t>(n) / m);
        // Once a window has closed, the overlap gates hold that window's (finite) biased gates.
        const bool closed = static_cast<int64_t>(n) >= m;
        EXPECT_EQ(std::isfinite(layer.compressor.overlap_gate[0]), closed) << "n " << n;
      }
    }
  }
}

TEST(ModelErrors, RejectsIdsOutsideVocabularyAndEmptyInput) {
  const auto model = dsv4::Model::load(tiny_model_dir("tiny-a"));
  dsv4::SequenceState state = model->new_sequence();
  const std::vector<int32_t> bad = {3, 128, 5};  // vocab 128
  try {
    model->forward(bad, state);
    FAIL() << "no error for an out-of-vocabulary id";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 128 at index 1 is outside the vocabulary [0, 128)"),
              std::string::npos)
        << e.what();
  }
  const std::vector<int32_t> negative = {-1};
  EXPECT_THROW(model->forward(negative, state), Error);
  EXPECT_EQ(state.position, 0) << "a rejected input must not advance the state";
  try {
    model->forward(std::span<const int32_t>(), state);
    FAIL() << "no error for an empty input";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty input"), std::string::npos) << e.what();
  }
}

// Copies tiny-a into a temp dir with one tensor dropped or replaced.
// A replacement is F32 ones of new_shape unless `raw` bytes of `dtype` are given.
std::filesystem::path mutated_checkpoint(const std::string& tag, const std::string& victim, bool drop,
                                         const Shape& new_shape = {}, DType dtype = DType::F32,
                                         std::vector<std::byte> raw = {}, const std::string& source = "tiny-a") {
  const auto src = tiny_model_dir(source);
  const auto dst = std::filesystem::temp_directory_path() / ("megamoe-cpu-engine-" + tag);
  std::filesystem::remove_all(dst);
  std::filesystem::create_directories(dst);
  std::filesystem::copy_file(src / "config.json", dst / "config.json");
  const auto file = SafetensorsFile::open(src / "model.safetensors");
  std::vector<TensorToWrite> tensors;
  std::vector<float> ones;
  bool found = false;
  for (const auto& [name, view] : file->tensors()) {
    if (name != victim) {
      tensors.push_back({name, view.dtype, view.shape, view.data, view.nbytes});
      continue;
    }
    found = true;
    if (drop) continue;
    if (raw.empty()) {
      ones.assign(static_cast<size_t>(shape_numel(new_shape)), 1.f);
      tensors.push_back({name, DType::F32, new_shape, ones.data(), ones.size() * sizeof(float)});
    } else {
      tensors.push_back({name, dtype, new_shape, raw.data(), raw.size()});
    }
  }
  EXPECT_TRUE(found) << victim;
  write_safetensors(dst / "model.safetensors", tensors);
  return dst;
}

void expect_load_error(const std::filesystem::path& dir, const std::vector<std::string>& needles) {
  try {
    dsv4::Model::load(dir);
    FAIL() << "loading " << dir << " did not fail";
  } catch (const Error& e) {
    for (const auto& needle : needles) EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelErrors, MissingTensorIsNamed) {
  expect_load_error(mutated_checkpoint("missing", "model.layers.3.self_attn.compressor.indexer.position_bias", true),
                    {"model.layers.3.self_attn.compressor.indexer.position_bias"});
  expect_load_error(mutated_checkpoint("missing-expert", "model.layers.2.mlp.experts.down_proj", true),
                    {"model.layers.2.mlp.experts"});
}

TEST(ModelErrors, WrongShapeIsNamed) {
  expect_load_error(mutated_checkpoint("shape-norm", "model.norm.weight", false, {65}), {"model.norm.weight", "65"});
  expect_load_error(mutated_checkpoint("shape-qb", "model.layers.1.self_attn.q_b_proj.weight", false, {128, 31}),
                    {"model.layers.1.self_attn.q_b_proj"});
  expect_load_error(mutated_checkpoint("shape-sinks", "model.layers.4.self_attn.sinks", false, {5}),
                    {"model.layers.4.self_attn.sinks"});
}

TEST(ModelErrors, WrongQuantizedCompanionShapeIsNamed) {
  // MXFP4 expert scale [32, 2] (E8M0 per 32 of 64 inputs) cut to [32, 1].
  const std::vector<std::byte> e8m0(32, std::byte{0x7F});
  expect_load_error(mutated_checkpoint("mxfp4-scale", "layers.2.ffn.experts.1.w1.scale", false, {32, 1},
                                       DType::F8_E8M0, e8m0, "tiny-a-mxfp4"),
                    {"experts.1"});
  // NVFP4 packed weight [32, 32] (64 inputs) given as [32, 16].
  const std::vector<std::byte> packed(32 * 16, std::byte{0x11});
  expect_load_error(mutated_checkpoint("nvfp4-weight", "layers.3.ffn.experts.5.w3.weight", false, {32, 16}, DType::U8,
                                       packed, "tiny-a-nvfp4"),
                    {"experts.5"});
}

TEST(ModelErrors, HashTableOutOfRangeIsNamed) {
  // tid2eid [V, k] must index existing experts (E = 8): entry 8 is rejected, naming the table.
  std::vector<int64_t> table(128 * 2, 1);
  table[77] = 8;
  std::vector<std::byte> raw(table.size() * sizeof(int64_t));
  std::memcpy(raw.data(), table.data(), raw.size());
  expect_load_error(mutated_checkpoint("tid2eid", "model.layers.0.mlp.gate.tid2eid", false, {128, 2}, DType::I64, raw),
                    {"model.layers.0.mlp.gate.tid2eid", "holds 8 at index 77"});
}

}  // namespace
}  // namespace megamoe
