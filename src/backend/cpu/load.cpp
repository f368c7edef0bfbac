#include "backend/cpu/load.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/block_quant.hpp"
#include "core/error.hpp"
#include "core/float_formats.hpp"

namespace megamoe::cpu {
namespace {

const uint8_t* bytes(const TensorView& view) { return reinterpret_cast<const uint8_t*>(view.data); }

void check_numel(const TensorView& view, int64_t expected, const char* what) {
  MEGAMOE_CHECK(view.numel() == expected, "tensor ", view.name, " (", what, ") has shape ", shape_str(view.shape),
                ": expected ", expected, " elements");
}

}  // namespace

Tensor to_f32(const TensorView& view) {
  Tensor out(DType::F32, view.shape);
  float* dst = out.data<float>();
  const int64_t n = view.numel();
  switch (view.dtype) {
    case DType::F32:
      std::memcpy(dst, view.data, static_cast<size_t>(n) * sizeof(float));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, view.data + 2 * i, 2);
        dst[i] = bf16_to_f32(bits);
      }
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, view.data + 2 * i, 2);
        dst[i] = f16_to_f32(bits);
      }
      break;
    default:
      MEGAMOE_THROW("tensor ", view.name, " has dtype ", dtype_name(view.dtype),
                    ": expected a dense float tensor (F32, BF16 or F16)");
  }
  return out;
}

Tensor dequantize_weight(const WeightRef& ref) {
  MEGAMOE_CHECK(ref.weight != nullptr, "weight ", ref.name, " has no data");
  const int64_t rows = ref.out, cols = ref.in;
  Tensor out(DType::F32, {rows, cols});
  float* dst = out.data<float>();
  switch (ref.format) {
    case WeightFormat::kDense: {
      check_numel(*ref.weight, rows * cols, "weight");
      Tensor dense = to_f32(*ref.weight);
      std::memcpy(dst, dense.raw(), dense.nbytes());
      break;
    }
    case WeightFormat::kFp8Block: {
      MEGAMOE_CHECK(ref.scale != nullptr, "FP8 weight ", ref.name, " has no block scale");
      check_numel(*ref.weight, rows * cols, "FP8 values");
      const int64_t tiles = ((rows + kFp8BlockSize - 1) / kFp8BlockSize) * ((cols + kFp8BlockSize - 1) / kFp8BlockSize);
      check_numel(*ref.scale, tiles, "FP8 block scales");
      ScaleEncoding encoding;
      if (ref.scale->dtype == DType::F32) {
        encoding = ScaleEncoding::kF32;
      } else if (ref.scale->dtype == DType::F8_E8M0) {
        encoding = ScaleEncoding::kE8M0;
      } else {
        MEGAMOE_THROW("FP8 block scale ", ref.scale->name, " has dtype ", dtype_name(ref.scale->dtype),
                      ": expected F32 or F8_E8M0");
      }
      dequantize_fp8_block(bytes(*ref.weight), ref.scale->data, encoding, rows, cols, dst);
      break;
    }
    case WeightFormat::kMxfp4: {
      MEGAMOE_CHECK(ref.scale != nullptr, "MXFP4 weight ", ref.name, " has no scale");
      check_numel(*ref.weight, rows * cols / 2, "packed E2M1");
      check_numel(*ref.scale, rows * cols / kMxfp4BlockSize, "E8M0 scales");
      dequantize_mxfp4(bytes(*ref.weight), bytes(*ref.scale), rows, cols, dst);
      break;
    }
    case WeightFormat::kNvfp4: {
      MEGAMOE_CHECK(ref.scale != nullptr && ref.global_scale != nullptr, "NVFP4 weight ", ref.name,
                    " needs weight_scale and weight_scale_2");
      check_numel(*ref.weight, rows * cols / 2, "packed E2M1");
      check_numel(*ref.scale, rows * cols / kNvfp4BlockSize, "E4M3 block scales");
      check_numel(*ref.global_scale, 1, "weight_scale_2");
      const Tensor global = to_f32(*ref.global_scale);
      dequantize_nvfp4(bytes(*ref.weight), bytes(*ref.scale), global.data<float>()[0], rows, cols, dst);
      break;
    }
  }
  return out;
}

