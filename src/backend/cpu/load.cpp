#include "backend/cpu/load.hpp"

#include <cstring>
#include <limits>

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

}  // namespace megamoe::cpu
