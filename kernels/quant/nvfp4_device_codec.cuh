// Device twins of the host NVFP4 codecs (src/core/float_formats.cpp and the
// ModelOpt op order of src/core/block_quant.cpp), bit for bit. Every rounding
// step that the host does in FP32 is one explicit PTX instruction here
// (mul.rn / div.rn without .ftz): an explicit rounding modifier forbids FMA
// contraction, and no .ftz keeps subnormals, so neither --use_fast_math nor
// -ftz / -prec-div=false can change a result. sm_90 has no cvt...e2m1x2, so
// E2M1 rounding is the host's compare ladder. Include only from .cu files.
// Covered by tests/kernels/test_sm90_nvfp4_quant.cpp (byte-for-byte vs host).
#pragma once

#include <cstdint>

namespace megamoe::cuda::kernels {

inline constexpr float kNvfp4MinBlockScale = 0x1p-9f;   // smallest E4M3 subnormal
inline constexpr float kNvfp4MaxBlockScale = 448.0f;    // largest finite E4M3
inline constexpr float kNvfp4AmaxDivisorDev = 2688.0f;  // 6 * 448

// IEEE round-to-nearest-even product / quotient, subnormals kept.
__device__ __forceinline__ float mul_rn_exact(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float div_rn_exact(float a, float b) {
  float r;
  asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// |x| as FP32 bits. For non-negative floats the unsigned order of the bits is
// the numeric order, and every NaN sorts above +inf, so an integer max is an
// exact, order-independent (deterministic) abs-max that also surfaces NaN.
__device__ __forceinline__ uint32_t abs_bits(float x) { return __float_as_uint(x) & 0x7FFFFFFFu; }
__device__ __forceinline__ bool bits_are_finite(uint32_t abs) { return abs < 0x7F800000u; }

// f32_to_e4m3: PyTorch's RNE cast without saturation (>= 480 or NaN -> 0x7F).
__device__ __forceinline__ uint32_t f32_to_e4m3_dev(float x) {
  const uint32_t b = __float_as_uint(x);
  const uint32_t sign = (b >> 24) & 0x80u;
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a >= 0x43F00000u) return sign | 0x7Fu;
  if (a < 0x3C800000u) {  // below 2^-6: grid of 2^-9; a * 2^9 < 8 is exact
    return sign | __float2uint_rn(mul_rn_exact(__uint_as_float(a), 512.0f));
  }
  const uint32_t rounded = a + 0x7FFFFu + ((a >> 20) & 1u);
  return sign | (((rounded - (120u << 23)) >> 20) & 0xFFu);
}

// e4m3_to_f32 (exact).
__device__ __forceinline__ float e4m3_to_f32_dev(uint32_t byte) {
  const uint32_t exponent = (byte >> 3) & 0xFu;
  const uint32_t mantissa = byte & 0x7u;
  float magnitude;
  if (exponent == 0xFu && mantissa == 0x7u) {
    magnitude = __uint_as_float(0x7FC00000u);
  } else if (exponent == 0) {
    magnitude = mul_rn_exact(static_cast<float>(mantissa), 0x1p-9f);
  } else {
    magnitude = __uint_as_float(((exponent + 120u) << 23) | (mantissa << 20));
  }
  return (byte & 0x80u) ? -magnitude : magnitude;
}

// f32_to_e2m1: RNE onto {0,.5,1,1.5,2,3,4,6} with saturation; sign bit iff
// y < 0 strictly (-0.0 -> 0x0, -0.1 -> 0x8); NaN -> 0x7.
__device__ __forceinline__ uint32_t f32_to_e2m1_dev(float y) {
  const uint32_t sign = y < 0.0f ? 0x8u : 0x0u;
  const float a = fabsf(y);
  uint32_t code;
  if (a != a)
    code = 7;
  else if (a <= 0.25f)
    code = 0;
  else if (a < 0.75f)
    code = 1;
  else if (a <= 1.25f)
    code = 2;
  else if (a < 1.75f)
    code = 3;
  else if (a <= 2.5f)
    code = 4;
  else if (a < 3.5f)
    code = 5;
  else if (a <= 5.0f)
    code = 6;
  else
    code = 7;
  return sign | code;
}

// One 16-element NVFP4 block in ModelOpt's exact-division order:
//   c = 6*s2; t = amax/c; t==0 -> 1; clamp [2^-9, 448]; byte = e4m3(t);
//   d = e4m3(byte)*s2; code_i = e2m1(x_i / d).
// `six_s2` is fp32(6 * s2), hoisted by the caller. Nibble i of the 64-bit
// result is element i (so byte j = element 2j low, 2j+1 high, little-endian).
__device__ __forceinline__ uint32_t nvfp4_block_scale_byte(uint32_t block_amax_bits, float six_s2) {
  float t = div_rn_exact(__uint_as_float(block_amax_bits), six_s2);
  if (t == 0.0f) t = 1.0f;  // all-zero block -> scale 1.0 (0x38)
  // std::clamp's exact expression (NaN passes through, as on the host).
  t = (t < kNvfp4MinBlockScale) ? kNvfp4MinBlockScale : (kNvfp4MaxBlockScale < t) ? kNvfp4MaxBlockScale : t;
  return f32_to_e4m3_dev(t);
}

__device__ __forceinline__ uint2 nvfp4_encode_block16(const float (&v)[16], float d) {
  uint32_t lo = 0, hi = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) lo |= f32_to_e2m1_dev(div_rn_exact(v[i], d)) << (4 * i);
#pragma unroll
  for (int i = 0; i < 8; ++i) hi |= f32_to_e2m1_dev(div_rn_exact(v[8 + i], d)) << (4 * i);
  return make_uint2(lo, hi);
}

}  // namespace megamoe::cuda::kernels
