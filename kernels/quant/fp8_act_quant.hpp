// Device interface of the FP8 block-128 activation quantizer: fp32 x [T, K]
// -> E4M3FN codes + one fp32 scale per 1x128 block of a row, the activation
// side of DeepSeek-style block-scaled FP8 GEMMs (1x128 activation scales x
// 128x128 weight scales). The scale layout is the one cuBLASLt reads for
// CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F on a K-major operand: the token
// index is contiguous, [K/128, T_pad], so a column of scales is 16-byte
// aligned when T_pad % 4 == 0 (cuBLASLt's "M multiple of 4").
//
// Per block b of row t (128 consecutive values along K), in fp32:
//   amax = max(max|x|, 1e-4)
//   s    = amax / 448                       (IEEE division, round to nearest)
//   s    = 2^ceil(log2 s) if pow2_scale     (DeepSeek-V4 scale_fmt "ue8m0")
//   q    = e4m3_rne(clamp(x / s, -448, 448))   (x / s exact when s is 2^n)
//   x ~= e4m3(q) * s
// Rows T .. T_pad-1 are written as code 0 with scale 1 (they decode to 0).
// x must be finite (an inf or NaN in a block makes its codes meaningless).
// Plain C++ (no device code). Kernel: fp8_act_quant.cu. Covered by
// bench/bench_fp8_gemm.cpp (`megamoe bench-fp8-gemm`), which checks the output
// byte for byte against a host copy of the same rule before timing anything.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

struct Fp8ActQuantParams {
  int rows = 0;              // T >= 0 real rows of x
  int rows_padded = 0;       // T_pad >= T: rows of q and leading dimension of scale
  int cols = 0;              // K, a multiple of 128
  const float* x = nullptr;  // [T, ldx] fp32, 16-byte aligned
  int ldx = 0;               // row stride of x in elements, multiple of 4, >= K
  uint8_t* q = nullptr;      // [T_pad, K] E4M3FN codes, row-major, 4-byte aligned
  float* scale = nullptr;    // [K/128, T_pad] fp32 multipliers, token index contiguous
  bool pow2_scale = true;    // round s up to a power of two (exact x / s)
};

// Enqueues one kernel on `stream`; no allocation, no synchronisation
// (graph-capturable). Returns cudaErrorInvalidValue, launching nothing, when
// the shape or alignment rules above are broken, else the launch status
// (the caller wraps it in MEGAMOE_CUDA_CHECK). T_pad == 0 enqueues nothing.
cudaError_t launch_fp8_act_quant(const Fp8ActQuantParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
