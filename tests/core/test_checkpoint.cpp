// Checkpoint: key canonicalisation (every rule of dsv4-architecture.md §3.3 on
// real key names), the upstream -> transformers mapping checked against
// transformers' own state_dict names, sharded loading, stacked-expert views and
// per-weight format detection with companion checks.
#include <cstring>
#include <set>

#include <gtest/gtest.h>

#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/tiny_checkpoint.hpp"

namespace megamoe {
namespace {

using testing::ExpertStorage;
using testing::kConfigDir;
using testing::OwnedTensor;

TEST(CanonicalName, EveryRenamingRule) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      // global (leaf rules, anchored)
      {"embed.weight", "model.embed_tokens.weight"},
      {"head.weight", "lm_head.weight"},
      {"hc_head_fn", "model.hc_head.hc_fn"},
      {"hc_head_base", "model.hc_head.hc_base"},
      {"hc_head_scale", "model.hc_head.hc_scale"},
      {"norm.weight", "model.norm.weight"},
      // mHC and norms
      {"layers.0.hc_attn_fn", "model.layers.0.attn_hc.fn"},
      {"layers.0.hc_attn_base", "model.layers.0.attn_hc.base"},
      {"layers.0.hc_attn_scale", "model.layers.0.attn_hc.scale"},
      {"layers.7.hc_ffn_fn", "model.layers.7.ffn_hc.fn"},
      {"layers.7.hc_ffn_base", "model.layers.7.ffn_hc.base"},
      {"layers.7.hc_ffn_scale", "model.layers.7.ffn_hc.scale"},
      {"layers.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"},
      {"layers.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"},
      // attention core
      {"layers.2.attn.wq_a.weight", "model.layers.2.self_attn.q_a_proj.weight"},
      {"layers.2.attn.q_norm.weight", "model.layers.2.self_attn.q_a_norm.weight"},
      {"layers.2.attn.wq_b.weight", "model.layers.2.self_attn.q_b_proj.weight"},
      {"layers.2.attn.wkv.weight", "model.layers.2.self_attn.kv_proj.weight"},
      {"layers.2.attn.kv_norm.weight", "model.layers.2.self_attn.kv_norm.weight"},
      {"layers.2.attn.wo_a.weight", "model.layers.2.self_attn.o_a_proj.weight"},
      {"layers.2.attn.wo_b.weight", "model.layers.2.self_attn.o_b_proj.weight"},
      {"layers.2.attn.attn_sink", "model.layers.2.self_attn.sinks"},
      // compressor
      {"layers.3.attn.compressor.wkv.weight", "model.layers.3.self_attn.compressor.kv_proj.weight"},
      {"layers.3.attn.compressor.wgate.weight", "model.layers.3.self_attn.compressor.gate_proj.weight"},
      {"layers.3.attn.compressor.ape", "model.layers.3.self_attn.compressor.position_bias"},
      {"layers.3.attn.compressor.norm.weight", "model.layers.3.self_attn.compressor.kv_norm.weight"},
      // lightning indexer (order-sensitive: .attn. then .indexer.compressor. then .wkv.)
      {"layers.2.attn.indexer.wq_b.weight", "model.layers.2.self_attn.compressor.indexer.q_b_proj.weight"},
      {"layers.2.attn.indexer.weights_proj.weight",
       "model.layers.2.self_attn.compressor.indexer.scorer.weights_proj.weight"},
      {"layers.2.attn.indexer.compressor.wkv.weight", "model.layers.2.self_attn.compressor.indexer.kv_proj.weight"},
      {"layers.2.attn.indexer.compressor.wgate.weight",
       "model.layers.2.self_attn.compressor.indexer.gate_proj.weight"},
      {"layers.2.attn.indexer.compressor.ape", "model.layers.2.self_attn.compressor.indexer.position_bias"},
      {"layers.2.attn.indexer.compressor.norm.weight", "model.layers.2.self_attn.compressor.indexer.kv_norm.weight"},
      // MoE
      {"layers.5.ffn.gate.weight", "model.layers.5.mlp.gate.weight"},
      {"layers.5.ffn.gate.bias", "model.layers.5.mlp.gate.e_score_correction_bias"},
      {"layers.1.ffn.gate.tid2eid", "model.layers.1.mlp.gate.tid2eid"},
      {"layers.5.ffn.shared_experts.w1.weight", "model.layers.5.mlp.shared_experts.gate_proj.weight"},
      {"layers.5.ffn.shared_experts.w2.weight", "model.layers.5.mlp.shared_experts.down_proj.weight"},
      {"layers.5.ffn.shared_experts.w3.weight", "model.layers.5.mlp.shared_experts.up_proj.weight"},
      {"layers.5.ffn.experts.17.w1.weight", "model.layers.5.mlp.experts.17.gate_proj.weight"},
      {"layers.5.ffn.experts.17.w3.weight", "model.layers.5.mlp.experts.17.up_proj.weight"},
      {"layers.5.ffn.experts.255.w2.weight", "model.layers.5.mlp.experts.255.down_proj.weight"},
      // scales: upstream .scale -> weight_scale_inv; NVFP4 companions keep their suffix
      {"layers.2.attn.wq_a.scale", "model.layers.2.self_attn.q_a_proj.weight_scale_inv"},
      {"layers.5.ffn.shared_experts.w2.scale", "model.layers.5.mlp.shared_experts.down_proj.weight_scale_inv"},
      {"layers.5.ffn.experts.3.w1.scale", "model.layers.5.mlp.experts.3.gate_proj.weight_scale_inv"},
      {"layers.5.ffn.experts.3.w1.weight_scale", "model.layers.5.mlp.experts.3.gate_proj.weight_scale"},
      {"layers.5.ffn.experts.3.w1.weight_scale_2", "model.layers.5.mlp.experts.3.gate_proj.weight_scale_2"},
      {"layers.5.ffn.experts.3.w3.input_scale", "model.layers.5.mlp.experts.3.up_proj.input_scale"},
      {"head.scale", "lm_head.weight_scale_inv"},
      // MTP: kept under mtp.*, decoder-block parts renamed, block-level names untouched
      {"mtp.0.e_proj.weight", "mtp.0.e_proj.weight"},
      {"mtp.0.e_proj.scale", "mtp.0.e_proj.weight_scale_inv"},
      {"mtp.0.norm.weight", "mtp.0.norm.weight"},
      {"mtp.0.enorm.weight", "mtp.0.enorm.weight"},
      {"mtp.0.hc_head_fn", "mtp.0.hc_head_fn"},
      {"mtp.0.attn.wq_a.weight", "mtp.0.self_attn.q_a_proj.weight"},
      {"mtp.0.ffn.experts.4.w2.scale", "mtp.0.mlp.experts.4.down_proj.weight_scale_inv"},
      {"mtp.0.attn_norm.weight", "mtp.0.input_layernorm.weight"},
      // transformers names are canonical already
      {"model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.q_a_proj.weight"},
      {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.gate_up_proj"},
      {"model.norm.weight", "model.norm.weight"},
      {"lm_head.weight", "lm_head.weight"},
  };
  for (const auto& [upstream, expected] : cases) {
    EXPECT_EQ(Checkpoint::canonical_name(upstream), expected) << upstream;
  }
}

// transformers' own state_dict names for the §12 model, with the stacked experts expanded to the per-expert
// canonical names.
std::set<std::string> transformers_names_per_expert(const ModelConfig& config) {
  std::set<std::string> expected;
  const nlohmann::json state_dict = testing::read_json_file(kConfigDir / "tiny-transformers-state-dict.json");
  for (const auto& item : state_dict.items()) {
    const std::string& name = item.key();
    const auto stacked = name.find(".mlp.experts.");
    if (stacked == std::string::npos) {
      expected.insert(name);
      continue;
    }
    const std::string layer_prefix = name.substr(0, stacked) + ".mlp.experts.";
    const bool gate_up = name.substr(stacked) == ".mlp.experts.gate_up_proj";
    for (int64_t e = 0; e < config.n_routed_experts; ++e) {
      for (const char* which : gate_up ? std::vector<const char*>{"gate_proj", "up_proj"}
                                       : std::vector<const char*>{"down_proj"}) {
        expected.insert(layer_prefix + std::to_string(e) + "." + which + ".weight");
      }
    }
  }
  return expected;
}

// Oracle: upstream names written from the §3 tables must land exactly on transformers' state_dict names.
TEST(CanonicalName, UpstreamNamesMatchTransformersStateDict) {
  const ModelConfig config = load_model_config(kConfigDir / "tiny-transformers.json");
  std::set<std::string> produced;
  for (const OwnedTensor& t : testing::tiny_upstream_tensors(config, ExpertStorage::kBf16)) {
    const std::string canonical = Checkpoint::canonical_name(t.name);
    if (canonical.size() > 17 && canonical.substr(canonical.size() - 17) == ".weight_scale_inv") continue;
    EXPECT_TRUE(produced.insert(canonical).second) << "two names map to " << canonical;
  }
  EXPECT_EQ(produced, transformers_names_per_expert(config));
}

// transformers' names are fixed points of the table (none of its patterns occurs in them).
TEST(CanonicalName, TransformersNamesAreFixedPoints) {
  const nlohmann::json state_dict = testing::read_json_file(kConfigDir / "tiny-transformers-state-dict.json");
  for (const auto& item : state_dict.items()) EXPECT_EQ(Checkpoint::canonical_name(item.key()), item.key());
}

// Oracle: the key names transformers' save_pretrained really writes (upstream-style under `model.`,
// e.g. model.layers.1.attn.norm.weight for self_attn.kv_norm, per-expert w1/w2/w3, top-level head.weight).
TEST(CanonicalName, TransformersSavedNamesResolve) {
  const ModelConfig config = load_model_config(kConfigDir / "tiny-transformers.json");
  const nlohmann::json saved = testing::read_json_file(kConfigDir / "tiny-transformers-saved-keys.json");
  std::set<std::string> produced;
  for (const auto& item : saved.items()) {
    EXPECT_TRUE(produced.insert(Checkpoint::canonical_name(item.key())).second) << item.key();
  }
  EXPECT_EQ(produced, transformers_names_per_expert(config));
  EXPECT_EQ(Checkpoint::canonical_name("model.layers.1.attn.norm.weight"), "model.layers.1.self_attn.kv_norm.weight");
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("megamoe_test_checkpoint_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    config_ = load_model_config(kConfigDir / "tiny-upstream.json");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Checkpoint> write_and_open(const std::vector<OwnedTensor>& tensors, int shards = 1,
                                             const char* config = "tiny-upstream.json") {
    testing::write_checkpoint(dir_, kConfigDir / config, tensors, shards);
    return Checkpoint::open(dir_);
  }

  void expect_open_error(const std::vector<OwnedTensor>& tensors, const std::string& needle, int shards = 1) {
    testing::write_checkpoint(dir_, kConfigDir / "tiny-upstream.json", tensors, shards);
    expect_error([&] { Checkpoint::open(dir_); }, needle);
  }

  template <typename Fn>
  void expect_error(Fn&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what()
                                                                       << "\nexpected: " << needle;
    }
  }

