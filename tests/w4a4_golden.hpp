// The independent W4A4 golden (tests/data/w4a4/golden.safetensors, written by
// tools/make_w4a4_goldens.py from NVIDIA ModelOpt's NVFP4 quantizers in the
// Blackwell deployments' op order): a small MoE layer in checkpoint layout
// (DeepSeek-native keys), its bf16 input, routing and fp32 outputs. Shared by
// the CPU test (tests/cpu/test_w4a4_golden.cpp) and the GPU test
// (tests/kernels/test_sm90_nvfp4_moe.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "backend/cpu/moe.hpp"
#include "core/block_quant.hpp"
#include "core/error.hpp"
#include "core/float_formats.hpp"
#include "core/safetensors.hpp"

namespace megamoe::testing {

struct W4a4Golden {
  int64_t T = 0, D = 0, I = 0, Is = 0, E = 0, k = 0;
  float routed_scaling = 0, swiglu_limit = 0;
  std::vector<uint16_t> x_bf16, gate_bf16, sw1_bf16, sw3_bf16, sw2_bf16;
  std::vector<float> x, gate, bias, sw1, sw3, sw2;  // fp32 values of the bf16 tensors
  std::vector<uint8_t> w1, w3, w2, s1, s3, s2;      // [E, ...] packed E2M1 / E4M3 bytes, experts in order
  std::vector<float> g1, g3, g2;                    // [E] weight_scale_2
  std::vector<float> in13, in2;                     // [E] input_scale of w1 (= w3's) and of w2
  std::vector<int32_t> topk_ids;                    // [T, k]
  std::vector<float> topk_weights, y, y_weight_before_quant;  // [T, k], [T, D], [T, D]
  std::vector<float> y_shared;                                // [T, D] the shared expert's part of y

  // Routed expert weights dequantized with the host codec (bit-exact with
  // ModelOpt's NVFP4QTensor.dequantize, tests/core/test_block_quant.cpp).
  std::vector<float> w1_f, w3_f, w2_f;

