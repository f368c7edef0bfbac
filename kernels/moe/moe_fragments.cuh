// Tensor-core fragment helpers shared by the MoE GEMM kernels: the E2M1 ->
// bf16 decode of a repacked word (kernels/moe/moe_params.hpp, "Repacked
// layouts"), the block-scale byte -> bf16x2 broadcast, and mma.sync m16n8k16.
#pragma once

#include <cstdint>

namespace megamoe::cuda::kernels {

// Register a_i of a lane's A fragment from one repacked word: nibbles i and
// i+4 placed as bf16 bits (sign -> bit 15, exponent/mantissa -> bits 8..6),
// i.e. value * 2^-126 (0.5 becomes a bf16 subnormal; multiplying by the scale
// restores it exactly).
template <int kI>
__device__ __forceinline__ uint32_t e2m1_pair_bits(uint32_t w) {
  const uint32_t v = w >> (4 * kI);
  return ((v & 0x00070007u) << 6) | ((v & 0x00080008u) << 12);
}

// Scale byte b (E'<<3 | m) of row g (lo byte of s16, kHi = 0) or g+8 (kHi = 1)
// as a bf16x2 pair of the same value: exponent field 224 + E', mantissa m<<4,
// i.e. (b << 4 | 0x7000) in both halves, one multiply-add (no carries: b << 4 < 0x1000).
template <int kHi>
__device__ __forceinline__ uint32_t scale_pair_bits(uint32_t s16) {
  const uint32_t b = (s16 >> (8 * kHi)) & 0xffu;
  return b * 0x00100010u + 0x70007000u;
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// Decoded and scaled A fragment of k-step word w: {a0, a1, a2, a3}.
__device__ __forceinline__ void decode_fragment(uint32_t w, uint32_t sg, uint32_t sg8, uint32_t (&a)[4]) {
  a[0] = bf16x2_mul(e2m1_pair_bits<0>(w), sg);
  a[1] = bf16x2_mul(e2m1_pair_bits<1>(w), sg8);
  a[2] = bf16x2_mul(e2m1_pair_bits<2>(w), sg);
  a[3] = bf16x2_mul(e2m1_pair_bits<3>(w), sg8);
}

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte streaming load (weights are read once per forward: keep them out of L1).
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

}  // namespace megamoe::cuda::kernels
