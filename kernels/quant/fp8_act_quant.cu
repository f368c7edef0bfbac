// FP8 block-128 activation quantizer (sm_89+ for the E4M3 convert; built for
// sm_90a): one warp per 1x128 block of a row. Each lane loads one float4 (the
// warp reads the block's 512 contiguous bytes), the abs-max is an integer max
// over the fp32 bits (exact, order-independent), lane 0 writes the scale and
// every lane writes 4 E4M3 codes (the warp writes 128 contiguous bytes).
// Rule, layout and constraints: fp8_act_quant.hpp. Check: bench/bench_fp8_gemm.cpp
// compares codes and scales byte for byte with a host copy of the rule.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/quant/fp8_act_quant.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerCta = kThreads / 32;
constexpr int kBlock = 128;

__device__ __forceinline__ uint32_t abs_bits(float v) { return __float_as_uint(v) & 0x7FFFFFFFu; }

__device__ __forceinline__ float quant_value(float v, float s, float inv, bool pow2) {
  // pow2: s = 2^n, so x * 2^-n is exactly x / s; otherwise a true division.
  const float y = pow2 ? __fmul_rn(v, inv) : __fdiv_rn(v, s);
  return fminf(fmaxf(y, -448.0f), 448.0f);
}

__global__ void __launch_bounds__(kThreads) fp8_act_quant_kernel(const Fp8ActQuantParams p) {
  const int blocks_per_row = p.cols / kBlock;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (warp >= static_cast<int64_t>(p.rows_padded) * blocks_per_row) return;
  const int row = static_cast<int>(warp / blocks_per_row);
  const int blk = static_cast<int>(warp % blocks_per_row);

  uint32_t packed = 0;  // padded rows: code 0 (+0.0) with scale 1
  float s = 1.0f;
  if (row < p.rows) {
    const float4 v =
        __ldg(reinterpret_cast<const float4*>(p.x + static_cast<int64_t>(row) * p.ldx + blk * kBlock) + lane);
    uint32_t m = max(max(abs_bits(v.x), abs_bits(v.y)), max(abs_bits(v.z), abs_bits(v.w)));
    m = __reduce_max_sync(0xFFFFFFFFu, m);
    const float amax = fmaxf(__uint_as_float(m), 1e-4f);
    s = __fdiv_rn(amax, 448.0f);
    if (p.pow2_scale) s = __uint_as_float((__float_as_uint(s) + 0x007FFFFFu) & 0x7F800000u);  // 2^ceil(log2 s)
    const float inv = p.pow2_scale ? __frcp_rn(s) : 0.0f;
    const float2 lo = make_float2(quant_value(v.x, s, inv, p.pow2_scale), quant_value(v.y, s, inv, p.pow2_scale));
    const float2 hi = make_float2(quant_value(v.z, s, inv, p.pow2_scale), quant_value(v.w, s, inv, p.pow2_scale));
    // .x lands in the low byte: memory order x, y, z, w.
    const uint32_t lo16 = __nv_cvt_float2_to_fp8x2(lo, __NV_SATFINITE, __NV_E4M3);
    const uint32_t hi16 = __nv_cvt_float2_to_fp8x2(hi, __NV_SATFINITE, __NV_E4M3);
    packed = lo16 | (hi16 << 16);
  }
  reinterpret_cast<uint32_t*>(p.q + static_cast<int64_t>(row) * p.cols + blk * kBlock)[lane] = packed;
  if (lane == 0) p.scale[static_cast<int64_t>(blk) * p.rows_padded + row] = s;
}

bool aligned(const void* ptr, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(ptr) % bytes) == 0; }

}  // namespace

cudaError_t launch_fp8_act_quant(const Fp8ActQuantParams& p, cudaStream_t stream) {
  if (p.cols <= 0 || p.cols % kBlock != 0 || p.rows < 0 || p.rows_padded < p.rows || p.q == nullptr ||
      p.scale == nullptr || !aligned(p.q, 4))
    return cudaErrorInvalidValue;
  if (p.rows > 0 && (p.x == nullptr || p.ldx < p.cols || p.ldx % 4 != 0 || !aligned(p.x, 16)))
    return cudaErrorInvalidValue;
  if (p.rows_padded == 0) return cudaSuccess;
  const int64_t warps = static_cast<int64_t>(p.rows_padded) * (p.cols / kBlock);
  const int64_t grid = (warps + kWarpsPerCta - 1) / kWarpsPerCta;
  if (grid > 0x7FFFFFFF) return cudaErrorInvalidValue;
  fp8_act_quant_kernel<<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace megamoe::cuda::kernels