  cpu::MoeWeights cpu_weights() const {
    cpu::MoeWeights w;
    w.dims = cpu::MoeDims{D, I, E, k, Is, routed_scaling, swiglu_limit};
    w.gate = gate, w.bias = bias;
    w.w1 = w1_f, w.w3 = w3_f, w.w2 = w2_f;
    w.shared_w1 = sw1, w.shared_w3 = sw3, w.shared_w2 = sw2;
    w.input_scale_w13 = in13, w.input_scale_w2 = in2;
    return w;
  }
};

namespace w4a4_detail {

inline const TensorView& tensor(const SafetensorsFile& f, const std::string& name, DType dtype) {
  const auto it = f.tensors().find(name);
  MEGAMOE_CHECK(it != f.tensors().end(), f.path().string(), ": no tensor ", name);
  MEGAMOE_CHECK(it->second.dtype == dtype, f.path().string(), ": ", name, " has dtype ", dtype_name(it->second.dtype));
  return it->second;
}

template <typename T>
void append(const SafetensorsFile& f, const std::string& name, DType dtype, std::vector<T>& out) {
  const TensorView& v = tensor(f, name, dtype);
  const size_t old = out.size();
  out.resize(old + v.nbytes / sizeof(T));
  std::memcpy(out.data() + old, v.data, v.nbytes);
}

inline void bf16_tensor(const SafetensorsFile& f, const std::string& name, std::vector<uint16_t>& bits,
                        std::vector<float>& values) {
  append(f, name, DType::BF16, bits);
  values.resize(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = bf16_to_f32(bits[i]);
}

}  // namespace w4a4_detail

inline W4a4Golden load_w4a4_golden() {
  using namespace w4a4_detail;
  const auto f = SafetensorsFile::open(std::filesystem::path(MEGAMOE_TEST_DATA_DIR) / "w4a4/golden.safetensors");
  W4a4Golden g;
  const TensorView& x = tensor(*f, "x", DType::BF16);
  const TensorView& w1 = tensor(*f, "layers.0.ffn.experts.0.w1.weight", DType::U8);
  const TensorView& sw1 = tensor(*f, "layers.0.ffn.shared_experts.w1.weight", DType::BF16);
  const TensorView& ids = tensor(*f, "topk_ids", DType::I32);
  g.T = x.shape[0], g.D = x.shape[1], g.I = w1.shape[0], g.Is = sw1.shape[0], g.k = ids.shape[1];
  g.E = tensor(*f, "layers.0.ffn.gate.weight", DType::BF16).shape[0];
  g.routed_scaling = std::stof(f->metadata().at("routed_scaling_factor"));
  g.swiglu_limit = std::stof(f->metadata().at("swiglu_limit"));
  bf16_tensor(*f, "x", g.x_bf16, g.x);
  bf16_tensor(*f, "layers.0.ffn.gate.weight", g.gate_bf16, g.gate);
  append(*f, "layers.0.ffn.gate.bias", DType::F32, g.bias);
  bf16_tensor(*f, "layers.0.ffn.shared_experts.w1.weight", g.sw1_bf16, g.sw1);
  bf16_tensor(*f, "layers.0.ffn.shared_experts.w3.weight", g.sw3_bf16, g.sw3);
  bf16_tensor(*f, "layers.0.ffn.shared_experts.w2.weight", g.sw2_bf16, g.sw2);
  for (int64_t e = 0; e < g.E; ++e) {
    const std::string p = "layers.0.ffn.experts." + std::to_string(e) + ".";
    append(*f, p + "w1.weight", DType::U8, g.w1), append(*f, p + "w1.weight_scale", DType::F8_E4M3, g.s1);
    append(*f, p + "w3.weight", DType::U8, g.w3), append(*f, p + "w3.weight_scale", DType::F8_E4M3, g.s3);
    append(*f, p + "w2.weight", DType::U8, g.w2), append(*f, p + "w2.weight_scale", DType::F8_E4M3, g.s2);
    append(*f, p + "w1.weight_scale_2", DType::F32, g.g1), append(*f, p + "w3.weight_scale_2", DType::F32, g.g3);
    append(*f, p + "w2.weight_scale_2", DType::F32, g.g2);
    append(*f, p + "w1.input_scale", DType::F32, g.in13), append(*f, p + "w2.input_scale", DType::F32, g.in2);
    std::vector<float> w3_scale;
    append(*f, p + "w3.input_scale", DType::F32, w3_scale);
    MEGAMOE_CHECK(w3_scale[0] == g.in13.back(), "golden: w1/w3 input_scale differ for expert ", e);
  }
  append(*f, "topk_ids", DType::I32, g.topk_ids);
  append(*f, "topk_weights", DType::F32, g.topk_weights);
  append(*f, "y", DType::F32, g.y);
  append(*f, "y_weight_before_quant", DType::F32, g.y_weight_before_quant);
  append(*f, "y_shared", DType::F32, g.y_shared);
  MEGAMOE_CHECK(g.w1.size() == size_t(g.E * g.I * g.D / 2) && g.w2.size() == size_t(g.E * g.D * g.I / 2) &&
                    g.y.size() == size_t(g.T * g.D) && g.topk_weights.size() == size_t(g.T * g.k),
                "golden: inconsistent shapes");
  auto dequant = [&](const std::vector<uint8_t>& q, const std::vector<uint8_t>& s, const std::vector<float>& gs,
                     int64_t rows, int64_t cols, std::vector<float>& out) {
    out.resize(g.E * rows * cols);
    for (int64_t e = 0; e < g.E; ++e)
      dequantize_nvfp4(q.data() + e * rows * cols / 2, s.data() + e * rows * cols / kNvfp4BlockSize, gs[e], rows,
                       cols, out.data() + e * rows * cols);
  };
  dequant(g.w1, g.s1, g.g1, g.I, g.D, g.w1_f);
  dequant(g.w3, g.s3, g.g3, g.I, g.D, g.w3_f);
  dequant(g.w2, g.s2, g.g2, g.D, g.I, g.w2_f);
  return g;
}

// Distance of an output from the golden, in units of the golden's largest |y|.
struct GoldenError {
  double max_rel = 0;     // max |got - want| / max |want|
  double frac_over = 0;   // fraction of elements with |got - want| > tight * max |want|
};

inline GoldenError golden_error(const std::vector<float>& got, const std::vector<float>& want, double tight) {
  double scale = 0;
  for (float v : want) scale = std::max(scale, double(std::abs(v)));
  GoldenError r;
  size_t over = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(double(got[i]) - want[i]) / scale;
    r.max_rel = std::max(r.max_rel, d);
    if (d > tight) ++over;
  }
  r.frac_over = double(over) / double(want.size());
  return r;
}

}  // namespace megamoe::testing
