// Block-scaled 4-bit and 8-bit weight formats on the host: the NVIDIA ModelOpt
// NVFP4 quantizer (weights and activations) and the dequantizers for NVFP4,
// DeepSeek MXFP4 and DeepSeek FP8 block-128. Bit-exact against ModelOpt /
// PyTorch (tests/core/test_block_quant.cpp, vectors in tests/data/codecs/).
//
// Layout of every 4-bit tensor (logical [rows, cols] row-major, rows = output
// dim N, cols = input dim K): packed bytes [rows, cols/2], byte [r, j] holds
// element [r, 2j] in its LOW nibble and element [r, 2j+1] in its high nibble.
// Blocks run along cols inside one row: 16 elements per E4M3 scale (NVFP4),
// 32 per E8M0 scale (MXFP4). Scales are linear row-major [rows, cols/block]
// (never swizzled on disk). docs/formats.md has the full story.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace megamoe {

inline constexpr int64_t kNvfp4BlockSize = 16;
inline constexpr int64_t kMxfp4BlockSize = 32;
inline constexpr int64_t kFp8BlockSize = 128;
// 6 (E2M1 max) * 448 (E4M3 max): global scale = amax / 2688.
inline constexpr float kNvfp4AmaxDivisor = 2688.0f;

struct Nvfp4Tensor {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> packed;        // [rows, cols/2], low nibble = even element
  std::vector<uint8_t> block_scales;  // [rows, cols/16] E4M3 bytes, linear (not swizzled)
  float global_scale = 0.f;           // weight_scale_2: a multiplier, = amax / 2688
};

// ModelOpt's weight quantizer (NVFP4QTensor.quantize with the dynamic block
// scales of get_weights_scaling_factor), all in FP32, in this exact order:
//   s2 = amax / 2688;  c = 6 * s2
//   per 16-block: t = blockamax / c; t == 0 -> 1.0; clamp t to [2^-9, 448]
//                 (ModelOpt >= 2026-05-15); byte = E4M3(t) (round-to-nearest-even)
//                 d = e4m3(byte) * s2;  code = f32_to_e2m1(x / d)  (a true division)
// amax: the global amax to use (e.g. the max over fused w1/w3, all members then
// share s2); nullopt = max|w| of this tensor. cols must be a multiple of 16.
// Throws for non-finite inputs, and when amax is 0 or s2 underflows to 0
// (ModelOpt would then emit NaN scale bytes 0xFF over code-7 nibbles).
Nvfp4Tensor quantize_nvfp4_weight(const float* w, int64_t rows, int64_t cols,
                                  std::optional<float> amax = std::nullopt);

// Activation quantizer: the same ModelOpt exact-division op order as the
// weights, with the global scale given (a checkpoint's static input_scale) or
// computed from this tensor (max|x| / 2688). Block scales are dynamic (per 16
// elements of each row); a block larger than the given scale allows is clamped
// to scale 448 and its elements saturate at +-6.
// TensorRT-LLM / FlashInfer / vLLM runtime kernels instead compute
// sf = (1/s) * (vmax * rcp.approx(6)) and multiply by rcp.approx(sf * s): that
// agrees with this except for 1-ulp differences that can move a block scale
// byte or an element sitting on a rounding tie (see nvfp4-format.md §1.5).
Nvfp4Tensor quantize_nvfp4_activation(const float* x, int64_t rows, int64_t cols,
                                      std::optional<float> global_scale = std::nullopt);

// DeepSeek-layout MXFP4 weights by ModelOpt's MXFP4 quantizer
// (MXFP4QTensor.quantize), in FP32: per 32-block e = ceil(max(log2(amax / 6),
// -127)) (log2 in FP32), scale byte e + 127; y = x / 2^e; the code counts the
// bounds {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5} strictly below |y| (ties round
// down, saturating at 6), the sign bit is set unless x > 0 (so zeros get 0x8).
// cols must be a multiple of 32; throws for non-finite inputs.
struct Mxfp4Tensor {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> packed;  // [rows, cols/2], low nibble = even element
  std::vector<uint8_t> scales;  // [rows, cols/32] E8M0 bytes
};
Mxfp4Tensor quantize_mxfp4_weight(const float* w, int64_t rows, int64_t cols);

// DeepSeek FP8 block-128 weights with E8M0 scales (the FP4-expert releases'
// `scale_fmt: ue8m0`): per 128x128 tile s = 2^ceil(log2(max(amax, 1e-4) / 448))
// (the exact ceil of the FP32 quotient, as DeepSeek's kernels round scales),
// value = E4M3(x / s) (round-to-nearest-even, never saturating: |x / s| <= 448).
// Tiles at the edges cover what is left; throws for non-finite inputs.
struct Fp8BlockTensor {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> values;  // [rows, cols] E4M3 bytes
  std::vector<uint8_t> scales;  // [ceil(rows/128), ceil(cols/128)] E8M0 bytes
};
Fp8BlockTensor quantize_fp8_block_weight(const float* w, int64_t rows, int64_t cols);

// out[r, k] = e2m1(code) * fp32(e4m3(scale) * global_scale), ModelOpt's order
// (NVFP4QTensor.dequantize): the scale product is rounded to FP32 first.
// Like ModelOpt, code 0x8 yields +0.0 (its value table has no -0); a 0x00
// scale byte yields zeros. Loader robustness (old exports): a NaN scale byte
// (0x7F/0xFF) over a block whose codes are all +-0 decodes to zeros; over any
// non-zero code it throws, naming the row and block.
void dequantize_nvfp4(const uint8_t* packed, const uint8_t* block_scales_e4m3, float global_scale,
                      int64_t rows, int64_t cols, float* out);

// DeepSeek MXFP4: out[r, k] = e2m1(code) * 2^(scale - 127), one E8M0 byte per
// 32 elements ([rows, cols/32]). The product is exact (it may overflow to inf
// for scale 0xFE); code 0x8 yields -0.0 (ModelOpt's MXFP4QTensor.dequantize).
// A NaN scale 0xFF follows the same rule as NVFP4 (zeros over an all-zero
// block, otherwise an error).
void dequantize_mxfp4(const uint8_t* packed, const uint8_t* scales_e8m0, int64_t rows, int64_t cols,
                      float* out);

enum class ScaleEncoding { kF32, kE8M0 };

// DeepSeek FP8 block-128 weights: E4M3 values [rows, cols] and one multiplier
// per 128x128 tile, [ceil(rows/128), ceil(cols/128)], stored as F32 or E8M0
// (the checkpoint's `.scale` / transformers' `weight_scale_inv`, which despite
// its name multiplies). out = fp32(e4m3(v)) * scale, one FP32 rounding.
// Throws on a NaN value byte, or a NaN/inf scale, naming where it is.
void dequantize_fp8_block(const uint8_t* values_e4m3, const void* scales,
                          ScaleEncoding scale_encoding, int64_t rows, int64_t cols, float* out);

}  // namespace megamoe
