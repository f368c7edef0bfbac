// FP8 block-128 shared expert (DeepSeek checkpoint format) -> BF16 at load.
// An E4M3 weight matrix [rows, cols] carries one scale per 128x128 tile,
// either as E8M0 bytes (a power of two) or as fp32 (DeepSeek-V3's
// weight_scale_inv). The MoE kernels read the shared expert in BF16, so the
// matrix is dequantized once on the host:
//   bf16 = round_to_nearest_even_bf16(fp32(e4m3(code)) * scale)   (fp32 product)
// which is what the official weight_dequant does (fp32 multiply, stored in the
// bf16 default dtype). With an E8M0 scale this is exact: an E4M3 value has 4
// significant bits, times 2^n it is still a bf16 (bf16 has fp32's exponent
// range; only products below 2^-133 would flush, far outside real weights).
// With an fp32 scale that is not a power of two the product is rounded once
// to bf16 (relative error <= 2^-9 per weight).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace megamoe::cuda {

struct Fp8BlockMatrix {
  std::span<const uint8_t> codes;        // [rows, cols] E4M3FN
  std::span<const uint8_t> scales_e8m0;  // [ceil(rows/128), ceil(cols/128)], or empty
  std::span<const float> scales_f32;     // [ceil(rows/128), ceil(cols/128)], or empty
  bool empty() const { return codes.empty(); }
};

// Throws megamoe::Error naming `name` for wrong sizes, both or neither scale
// span set, a NaN code (0x7F/0xFF), a NaN E8M0 scale (0xFF) or a non-finite fp32 scale.
std::vector<uint16_t> fp8_block128_to_bf16(const Fp8BlockMatrix& m, int rows, int cols, const std::string& name);

}  // namespace megamoe::cuda
