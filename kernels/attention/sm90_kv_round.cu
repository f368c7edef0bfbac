// FP8 KV storage rounding (kv_fp8_params.hpp): one warp per row; each lane
// owns channels lane, lane + 32, ...; a block of 64 channels is two lanes'
// worth per step, so the block amax is a reduction over the 32 lanes of a
// 64-channel chunk (2 values each). The scale is computed with exact bit
// arithmetic (no log2) so it matches the CPU bit for bit.
// Covered by tests/kernels/test_backend_ops.cpp (kv_round case) and the model tests.
#include <cuda_fp8.h>

#include "kernels/attention/kv_fp8_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

// Smallest power of two >= s (s a positive normal float).
__device__ float pow2_ceil(float s) {
  const unsigned bits = __float_as_uint(s);
  const unsigned exponent = bits & 0x7f800000u;
  return (bits & 0x007fffffu) == 0 ? __uint_as_float(exponent) : __uint_as_float(exponent + 0x00800000u);
}

__device__ float e4m3_round(float v) {
  const __nv_fp8_storage_t q = __nv_cvt_float_to_fp8(v, __NV_NOSAT, __NV_E4M3);
  const __half_raw h = __nv_cvt_fp8_to_halfraw(q, __NV_E4M3);
  return __half2float(__half(h));
}

__device__ void round_row(float* row, int dim, int rope_dim) {
  const int lane = threadIdx.x & 31, nope = dim - rope_dim;
  for (int b0 = 0; b0 < nope; b0 += 64) {
    const int n = min(64, nope - b0);
    const int i0 = b0 + lane, i1 = b0 + lane + 32;
    const float v0 = lane < n ? row[i0] : 0.f, v1 = lane + 32 < n ? row[i1] : 0.f;
    float amax = fmaxf(fabsf(v0), fabsf(v1));
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float scale = pow2_ceil(fmaxf(amax, 1e-4f) / 448.f);
    if (lane < n) row[i0] = e4m3_round(v0 / scale) * scale;
    if (lane + 32 < n) row[i1] = e4m3_round(v1 / scale) * scale;
  }
  for (int i = nope + lane; i < dim; i += 32) row[i] = __bfloat162float(__float2bfloat16_rn(row[i]));
}

__global__ void kv_round_rows(KvRoundParams p) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row < p.rows) round_row(p.x + static_cast<long long>(row) * p.dim, p.dim, p.rope_dim);
}

__global__ void kv_round_entries(KvRoundParams p) {
  const int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (w >= p.windows || p.window_index[w] < 0) return;  // index -1: a fixed plan's padding
  const int slot = p.step.seq_slot[p.window_seq[w]];
  float* row = p.entries + (static_cast<long long>(slot) * p.max_entries + p.window_index[w]) * p.dim;
  round_row(row, p.dim, p.rope_dim);
}

}  // namespace

void launch_kv_round(const KvRoundParams& p, cudaStream_t stream) {
  constexpr int kWarps = 4;
  if (p.x != nullptr) {
    if (p.rows > 0) kv_round_rows<<<(p.rows + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(p);
  } else if (p.windows > 0) {
    kv_round_entries<<<(p.windows + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(p);
  }
}

}  // namespace megamoe::cuda::kernels
