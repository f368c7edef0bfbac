// Combine: y[t] = sum_j w_j rows[t*k + j] + rows[T*k + t] (shared expert),
// summed in fp32 in slot order then the shared row, like the CPU reference
// (expert parallel: only the slots of local experts, MoeParams::local_experts);
// written as bf16 and/or fp32. w_j = topk_w in W4A4 (the routing weight after
// GEMM2, MoeParams::weight_after_gemm2), else 1 (GEMM1 already applied it;
// 1 x v + acc rounds like v + acc, so W4A16 is unchanged bit for bit).
// Deterministic (no atomics). Covered by tests/kernels/test_sm90_nvfp4_moe.cpp.
#include <algorithm>

#include "kernels/moe/moe_common.cuh"
#include "kernels/moe/moe_launch.cuh"

namespace megamoe::cuda::kernels {
namespace {

__global__ void moe_combine_kernel(MoeParams p) {
  pdl_wait();
  const int D4 = p.hidden / 4;
  const size_t total = static_cast<size_t>(p.tokens) * D4;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int t = static_cast<int>(i / D4), c4 = static_cast<int>(i % D4);
    const float4* rows = reinterpret_cast<const float4*>(p.rows);
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int j = 0; j < p.top_k; ++j) {
      const size_t pair = static_cast<size_t>(t) * p.top_k + j;
      // Expert parallel: another rank's slot is summed there (no id load when unsharded).
      if (p.local_experts > 0 && !moe_expert_is_local(p, p.topk_ids[pair])) continue;
      const float w = p.weight_after_gemm2 ? p.topk_w[pair] : 1.0f;
      const float4 v = rows[pair * D4 + c4];
      acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
    }
    if (p.shared_inter > 0) {
      const float4 v = rows[(static_cast<size_t>(p.tokens) * p.top_k + t) * D4 + c4];
      acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
    }
    if (p.y_f32) reinterpret_cast<float4*>(p.y_f32)[i] = acc;
    if (p.y) {
      const uint32_t lo = float_to_bf16_bits(acc.x) | static_cast<uint32_t>(float_to_bf16_bits(acc.y)) << 16;
      const uint32_t hi = float_to_bf16_bits(acc.z) | static_cast<uint32_t>(float_to_bf16_bits(acc.w)) << 16;
      reinterpret_cast<uint2*>(p.y)[i] = make_uint2(lo, hi);
    }
  }
}

}  // namespace

void launch_moe_combine(const MoeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  const size_t total = static_cast<size_t>(p.tokens) * (p.hidden / 4);
  const int blocks = static_cast<int>(std::min<size_t>((total + 255) / 256, 132 * 16));
  launch_dependent(moe_combine_kernel, blocks, 256, 0, stream, p);
}

}  // namespace megamoe::cuda::kernels
