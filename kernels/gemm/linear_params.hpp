// Device interface of the linear layers y = x W^T with fp32 activations and
// fp32 accumulation, weights kept in their stored format on the device:
//   kF32        W fp32 [N, K]
//   kBf16       W bf16 bits [N, K]
//   kFp8Block128 W E4M3FN bytes [N, K] with one scale per 128x128 tile,
//               scale [ceil(N/128), ceil(K/128)] as fp32 or E8M0 bytes;
//               w = fp32(e4m3) * scale (exactly cpu::dequantize_weight).
// Grouped (DeepSeek-V4's grouped output projection, groups G > 1): W holds G
// stacked blocks [G * N_g, K_g]; output columns g*N_g .. of y use input
// columns g*K_g .. of x:  y[t, g N_g + n] = sum_k x[t, g K_g + k] W[g N_g + n, k].
// G = 1 is the plain linear. N and K are arbitrary (no multiple-of constraint).
// CPU oracle: cpu::linear on the dequantized weight (src/backend/cpu/ops.hpp)
// and the grouped loop in src/backend/cpu/dsv4/attention.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

enum class LinearFormat : int { kF32 = 0, kBf16 = 1, kFp8Block128 = 2 };

struct LinearWeight {
  LinearFormat format = LinearFormat::kF32;
  int out = 0, in = 0;          // G * N_g, K_g (the stored matrix is [out, in])
  const void* w = nullptr;      // [out, in] in `format`
  const void* scale = nullptr;  // kFp8Block128: [ceil(out/128), ceil(in/128)]
  bool scale_e8m0 = false;      // scale bytes are E8M0 (else fp32)
};

struct LinearParams {
  int tokens = 0;               // T rows of x and y
  int groups = 1;               // G
  LinearWeight weight;
  const float* x = nullptr;     // [T, ldx], logical [T, G * K_g]
  int ldx = 0;                  // row stride of x in elements (>= G * K_g)
  float* y = nullptr;           // [T, ldy], logical [T, out]
  int ldy = 0;                  // row stride of y (>= out)
};

void launch_linear(const LinearParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
