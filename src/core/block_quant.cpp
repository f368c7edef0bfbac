#include "core/block_quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/error.hpp"
#include "core/float_formats.hpp"

namespace megamoe {
namespace {

constexpr float kMinBlockScale = 0x1p-9f;  // smallest E4M3 subnormal
constexpr float kMaxBlockScale = 448.0f;   // largest finite E4M3

void check_shape(const char* fn, int64_t rows, int64_t cols, int64_t col_multiple) {
  MEGAMOE_CHECK(rows >= 0 && cols >= 0, fn, ": negative shape [", rows, ", ", cols, "]");
  MEGAMOE_CHECK(rows == 0 || cols <= INT64_MAX / rows, fn, ": shape [", rows, ", ", cols, "] overflows");
  MEGAMOE_CHECK(cols % col_multiple == 0, fn, ": cols = ", cols, " is not a multiple of ",
                col_multiple);
}

void check_pointer(const char* fn, const void* p, const char* name, int64_t count) {
  MEGAMOE_CHECK(count == 0 || p != nullptr, fn, ": ", name, " is null");
}

float abs_max(const char* fn, const float* x, int64_t count) {
  float amax = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    MEGAMOE_CHECK(std::isfinite(x[i]), fn, ": element ", i, " is not finite (", x[i], ")");
    amax = std::max(amax, std::fabs(x[i]));
  }
  return amax;
}

// The ModelOpt op order shared by weights and activations; s2 already validated.
Nvfp4Tensor quantize_nvfp4_with_global_scale(const float* x, int64_t rows, int64_t cols, float s2) {
  Nvfp4Tensor q;
  q.rows = rows;
  q.cols = cols;
  q.global_scale = s2;
  const int64_t blocks_per_row = cols / kNvfp4BlockSize;
  q.packed.assign(static_cast<size_t>(rows * cols / 2), 0);
  q.block_scales.assign(static_cast<size_t>(rows * blocks_per_row), 0);
  const float c = 6.0f * s2;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t blk = 0; blk < blocks_per_row; ++blk) {
      const float* xb = x + r * cols + blk * kNvfp4BlockSize;
      float block_amax = 0.0f;
      for (int64_t i = 0; i < kNvfp4BlockSize; ++i) block_amax = std::max(block_amax, std::fabs(xb[i]));
      float t = block_amax / c;
      if (t == 0.0f) t = 1.0f;  // all-zero block -> scale 1.0 (0x38)
      t = std::clamp(t, kMinBlockScale, kMaxBlockScale);
      const uint8_t scale_byte = f32_to_e4m3(t);
      q.block_scales[static_cast<size_t>(r * blocks_per_row + blk)] = scale_byte;
      const float d = e4m3_to_f32(scale_byte) * s2;
      uint8_t* out = q.packed.data() + r * (cols / 2) + blk * (kNvfp4BlockSize / 2);
      for (int64_t i = 0; i < kNvfp4BlockSize; i += 2) {
        const uint8_t even = f32_to_e2m1(xb[i] / d);
        const uint8_t odd = f32_to_e2m1(xb[i + 1] / d);
        out[i / 2] = static_cast<uint8_t>(even | (odd << 4));
      }
    }
  }
  return q;
}

float global_scale_from_amax(const char* fn, float amax) {
  MEGAMOE_CHECK(std::isfinite(amax) && amax > 0.0f, fn, ": amax must be finite and > 0, got ",
                amax, " (ModelOpt would emit NaN block scales)");
  const float s2 = amax / kNvfp4AmaxDivisor;
  MEGAMOE_CHECK(s2 > 0.0f, fn, ": amax ", amax, " is so small that amax/2688 underflows to 0");
  return s2;
}

bool nibbles_all_zero(const uint8_t* bytes, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    if ((bytes[i] & 0x77u) != 0) return false;  // codes 0x0 and 0x8 are +-0
  }
  return true;
}

bool is_e4m3_nan(uint8_t b) { return (b & 0x7Fu) == 0x7Fu; }

}  // namespace

Nvfp4Tensor quantize_nvfp4_weight(const float* w, int64_t rows, int64_t cols,
                                  std::optional<float> amax) {
  const char* fn = "quantize_nvfp4_weight";
  check_shape(fn, rows, cols, kNvfp4BlockSize);
  check_pointer(fn, w, "weights", rows * cols);
  const float tensor_amax = abs_max(fn, w, rows * cols);
  const float s2 = global_scale_from_amax(fn, amax.value_or(tensor_amax));
  return quantize_nvfp4_with_global_scale(w, rows, cols, s2);
}