  std::filesystem::path dir_;
  ModelConfig config_;
};

TEST_F(CheckpointTest, TransformersDenseWithStackedExperts) {
  std::vector<OwnedTensor> tensors = testing::tiny_transformers_tensors();
  const auto ckpt = write_and_open(tensors, 1, "tiny-transformers.json");
  EXPECT_EQ(ckpt->tensors().size(), 149u);
  EXPECT_EQ(ckpt->config().num_layers, 5);
  EXPECT_EQ(ckpt->get("model.layers.1.self_attn.compressor.position_bias", {4, 64}).dtype, DType::F32);
  expect_error([&] { ckpt->get("model.layers.1.self_attn.compressor.position_bias", {4, 32}); },
               "expected shape [4, 32], found [4, 64]");
  expect_error([&] { ckpt->get("model.layers.9.self_attn.sinks"); }, "tensor 'model.layers.9.self_attn.sinks' not found");

  const WeightRef q = ckpt->weight("model.layers.0.self_attn.q_b_proj", 128, 32);
  EXPECT_EQ(q.format, WeightFormat::kDense);
  EXPECT_EQ(q.scale, nullptr);
  expect_error([&] { ckpt->weight("model.layers.0.self_attn.q_b_proj", 32, 128); },
               "expected a [32, 128] weight, found logical shape [128, 32]");

  // Expert slices point into the stacked tensors: gate = rows [0, I), up = rows [I, 2I) of gate_up_proj[e].
  const OwnedTensor& gate_up = *testing::find_tensor(tensors, "model.layers.3.mlp.experts.gate_up_proj");
  const OwnedTensor& down = *testing::find_tensor(tensors, "model.layers.3.mlp.experts.down_proj");
  const int64_t I = 32, D = 64;
  for (int64_t e : {0, 5, 7}) {
    const WeightRef gate = ckpt->expert_weight(3, e, "gate_proj");
    const WeightRef up = ckpt->expert_weight(3, e, "up_proj");
    const WeightRef dn = ckpt->expert_weight(3, e, "down_proj");
    EXPECT_EQ(gate.format, WeightFormat::kDense);
    EXPECT_EQ(gate.weight->shape, (Shape{I, D}));
    EXPECT_EQ(dn.weight->shape, (Shape{D, I}));
    EXPECT_EQ(dn.out, D);
    EXPECT_EQ(dn.in, I);
    const size_t expert_bytes = static_cast<size_t>(2 * I * D) * 4;
    EXPECT_EQ(std::memcmp(gate.weight->data, gate_up.bytes.data() + e * expert_bytes, I * D * 4), 0);
    EXPECT_EQ(std::memcmp(up.weight->data, gate_up.bytes.data() + e * expert_bytes + I * D * 4, I * D * 4), 0);
    EXPECT_EQ(std::memcmp(dn.weight->data, down.bytes.data() + e * D * I * 4, D * I * 4), 0);
  }
  expect_error([&] { ckpt->expert_weight(3, 8, "gate_proj"); }, "out of range");
  expect_error([&] { ckpt->expert_weight(3, 0, "w1"); }, "unknown part 'w1'");
}

