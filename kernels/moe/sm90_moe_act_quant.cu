// W4A4 mode: NVFP4 quantization of the routed experts' activations before each
// GEMM (MoeParams::xq / act_scale). The codes and E4M3 block scales follow the
// host ModelOpt op order bit for bit (kernels/quant/nvfp4_device_codec.cuh);
// the GEMMs take each element as bf16(e2m1 x block scale), which is exact,
// and apply the global scale s2 to their fp32 accumulators, so the product is
// the NVFP4 x NVFP4 GEMM of a Blackwell deployment up to summation order.
//   GEMM1: routed pair p's row of xq = quant(x[token(p)], s2 of expert(p)).
//   GEMM2: routed rows of h quantized in place (the shared rows keep bf16).
// s2 is the checkpoint's static per-expert input_scale, or dynamic: max|a| /
// 2688 over the whole tensor (x [T, D], or h's T*k routed rows), from
// per-CTA partial maxima (integer max of FP32 bits: exact and deterministic)
// reduced by every CTA of the quantize kernel; an all-zero tensor gets s2 = 1
// (its codes are zero either way). No host sync, graph-capturable. Covered by
// tests/kernels/test_sm90_nvfp4_moe.cpp (W4A4 cases vs the CPU reference).
#include <algorithm>

#include "kernels/moe/moe_common.cuh"
#include "kernels/moe/moe_launch.cuh"
#include "kernels/quant/nvfp4_device_codec.cuh"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// The tensor a GEMM's activation quantization reads: rows x cols bf16 with a row stride.
struct ActView {
  const uint16_t* base;
  size_t stride;
  int rows, cols;
};

__device__ ActView amax_view(const MoeParams& p, int gemm) {
  if (gemm == 1) return {p.x, static_cast<size_t>(p.hidden), p.tokens, p.hidden};
  return {p.h, static_cast<size_t>(h_stride(p)), p.tokens * p.top_k, p.intermediate};
}

__device__ uint32_t block_max(uint32_t v) {
  __shared__ uint32_t warp_max[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = v;
  __syncthreads();
  v = 0;
  for (int w = 0; w < kThreads / 32; ++w) v = max(v, warp_max[w]);
  return v;
}

__device__ uint32_t abs_max8(uint4 q) {
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) m = max(m, max(abs_bits(bf16_lo(w[i])), abs_bits(bf16_hi(w[i]))));
  return m;
}

__global__ void __launch_bounds__(kThreads) moe_act_amax_kernel(MoeParams p, int gemm, uint32_t* partials) {
  pdl_launch_dependents();
  pdl_wait();
  const ActView v = amax_view(p, gemm);
  const int chunks_per_row = v.cols / 8;
  const size_t total = static_cast<size_t>(v.rows) * chunks_per_row;
  uint32_t m = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * kThreads) {
    const size_t r = i / chunks_per_row, c = i % chunks_per_row;
    m = max(m, abs_max8(__ldg(reinterpret_cast<const uint4*>(v.base + r * v.stride) + c)));
  }
  m = block_max(m);
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

__global__ void __launch_bounds__(kThreads) moe_act_quant_kernel(MoeParams p, int gemm, const uint32_t* partials,
                                                                 int n_partials, float* act_scale) {
  pdl_launch_dependents();
  pdl_wait();
  float dynamic_s2 = 0.0f;
  if (n_partials > 0) {
    uint32_t m = 0;
    for (int i = threadIdx.x; i < n_partials; i += kThreads) m = max(m, partials[i]);
    m = block_max(m);
    dynamic_s2 = m == 0 ? 1.0f : div_rn_exact(__uint_as_float(m), kNvfp4AmaxDivisorDev);
    if (blockIdx.x == 0)
      for (int e = threadIdx.x; e < p.experts; e += kThreads) act_scale[(gemm - 1) * p.experts + e] = dynamic_s2;
  }
  const int cols = gemm == 1 ? p.hidden : p.intermediate;
  const int blocks_per_row = cols / 16;
  const size_t total = static_cast<size_t>(p.tokens) * p.top_k * blocks_per_row;
  const int hs = h_stride(p);
  for (size_t i = blockIdx.x * static_cast<size_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * kThreads) {
    const int pair = static_cast<int>(i / blocks_per_row), blk = static_cast<int>(i % blocks_per_row);
    const int e = p.topk_ids[pair];
    if (!moe_expert_is_local(p, e)) continue;  // expert parallel: another rank's pair
    const float s2 = n_partials > 0 ? dynamic_s2 : act_scale[(gemm - 1) * p.experts + e];
    const uint16_t* src = (gemm == 1 ? p.x + static_cast<size_t>(pair / p.top_k) * p.hidden
                                     : p.h + static_cast<size_t>(pair) * hs) + blk * 16;
    uint16_t* dst = (gemm == 1 ? const_cast<uint16_t*>(p.xq) + static_cast<size_t>(pair) * p.hidden
                               : p.h + static_cast<size_t>(pair) * hs) + blk * 16;
    const uint4 q0 = reinterpret_cast<const uint4*>(src)[0], q1 = reinterpret_cast<const uint4*>(src)[1];
    const uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
    float v[16];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[2 * j] = bf16_lo(w[j]), v[2 * j + 1] = bf16_hi(w[j]);
    const uint32_t amax = max(abs_max8(q0), abs_max8(q1));
    const uint32_t byte = nvfp4_block_scale_byte(amax, mul_rn_exact(6.0f, s2));
    const float block_scale = e4m3_to_f32_dev(byte);
    const uint2 codes = nvfp4_encode_block16(v, mul_rn_exact(block_scale, s2));
    uint32_t out[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t word = j < 4 ? codes.x : codes.y, sh = 8 * (j & 3);
      const float lo = e2m1_value((word >> sh) & 15) * block_scale, hi = e2m1_value((word >> (sh + 4)) & 15) * block_scale;
      out[j] = float_to_bf16_bits(lo) | static_cast<uint32_t>(float_to_bf16_bits(hi)) << 16;
    }
    reinterpret_cast<uint4*>(dst)[0] = make_uint4(out[0], out[1], out[2], out[3]);
    reinterpret_cast<uint4*>(dst)[1] = make_uint4(out[4], out[5], out[6], out[7]);
  }
}

int grid_for(size_t work, int cap) {
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>((work + kThreads - 1) / kThreads, cap)));
}

}  // namespace

void launch_moe_act_quant(const MoeParams& p, int gemm, float* act_scale, uint32_t* amax_partials, bool dynamic,
                          cudaStream_t stream) {
  if (p.tokens == 0) return;
  const int cols = gemm == 1 ? p.hidden : p.intermediate;
  int n_partials = 0;
  if (dynamic) {
    const size_t rows = gemm == 1 ? p.tokens : static_cast<size_t>(p.tokens) * p.top_k;
    n_partials = grid_for(rows * cols / 8 / 4, kMoeActAmaxPartials);
    launch_dependent(moe_act_amax_kernel, n_partials, kThreads, 0, stream, p, gemm, amax_partials);
  }
  const size_t blocks16 = static_cast<size_t>(p.tokens) * p.top_k * (cols / 16);
  launch_dependent(moe_act_quant_kernel, grid_for(blocks16, 132 * 8), kThreads, 0, stream, p, gemm,
                   static_cast<const uint32_t*>(amax_partials), n_partials, act_scale);
}

}  // namespace megamoe::cuda::kernels