Nvfp4Tensor quantize_nvfp4_activation(const float* x, int64_t rows, int64_t cols,
                                      std::optional<float> global_scale) {
  const char* fn = "quantize_nvfp4_activation";
  check_shape(fn, rows, cols, kNvfp4BlockSize);
  check_pointer(fn, x, "activations", rows * cols);
  const float tensor_amax = abs_max(fn, x, rows * cols);
  float s2;
  if (global_scale) {
    s2 = *global_scale;
    MEGAMOE_CHECK(std::isfinite(s2) && s2 > 0.0f, fn, ": global scale must be finite and > 0, got ", s2);
  } else {
    s2 = global_scale_from_amax(fn, tensor_amax);
  }
  return quantize_nvfp4_with_global_scale(x, rows, cols, s2);
}

Mxfp4Tensor quantize_mxfp4_weight(const float* w, int64_t rows, int64_t cols) {
  const char* fn = "quantize_mxfp4_weight";
  check_shape(fn, rows, cols, kMxfp4BlockSize);
  check_pointer(fn, w, "weights", rows * cols);
  abs_max(fn, w, rows * cols);  // finiteness
  static constexpr float kBounds[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  Mxfp4Tensor q{rows, cols, std::vector<uint8_t>(static_cast<size_t>(rows * cols / 2)),
                std::vector<uint8_t>(static_cast<size_t>(rows * cols / kMxfp4BlockSize))};
  for (int64_t b = 0; b < rows * cols / kMxfp4BlockSize; ++b) {
    const float* x = w + b * kMxfp4BlockSize;
    float amax = 0.0f;
    for (int64_t i = 0; i < kMxfp4BlockSize; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float e = std::ceil(std::max(std::log2(amax / 6.0f), -127.0f));
    q.scales[static_cast<size_t>(b)] = static_cast<uint8_t>(static_cast<int>(e) + 127);
    const float step = std::exp2(e);
    for (int64_t i = 0; i < kMxfp4BlockSize; ++i) {
      const float y = x[i] / step;
      uint8_t code = x[i] > 0.0f ? 0 : 8;
      for (float bound : kBounds) code += std::fabs(y) > bound ? 1 : 0;
      uint8_t& byte = q.packed[static_cast<size_t>((b * kMxfp4BlockSize + i) / 2)];
      byte = static_cast<uint8_t>(i % 2 == 0 ? code : byte | (code << 4));
    }
  }
  return q;
}

Fp8BlockTensor quantize_fp8_block_weight(const float* w, int64_t rows, int64_t cols) {
  const char* fn = "quantize_fp8_block_weight";
  check_shape(fn, rows, cols, 1);
  check_pointer(fn, w, "weights", rows * cols);
  abs_max(fn, w, rows * cols);  // finiteness
  const int64_t tile_rows = (rows + kFp8BlockSize - 1) / kFp8BlockSize;
  const int64_t tile_cols = (cols + kFp8BlockSize - 1) / kFp8BlockSize;
  Fp8BlockTensor q{rows, cols, std::vector<uint8_t>(static_cast<size_t>(rows * cols)),
                   std::vector<uint8_t>(static_cast<size_t>(tile_rows * tile_cols))};
  for (int64_t tr = 0; tr < tile_rows; ++tr) {
    for (int64_t tc = 0; tc < tile_cols; ++tc) {
      const int64_t r0 = tr * kFp8BlockSize, r1 = std::min(rows, r0 + kFp8BlockSize);
      const int64_t c0 = tc * kFp8BlockSize, c1 = std::min(cols, c0 + kFp8BlockSize);
      float amax = 1e-4f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      int exponent = 0;
      const float mantissa = std::frexp(amax / 448.0f, &exponent);  // quotient = mantissa * 2^exponent
      const int e = mantissa == 0.5f ? exponent - 1 : exponent;      // the exact ceil(log2(quotient))
      MEGAMOE_CHECK(e >= -127 && e <= 127, fn, ": tile [", tr, ", ", tc, "] scale 2^", e, " is outside E8M0");
      q.scales[static_cast<size_t>(tr * tile_cols + tc)] = static_cast<uint8_t>(e + 127);
      const float inverse = std::ldexp(1.0f, -e);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) q.values[static_cast<size_t>(r * cols + c)] = f32_to_e4m3(w[r * cols + c] * inverse);
    }
  }
  return q;
}

void dequantize_nvfp4(const uint8_t* packed, const uint8_t* block_scales_e4m3, float global_scale,
                      int64_t rows, int64_t cols, float* out) {
  const char* fn = "dequantize_nvfp4";
  check_shape(fn, rows, cols, kNvfp4BlockSize);
  check_pointer(fn, packed, "packed", rows * cols);
  check_pointer(fn, block_scales_e4m3, "block_scales", rows * cols);
  check_pointer(fn, out, "out", rows * cols);
  MEGAMOE_CHECK(std::isfinite(global_scale), fn, ": global scale is not finite (", global_scale, ")");
  // ModelOpt's e2m1 value table: code 0x8 is +0 there.
  static constexpr float kValue[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, 0, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  const int64_t blocks_per_row = cols / kNvfp4BlockSize;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t blk = 0; blk < blocks_per_row; ++blk) {
      const uint8_t* bytes = packed + r * (cols / 2) + blk * (kNvfp4BlockSize / 2);
      float* o = out + r * cols + blk * kNvfp4BlockSize;
      const uint8_t scale_byte = block_scales_e4m3[r * blocks_per_row + blk];
      if (is_e4m3_nan(scale_byte)) {
        MEGAMOE_CHECK(nibbles_all_zero(bytes, kNvfp4BlockSize / 2), fn, ": NaN block scale byte 0x",
                      std::hex, static_cast<int>(scale_byte), std::dec, " at row ", r, ", block ", blk,
                      " over non-zero FP4 codes");
        std::fill(o, o + kNvfp4BlockSize, 0.0f);
        continue;
      }
      const float p = e4m3_to_f32(scale_byte) * global_scale;
      for (int64_t i = 0; i < kNvfp4BlockSize / 2; ++i) {
        o[2 * i] = kValue[bytes[i] & 0xF] * p;
        o[2 * i + 1] = kValue[bytes[i] >> 4] * p;
      }
    }
  }
}