TEST_F(CheckpointTest, StackedExpertsWithWrongShape) {
  std::vector<OwnedTensor> tensors = testing::tiny_transformers_tensors();
  *testing::find_tensor(tensors, "model.layers.2.mlp.experts.down_proj") =
      testing::make_tensor("model.layers.2.mlp.experts.down_proj", DType::F32, {8, 64, 16});
  testing::write_checkpoint(dir_, kConfigDir / "tiny-transformers.json", tensors);
  expect_error([&] { Checkpoint::open(dir_); }, "expected shape [8, 64, 32] from config.json, found [8, 64, 16]");
}

TEST_F(CheckpointTest, UpstreamShardedMxfp4) {
  const auto ckpt = write_and_open(testing::tiny_upstream_tensors(config_, ExpertStorage::kMxfp4), 3);
  EXPECT_EQ(ckpt->files().size(), 3u);
  const WeightRef expert = ckpt->expert_weight(4, 6, "down_proj");
  EXPECT_EQ(expert.format, WeightFormat::kMxfp4);
  EXPECT_EQ(expert.out, 64);
  EXPECT_EQ(expert.in, 32);
  EXPECT_EQ(expert.weight->dtype, DType::I8);
  EXPECT_EQ(expert.weight->name, "layers.4.ffn.experts.6.w2.weight");
  EXPECT_EQ(expert.scale->shape, (Shape{64, 1}));
  EXPECT_EQ(expert.global_scale, nullptr);
  const WeightRef wq_b = ckpt->weight("model.layers.1.self_attn.q_b_proj", 128, 32);
  EXPECT_EQ(wq_b.format, WeightFormat::kFp8Block);
  EXPECT_EQ(wq_b.scale->dtype, DType::F8_E8M0);
  EXPECT_EQ(wq_b.scale->shape, (Shape{1, 1}));
  const WeightRef weights_proj = ckpt->weight("model.layers.1.self_attn.compressor.indexer.scorer.weights_proj", 8, 64);
  EXPECT_EQ(weights_proj.format, WeightFormat::kDense);
  EXPECT_TRUE(ckpt->has("model.layers.0.mlp.gate.tid2eid"));
  EXPECT_TRUE(ckpt->has("model.layers.2.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(ckpt->has("lm_head.weight"));
}

TEST_F(CheckpointTest, UpstreamNvfp4WithF32BlockScales) {
  const auto ckpt = write_and_open(testing::tiny_upstream_tensors(config_, ExpertStorage::kNvfp4, DType::F32), 2);
  const WeightRef expert = ckpt->expert_weight(0, 3, "gate_proj");
  EXPECT_EQ(expert.format, WeightFormat::kNvfp4);
  EXPECT_EQ(expert.out, 32);
  EXPECT_EQ(expert.in, 64);
  EXPECT_EQ(expert.scale->shape, (Shape{32, 4}));
  ASSERT_NE(expert.global_scale, nullptr);
  ASSERT_NE(expert.input_scale, nullptr);
  EXPECT_EQ(expert.global_scale->shape, Shape{});
  const WeightRef shared = ckpt->weight("model.layers.2.mlp.shared_experts.down_proj", 64, 32);
  EXPECT_EQ(shared.format, WeightFormat::kFp8Block);
  EXPECT_EQ(shared.scale->dtype, DType::F32);
  EXPECT_EQ(weight_format_name(WeightFormat::kNvfp4), "nvfp4");
  EXPECT_EQ(weight_format_name(WeightFormat::kFp8Block), "fp8-block");
}

TEST_F(CheckpointTest, CompanionErrors) {
  const auto base = testing::tiny_upstream_tensors(config_, ExpertStorage::kNvfp4);
  const std::string e = "layers.2.ffn.experts.1.w1.";
  auto with = [&](const std::string& name, DType dtype, Shape shape) {
    auto tensors = base;
    *testing::find_tensor(tensors, name) = testing::make_tensor(name, dtype, std::move(shape));
    return tensors;
  };
  auto without = [&](const std::string& name) {
    auto tensors = base;
    testing::erase_tensor(tensors, name);
    return tensors;
  };
  auto check = [&](const std::vector<OwnedTensor>& tensors, const std::string& needle) {
    const auto ckpt = write_and_open(tensors);
    expect_error([&] { ckpt->expert_weight(2, 1, "gate_proj"); }, needle);
    std::filesystem::remove_all(dir_);
  };
  check(with(e + "weight_scale", DType::F8_E4M3, {32, 2}),
        "NVFP4 block scale of a [32, 32] packed weight must have shape [32, 4], found [32, 2]");
  check(with(e + "weight_scale", DType::F8_E8M0, {32, 4}), "NVFP4 block scale must be F8_E4M3, found F8_E8M0");
  check(without(e + "weight_scale_2"), "NVFP4 weight without its global scale");
  check(with(e + "weight_scale_2", DType::F32, {1}), "NVFP4 global scale must be a F32 scalar [], found F32 [1]");
  check(with(e + "input_scale", DType::BF16, {}), "NVFP4 input scale must be a F32 scalar []");
  check(with(e + "weight", DType::I8, {32, 32}), "NVFP4 packed weight must be U8, found I8");
  check(with(e + "weight", DType::U8, {32, 16}),
        "NVFP4 block scale of a [32, 16] packed weight must have shape [32, 2], found [32, 4]");
  {
    const auto ckpt = write_and_open(base);
    expect_error([&] { ckpt->weight("model.layers.2.mlp.experts.1.gate_proj", 64, 64); },
                 "expected a [64, 64] weight, found logical shape [32, 64] (nvfp4, stored U8 [32, 32])");
    std::filesystem::remove_all(dir_);
  }
  check(without(e + "weight_scale"), "packed FP4 weight without a block scale");
  check(with(e + "weight", DType::I32, {32, 32}), "dtype I32 is not a linear weight format");

  auto mx = testing::tiny_upstream_tensors(config_, ExpertStorage::kMxfp4);
  *testing::find_tensor(mx, e + "scale") = testing::make_tensor(e + "scale", DType::F32, {32, 2});
  check(mx, "MXFP4 block scale must be F8_E8M0, found F32");
  *testing::find_tensor(mx, e + "scale") = testing::make_tensor(e + "scale", DType::F8_E8M0, {32, 4});
  check(mx, "MXFP4 block scale of a [32, 32] packed weight must have shape [32, 2], found [32, 4]");

  // FP8: scale shape is [ceil(out/128), ceil(in/128)].
  auto fp8 = base;
  *testing::find_tensor(fp8, "layers.0.attn.wq_b.scale") =
      testing::make_tensor("layers.0.attn.wq_b.scale", DType::F8_E8M0, {2, 1});
  auto ckpt = write_and_open(fp8);
  expect_error([&] { ckpt->weight("model.layers.0.self_attn.q_b_proj", 128, 32); },
               "model.safetensors: tensor 'layers.0.attn.wq_b.scale': FP8 block scale of a [128, 32] weight must have "
               "shape [1, 1] (one per 128x128 tile), found [2, 1]");
  ckpt.reset();
  std::filesystem::remove_all(dir_);
  *testing::find_tensor(fp8, "layers.0.attn.wq_b.scale") =
      testing::make_tensor("layers.0.attn.wq_b.scale", DType::BF16, {1, 1});
  ckpt = write_and_open(fp8);
  expect_error([&] { ckpt->weight("model.layers.0.self_attn.q_b_proj", 128, 32); },
               "FP8 block scale must be F32 or F8_E8M0, found BF16");
  ckpt.reset();
  std::filesystem::remove_all(dir_);
  testing::erase_tensor(fp8, "layers.0.attn.wq_b.scale");
  ckpt = write_and_open(fp8);
  expect_error([&] { ckpt->weight("model.layers.0.self_attn.q_b_proj", 128, 32); },
               "FP8 weight without its block scale 'model.layers.0.self_attn.q_b_proj.weight_scale_inv'");
}

TEST_F(CheckpointTest, ShardIndexErrors) {
  const auto tensors = testing::tiny_upstream_tensors(config_, ExpertStorage::kMxfp4);
  testing::write_checkpoint(dir_, kConfigDir / "tiny-upstream.json", tensors, 2);
  std::filesystem::remove(dir_ / "model-00002-of-00002.safetensors");
  expect_error([&] { Checkpoint::open(dir_); },
               "model.safetensors.index.json: shard 'model-00002-of-00002.safetensors' (listed for tensor '");

  std::filesystem::remove_all(dir_);
  testing::write_checkpoint(dir_, kConfigDir / "tiny-upstream.json", tensors, 2);
  auto index = testing::read_json_file(dir_ / "model.safetensors.index.json");
  index["weight_map"]["layers.0.attn.ghost.weight"] = "model-00001-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  expect_error([&] { Checkpoint::open(dir_); },
               "tensor 'layers.0.attn.ghost.weight' is listed in shard 'model-00001-of-00002.safetensors' but " +
                   (dir_ / "model-00001-of-00002.safetensors").string() + " does not contain it");

  index["weight_map"]["layers.0.attn.ghost.weight"] = "../outside.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  expect_error([&] { Checkpoint::open(dir_); }, "which is not a file inside the checkpoint directory");

  std::ofstream(dir_ / "model.safetensors.index.json") << R"({"metadata": {}})";
  expect_error([&] { Checkpoint::open(dir_); }, "field 'weight_map' is missing");
}

TEST_F(CheckpointTest, DirectoryErrors) {
  expect_error([&] { Checkpoint::open(dir_ / "absent"); }, "absent: not a directory");
  std::filesystem::create_directories(dir_);
  std::filesystem::copy_file(kConfigDir / "tiny-upstream.json", dir_ / "config.json");
  expect_error([&] { Checkpoint::open(dir_); }, "neither model.safetensors nor model.safetensors.index.json found");
  std::filesystem::remove(dir_ / "config.json");
  expect_error([&] { Checkpoint::open(dir_); }, "config.json: cannot open");
}

TEST_F(CheckpointTest, TwoNamesForOneTensor) {
  auto tensors = testing::tiny_upstream_tensors(config_, ExpertStorage::kMxfp4);
  tensors.push_back(testing::make_tensor("model.norm.weight", DType::BF16, {64}));
  expect_open_error(tensors, "both resolve to tensor 'model.norm.weight'");
}

}  // namespace
}  // namespace megamoe