std::vector<int32_t> to_index_table(const TensorView& view, int64_t limit) {
  const int64_t n = view.numel();
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t v;
    if (view.dtype == DType::I64) {
      std::memcpy(&v, view.data + 8 * i, 8);
    } else if (view.dtype == DType::I32) {
      int32_t v32;
      std::memcpy(&v32, view.data + 4 * i, 4);
      v = v32;
    } else {
      MEGAMOE_THROW("tensor ", view.name, " has dtype ", dtype_name(view.dtype), ": expected I64 or I32");
    }
    MEGAMOE_CHECK(v >= 0 && v < limit, "tensor ", view.name, " holds ", v, " at index ", i,
                  ": expected values in [0, ", limit, ")");
    out[static_cast<size_t>(i)] = static_cast<int32_t>(v);
  }
  return out;
}

namespace {

// The input_scale of each expert's `which` weight: E values, or none when no expert has one.
std::vector<float> expert_input_scale(const Checkpoint& checkpoint, int64_t layer, const std::string& which) {
  const int64_t experts = checkpoint.config().n_routed_experts;
  std::vector<float> scales;
  int64_t missing = 0;
  std::string first_missing, first_present;
  for (int64_t e = 0; e < experts; ++e) {
    const WeightRef ref = checkpoint.expert_weight(layer, e, which);
    MEGAMOE_CHECK(ref.format == WeightFormat::kNvfp4, "W4A4 needs NVFP4 routed experts: ", ref.name, " is ",
                  ref.format == WeightFormat::kDense ? dtype_name(ref.weight->dtype) : weight_format_name(ref.format),
                  " (W4A4 quantizes the activations of NVFP4 x NVFP4 GEMMs; ",
                  "run this checkpoint in W4A16)");
    if (ref.input_scale == nullptr) {
      if (missing++ == 0) first_missing = ref.name;
      continue;
    }
    float value = 0.0f;
    std::memcpy(&value, ref.input_scale->data, sizeof value);
    MEGAMOE_CHECK(std::isfinite(value) && value > 0.0f, ref.name, ".input_scale = ", value,
                  " is not a finite positive scale");
    if (first_present.empty()) first_present = ref.name;
    scales.push_back(value);
  }
  MEGAMOE_CHECK(missing == 0 || missing == experts, "layer ", layer, ": ", first_present, " has an input_scale but ",
                first_missing, " (and ", missing - 1, " more) has none; W4A4 takes static scales for all ",
                "experts of a layer or for none");
  return scales;
}

}  // namespace

ExpertInputScales read_expert_input_scales(const Checkpoint& checkpoint, int64_t layer) {
  ExpertInputScales s;
  s.w13 = expert_input_scale(checkpoint, layer, "gate_proj");
  const std::vector<float> w3 = expert_input_scale(checkpoint, layer, "up_proj");
  MEGAMOE_CHECK(s.w13.size() == w3.size(), "layer ", layer, ": the routed experts' ",
                s.w13.empty() ? "up_proj" : "gate_proj", " weights have input_scale tensors and their ",
                s.w13.empty() ? "gate_proj" : "up_proj", " weights none; both GEMMs read the same input, so W4A4 ",
                "needs one scale for both");
  for (std::size_t e = 0; e < w3.size(); ++e)
    MEGAMOE_CHECK(s.w13[e] == w3[e], "layer ", layer, " expert ", e, ": gate_proj.input_scale ", s.w13[e],
                  " != up_proj.input_scale ", w3[e], "; both GEMMs read the same input, so W4A4 needs one scale ",
                  "(ModelOpt exports them equal)");
  s.w2 = expert_input_scale(checkpoint, layer, "down_proj");
  return s;
}

}  // namespace megamoe::cpu