void dequantize_mxfp4(const uint8_t* packed, const uint8_t* scales_e8m0, int64_t rows, int64_t cols,
                      float* out) {
  const char* fn = "dequantize_mxfp4";
  check_shape(fn, rows, cols, kMxfp4BlockSize);
  check_pointer(fn, packed, "packed", rows * cols);
  check_pointer(fn, scales_e8m0, "scales", rows * cols);
  check_pointer(fn, out, "out", rows * cols);
  const int64_t blocks_per_row = cols / kMxfp4BlockSize;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t blk = 0; blk < blocks_per_row; ++blk) {
      const uint8_t* bytes = packed + r * (cols / 2) + blk * (kMxfp4BlockSize / 2);
      float* o = out + r * cols + blk * kMxfp4BlockSize;
      const uint8_t scale_byte = scales_e8m0[r * blocks_per_row + blk];
      if (scale_byte == 0xFF) {
        MEGAMOE_CHECK(nibbles_all_zero(bytes, kMxfp4BlockSize / 2), fn,
                      ": NaN E8M0 scale byte 0xff at row ", r, ", block ", blk, " over non-zero FP4 codes");
        std::fill(o, o + kMxfp4BlockSize, 0.0f);
        continue;
      }
      const float scale = e8m0_to_f32(scale_byte);
      for (int64_t i = 0; i < kMxfp4BlockSize / 2; ++i) {
        o[2 * i] = e2m1_to_f32(bytes[i] & 0xF) * scale;
        o[2 * i + 1] = e2m1_to_f32(bytes[i] >> 4) * scale;
      }
    }
  }
}

void dequantize_fp8_block(const uint8_t* values_e4m3, const void* scales,
                          ScaleEncoding scale_encoding, int64_t rows, int64_t cols, float* out) {
  const char* fn = "dequantize_fp8_block";
  check_shape(fn, rows, cols, 1);
  check_pointer(fn, values_e4m3, "values", rows * cols);
  check_pointer(fn, scales, "scales", rows * cols);
  check_pointer(fn, out, "out", rows * cols);
  const int64_t tile_rows = (rows + kFp8BlockSize - 1) / kFp8BlockSize;
  const int64_t tile_cols = (cols + kFp8BlockSize - 1) / kFp8BlockSize;
  std::vector<float> tile_scale(static_cast<size_t>(tile_rows * tile_cols));
  for (int64_t t = 0; t < tile_rows * tile_cols; ++t) {
    float s;
    if (scale_encoding == ScaleEncoding::kF32) {
      std::memcpy(&s, static_cast<const uint8_t*>(scales) + t * 4, 4);
    } else {
      s = e8m0_to_f32(static_cast<const uint8_t*>(scales)[t]);
    }
    MEGAMOE_CHECK(std::isfinite(s), fn, ": scale of tile [", t / tile_cols, ", ", t % tile_cols,
                  "] is not finite (", s, ")");
    tile_scale[static_cast<size_t>(t)] = s;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* scale_row = tile_scale.data() + (r / kFp8BlockSize) * tile_cols;
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t v = values_e4m3[r * cols + c];
      MEGAMOE_CHECK(!is_e4m3_nan(v), fn, ": NaN E4M3 value byte at [", r, ", ", c, "]");
      out[r * cols + c] = e4m3_to_f32(v) * scale_row[c / kFp8BlockSize];
    }
  }
}

}  // namespace megamoe
