// Helpers shared by the MoE GEMM kernels: FP4 / scale decode tables, bf16
// conversion, the clamped SwiGLU, and where a tile's pair rows come from.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/moe/moe_params.hpp"

namespace megamoe::cuda::kernels {

__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

__device__ __forceinline__ uint16_t float_to_bf16_bits(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// E2M1 code -> value (code 8 is -0).
__device__ __forceinline__ float e2m1_value(int code) {
  const float mags[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = mags[code & 7];
  return (code & 8) ? -m : m;
}

// E4M3FN byte -> value (0x7F/0xFF NaN).
__device__ __forceinline__ float e4m3_value(int b) {
  const int e = (b >> 3) & 15, m = b & 7;
  float v;
  if ((b & 0x7f) == 0x7f) v = __uint_as_float(0x7fc00000u);
  else if (e == 0) v = m * (1.0f / 512.0f);
  else v = __uint_as_float(static_cast<uint32_t>((e + 120) << 23 | m << 20));
  return (b & 0x80) ? -v : v;
}

// E8M0 byte -> 2^(b-127) (0xFF NaN, 0x00 = 2^-127, a subnormal).
__device__ __forceinline__ float e8m0_value(int b) {
  if (b == 0xff) return __uint_as_float(0x7fc00000u);
  if (b == 0) return __uint_as_float(0x00400000u);
  return __uint_as_float(static_cast<uint32_t>(b) << 23);
}

// Fills the shared decode tables: 16 E2M1 values and 256 scale values.
__device__ __forceinline__ void fill_decode_tables(float* e2m1_lut, float* scale_lut, ExpertFormat format) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    if (i < 16) e2m1_lut[i] = e2m1_value(i);
    scale_lut[i] = format == ExpertFormat::kMxfp4 ? e8m0_value(i) : e4m3_value(i);
  }
}

__device__ __forceinline__ float clamped_swiglu(float gate, float up, float limit) {
  if (limit > 0.0f) {
    gate = fminf(gate, limit);
    up = fminf(fmaxf(up, -limit), limit);
  }
  return gate / (1.0f + expf(-gate)) * up;
}

// The token whose x row a pair reads.
__device__ __forceinline__ int pair_token(const MoeParams& p, int pair) {
  const int routed = p.tokens * p.top_k;
  return pair < routed ? pair / p.top_k : pair - routed;
}

__device__ __forceinline__ int h_stride(const MoeParams& p) {
  return p.intermediate > p.shared_inter ? p.intermediate : p.shared_inter;
}

// The bf16 row a pair feeds to GEMM `gemm`: x's token row, or in W4A4 mode a
// routed pair's quantized row of xq; GEMM2 reads the pair's row of h.
__device__ __forceinline__ const uint16_t* gemm_input_row(const MoeParams& p, int gemm, int pair, bool shared) {
  if (gemm == 2) return p.h + static_cast<size_t>(pair) * h_stride(p);
  if (p.xq != nullptr && !shared) return p.xq + static_cast<size_t>(pair) * p.hidden;
  return p.x + static_cast<size_t>(pair_token(p, pair)) * p.hidden;
}

// W4A4: the activation global scale s2 of a routed tile of expert e (1 in W4A16).
__device__ __forceinline__ float act_global_scale(const MoeParams& p, int gemm, int e) {
  return p.act_scale != nullptr ? p.act_scale[(gemm - 1) * p.experts + e] : 1.0f;
}

}  // namespace megamoe::cuda::kernels
