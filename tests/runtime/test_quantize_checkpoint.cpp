// `megamoe quantize` on the demo model against the official quantizers:
// tests/data/independent/demo_quant_reference.json holds a hash of every routed
// expert tensor as NVIDIA ModelOpt (NVFP4QTensor with the fused w1/w3 amax,
// MXFP4QTensor) and DeepSeek's FP8 block-128 rule in PyTorch write it
// (tools/make_demo_quant_goldens.py). Our bytes must be identical. Then the
// calibrated input_scale, the written checkpoint loading and running, and the
// errors for bad requests.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "model/deepseek_v4/model.hpp"
#include "runtime/expert_calibration.hpp"
#include "runtime/quantize_checkpoint.hpp"

namespace megamoe {
namespace {
namespace fs = std::filesystem;

const fs::path kDemo = fs::path(MEGAMOE_TEST_DATA_DIR) / ".." / ".." / "models" / "demo";

std::string fnv1a(const std::byte* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(data[i])) * 0x100000001b3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("megamoe_quantize_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Golden part names -> the tensors `megamoe quantize` writes for a transformers-named input.
std::vector<std::pair<std::string, std::string>> parts_of(const std::string& format) {
  if (format == "nvfp4") return {{"weight", "weight"}, {"weight_scale", "weight_scale"}, {"weight_scale_2", "weight_scale_2"}};
  return {{"weight", "weight"}, {"scale", "weight_scale_inv"}};
}

class QuantizeMatchesReference : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantizeMatchesReference, ExpertBytesIdentical) {
  const std::string format = GetParam();
  std::ifstream in(fs::path(MEGAMOE_TEST_DATA_DIR) / "independent" / "demo_quant_reference.json");
  const nlohmann::json golden = nlohmann::json::parse(in)["tensors"];
  TempDir out(format);
  QuantizeOptions options;
  options.format = parse_quantize_format(format);
  quantize_checkpoint(kDemo, out.path, options);
  const auto file = SafetensorsFile::open(out.path / "model.safetensors");
  const ModelConfig config = Checkpoint::open(kDemo)->config();
  const char* parts[3] = {"gate_proj", "up_proj", "down_proj"};
  int64_t compared = 0, mismatched = 0;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (int64_t e = 0; e < config.n_routed_experts; ++e) {
      for (int i = 0; i < 3; ++i) {
        for (const auto& [golden_part, suffix] : parts_of(format)) {
          const std::string key = std::to_string(l) + "." + std::to_string(e) + ".w" + "132"[i] + "." + format + "." + golden_part;
          const std::string name = "model.layers." + std::to_string(l) + ".mlp.experts." + std::to_string(e) + "." +
                                   parts[i] + "." + suffix;
          ASSERT_TRUE(golden.contains(key)) << key;
          const auto it = file->tensors().find(name);
          ASSERT_NE(it, file->tensors().end()) << name;
          EXPECT_EQ(it->second.shape, golden[key]["shape"].get<Shape>()) << name;
          const bool same = fnv1a(it->second.data, it->second.nbytes) == golden[key]["fnv1a"].get<std::string>();
          EXPECT_TRUE(same) << name << " differs from the reference " << key;
          ++compared;
          mismatched += same ? 0 : 1;
        }
      }
    }
  }
  EXPECT_EQ(compared, config.num_layers * config.n_routed_experts * 3 * static_cast<int64_t>(parts_of(format).size()));
  EXPECT_EQ(mismatched, 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizeMatchesReference, ::testing::Values("nvfp4", "mxfp4", "fp8"));

std::vector<std::vector<int32_t>> calibration_windows() {
  std::vector<std::vector<int32_t>> windows(2);
  for (int32_t t = 0; t < 96; ++t) {  // BOS, then ids spread over the vocabulary
    windows[0].push_back(t == 0 ? 0 : (t * 37 + 11) % 4096);
    windows[1].push_back(t == 0 ? 0 : (t * 101 + 5) % 4096);
  }
  return windows;
}

TEST(QuantizeCheckpoint, CalibratedInputScaleIsAmaxOver2688) {
  TempDir out("calib");
  QuantizeOptions options;
  options.calibration = calibration_windows();
  quantize_checkpoint(kDemo, out.path, options);
  const std::vector<LayerActivationAmax> amax =
      calibrate_expert_activations(*Checkpoint::open(kDemo), options.calibration, DeviceKind::kCpu);
  const auto ckpt = Checkpoint::open(out.path);
  const ModelConfig& c = ckpt->config();
  ASSERT_EQ(static_cast<int64_t>(amax.size()), c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    float layer_max_in = 0.0f, layer_max_hidden = 0.0f;
    int64_t routed = 0;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      routed += amax[l].tokens[e];
      if (amax[l].tokens[e] > 0) {
        layer_max_in = std::max(layer_max_in, amax[l].input[e]);
        layer_max_hidden = std::max(layer_max_hidden, amax[l].hidden[e]);
      }
    }
    EXPECT_EQ(routed, 2 * 96 * c.num_experts_per_tok) << "layer " << l;  // every token reaches top_k experts
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const WeightRef w1 = ckpt->expert_weight(l, e, "gate_proj"), w3 = ckpt->expert_weight(l, e, "up_proj"),
                      w2 = ckpt->expert_weight(l, e, "down_proj");
      ASSERT_EQ(w1.format, WeightFormat::kNvfp4);
      ASSERT_TRUE(w1.input_scale && w3.input_scale && w2.input_scale);
      float s1, s3, s2;
      std::memcpy(&s1, w1.input_scale->data, 4);
      std::memcpy(&s3, w3.input_scale->data, 4);
      std::memcpy(&s2, w2.input_scale->data, 4);
      EXPECT_EQ(s1, s3) << "w1 and w3 share their input";
      EXPECT_EQ(s1, amax[l].input[e] / 2688.0f);
      EXPECT_EQ(s2, amax[l].hidden[e] / 2688.0f);
      EXPECT_GT(s1, 0.0f);
      EXPECT_GT(s2, 0.0f);
      if (amax[l].tokens[e] == 0) {  // ModelOpt ptq.py's fallback: the layer's largest calibrated amax
        EXPECT_EQ(amax[l].input[e], layer_max_in);
        EXPECT_EQ(amax[l].hidden[e], layer_max_hidden);
      }
    }
  }
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(out.path / "config.json"));
  EXPECT_EQ(config["quantization_config"]["moe_quant_algo"], "NVFP4");
  EXPECT_EQ(config["quantization_config"]["quant_algo"], "MIXED_PRECISION");
  EXPECT_TRUE(fs::exists(out.path / "hf_quant_config.json"));
  EXPECT_TRUE(fs::exists(out.path / "tokenizer.json"));  // other files travel along
}

TEST(QuantizeCheckpoint, WrittenCheckpointsLoadAndStayClose) {
  const std::vector<int32_t> ids = calibration_windows()[0];
  dsv4::ModelOptions cpu;
  const auto reference = dsv4::Model::load(kDemo, cpu);
  dsv4::SequenceState ref_state = reference->new_sequence();
  const std::vector<float> ref = reference->forward(ids, ref_state, {.last_logits_only = true});
  for (const char* format : {"nvfp4", "mxfp4", "fp8"}) {
    for (bool dense_fp8 : {false, true}) {
      TempDir out(std::string(format) + (dense_fp8 ? "_dense" : ""));
      QuantizeOptions options;
      options.format = parse_quantize_format(format);
      options.dense_fp8 = dense_fp8;
      const QuantizeSummary s = quantize_checkpoint(kDemo, out.path, options);
      EXPECT_EQ(s.experts, 6 * 8 * 3);
      EXPECT_EQ(s.dense > 0, dense_fp8);
      EXPECT_LT(s.bytes_out, s.bytes_in);
      const auto model = dsv4::Model::load(out.path, cpu);
      dsv4::SequenceState state = model->new_sequence();
      const std::vector<float> logits = model->forward(ids, state, {.last_logits_only = true});
      ASSERT_EQ(logits.size(), ref.size());
      double err = 0, norm = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_TRUE(std::isfinite(logits[i]));
        err += (logits[i] - ref[i]) * (logits[i] - ref[i]);
        norm += ref[i] * ref[i];
      }
      // Quantization noise, not breakage: a wrong scale or layout gives O(1).
      EXPECT_LT(std::sqrt(err / norm), 0.25) << format << (dense_fp8 ? " + dense fp8" : "");
    }
  }
}

TEST(QuantizeCheckpoint, RejectsBadRequests) {
  TempDir out("bad");
  EXPECT_THROW(parse_quantize_format("int4"), Error);
  // Experts already quantized.
  try {
    quantize_checkpoint(fs::path(MEGAMOE_TEST_DATA_DIR) / "tiny-a-nvfp4", out.path, {});
    ADD_FAILURE() << "quantized an NVFP4 checkpoint again";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already nvfp4"), std::string::npos) << e.what();
  }
  fs::remove_all(out.path);
  EXPECT_THROW(quantize_checkpoint(kDemo, kDemo, {}), Error);  // in place
  quantize_checkpoint(kDemo, out.path, {});
  EXPECT_THROW(quantize_checkpoint(kDemo, out.path, {}), Error);  // would overwrite a checkpoint
  QuantizeOptions calib_mx;
  calib_mx.format = QuantizeFormat::kMxfp4;
  calib_mx.calibration = calibration_windows();
  EXPECT_THROW(quantize_checkpoint(kDemo, out.path / "mx", calib_mx), Error);  // input_scale is NVFP4's
}

}  // namespace
}  // namespace megamoe
