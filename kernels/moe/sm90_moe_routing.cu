// MoE routing on the device: router logits and sqrtsoftplus scores (fp32 math
// on bf16 x and bf16 gate), top-k on the biased scores with ties to the lower
// expert index (or tid2eid for hash layers), weights from the unbiased scores
// normalised and times routed_scaling; then the permutation of (token, slot)
// pairs by expert with counts, offsets and tiles computed on the device.
// Two launches, no host sync. A token id or tid2eid entry out of range sets
// *error_flag and is replaced by expert 0 (never an out-of-bounds access).
// Covered by tests/kernels/test_sm90_nvfp4_moe.cpp.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>

#include "kernels/moe/moe_launch.cuh"
#include "kernels/moe/moe_params.hpp"
#include "kernels/moe/moe_routing_common.cuh"
#include "kernels/moe/moe_routing_multi.hpp"

namespace megamoe::cuda::kernels {
namespace {

// Scores: a block of 8 warps per (EPB experts, kScoreTokens tokens); D is split
// over all 256 threads in 16-byte chunks, so even T=1 runs E blocks with the
// whole gate in flight at once.
constexpr int kScoreThreads = 256;
constexpr int kScoreWarps = kScoreThreads / 32;
constexpr int kScoreTokens = 16;  // tokens per block (grid.y)
constexpr int kTokGroup = 4;      // tokens accumulated together in registers

// Select: one block; scores of kSelectChunk tokens staged in shared memory at
// a time, a warp per token for the top-k, block-wide scans for the groups.
constexpr int kSelectThreads = kScanThreads;
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr size_t kSelectScoreBytes = 96 * 1024;  // staged scores per chunk
constexpr size_t kSelectIdsBytes = 96 * 1024;    // topk ids kept in smem when T*k fits

__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits16) { return __uint_as_float(bits16 << 16); }

__device__ __forceinline__ float dot8(const uint4& a, const uint4& b, float acc) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(bf16_bits_to_float(av[i] & 0xffffu), bf16_bits_to_float(bv[i] & 0xffffu), acc);
    acc = fmaf(bf16_bits_to_float(av[i] >> 16), bf16_bits_to_float(bv[i] >> 16), acc);
  }
  return acc;
}

// scores[t, e] = sqrtsoftplus(x_t . gate_e) for EPB experts from blockIdx.x*EPB
// and the tokens of blockIdx.y. Each thread sums its chunks in order, then a
// fixed-order warp butterfly and a fixed-order sum over the warps: deterministic.
template <int EPB>
__global__ void __launch_bounds__(kScoreThreads) router_scores_kernel(MoeParams p) {
  __shared__ float red[kScoreWarps][EPB * kTokGroup];
  pdl_launch_dependents();  // let the select block start (it waits for this grid)
  zero_route_counts(p);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int e0 = blockIdx.x * EPB;
  const int t_begin = blockIdx.y * kScoreTokens, t_end = min(p.tokens, t_begin + kScoreTokens);
  const int chunks = p.hidden / 8;
  const uint4* gr[EPB];
#pragma unroll
  for (int i = 0; i < EPB; ++i)
    gr[i] = reinterpret_cast<const uint4*>(p.gate + static_cast<size_t>(min(e0 + i, p.experts - 1)) * p.hidden);
  for (int t0 = t_begin; t0 < t_end; t0 += kTokGroup) {
    const uint4* xr[kTokGroup];
#pragma unroll
    for (int j = 0; j < kTokGroup; ++j)
      xr[j] = reinterpret_cast<const uint4*>(p.x + static_cast<size_t>(min(t0 + j, t_end - 1)) * p.hidden);
    float acc[EPB][kTokGroup];
#pragma unroll
    for (int i = 0; i < EPB; ++i)
#pragma unroll
      for (int j = 0; j < kTokGroup; ++j) acc[i][j] = 0.0f;
    const int ntok = min(kTokGroup, t_end - t0);
#pragma unroll 2
    for (int c = threadIdx.x; c < chunks; c += kScoreThreads) {
      uint4 g[EPB], a[kTokGroup];
#pragma unroll
      for (int i = 0; i < EPB; ++i) g[i] = __ldg(gr[i] + c);
#pragma unroll
      for (int j = 0; j < kTokGroup; ++j)
        a[j] = j < ntok ? __ldg(xr[j] + c) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < EPB; ++i)
#pragma unroll
        for (int j = 0; j < kTokGroup; ++j)
          if (j < ntok) acc[i][j] = dot8(a[j], g[i], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < EPB; ++i)
#pragma unroll
      for (int j = 0; j < kTokGroup; ++j) {
        float v = acc[i][j];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        acc[i][j] = v;
      }
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < EPB; ++i)
#pragma unroll
        for (int j = 0; j < kTokGroup; ++j) red[warp][i * kTokGroup + j] = acc[i][j];
    }
    __syncthreads();
    if (threadIdx.x < EPB * kTokGroup) {
      const int i = threadIdx.x / kTokGroup, j = threadIdx.x % kTokGroup;
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < kScoreWarps; ++w) s += red[w][threadIdx.x];
      if (j < ntok && e0 + i < p.experts)
        p.scores[static_cast<size_t>(t0 + j) * p.experts + e0 + i] = sqrt_softplus(s);
    }
    __syncthreads();
  }
}

// One block: top-k per token (a warp per token on scores staged in shared
// memory), then counts, offsets, tiles and the scatter of pairs, all from
// shared memory. Shared layout: bias[E] | scores[chunk][E] | counts, offsets,
// fill, ntile, tile_off [E+1 each] | ids[T*k] (only when ids_in_smem).
__global__ void __launch_bounds__(kSelectThreads) select_and_permute_kernel(MoeParams p, int chunk_tokens,
                                                                            int ids_in_smem) {
  extern __shared__ float fsmem[];
  const int E = p.experts, k = p.top_k, T = p.tokens;
  const int groups = E + 1;  // the shared expert is group E
  float* s_bias = fsmem;                     // [E]
  float* s_sc = s_bias + E;                  // [chunk_tokens][E]
  int* counts = reinterpret_cast<int*>(s_sc + static_cast<size_t>(chunk_tokens) * E);  // [E+1]
  int* offsets = counts + groups;            // [E+1]
  int* fill = offsets + groups;              // [E+1]
  int* ntile = fill + groups;                // [E+1] tiles per group
  int* tile_off = ntile + groups;            // [E+1]
  int* s_ids = tile_off + groups;            // [T*k] when ids_in_smem
  __shared__ int wsum[kSelectWarps][2];
  __shared__ int total_tiles;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int i = threadIdx.x; i < groups; i += kSelectThreads) counts[i] = 0, fill[i] = 0;
  for (int i = threadIdx.x; i < E; i += kSelectThreads) s_bias[i] = p.bias ? p.bias[i] : 0.0f;
  pdl_launch_dependents();  // GEMM1 may start: its shared-expert tiles need no routing
  pdl_wait();               // the scores

  for (int c0 = 0; c0 < T; c0 += chunk_tokens) {
    const int nt = min(chunk_tokens, T - c0);
    __syncthreads();  // previous chunk done with s_sc (and the init above)
    const float* src = p.scores + static_cast<size_t>(c0) * E;
    if ((E & 3) == 0) {
      const float4* s4 = reinterpret_cast<const float4*>(src);
      float4* d4 = reinterpret_cast<float4*>(s_sc);
      for (int i = threadIdx.x; i < nt * E / 4; i += kSelectThreads) d4[i] = s4[i];
    } else {
      for (int i = threadIdx.x; i < nt * E; i += kSelectThreads) s_sc[i] = src[i];
    }
    __syncthreads();
    for (int tl = warp; tl < nt; tl += kSelectWarps) {
      const int t = c0 + tl;
      const int my_id = route_token(p, s_sc + static_cast<size_t>(tl) * E, s_bias, t, lane);
      if (lane < k) {
        if (ids_in_smem) s_ids[static_cast<size_t>(t) * k + lane] = my_id;
        // Expert parallel: only this rank's experts are counted (and scattered below).
        if (moe_expert_is_local(p, my_id)) atomicAdd(&counts[my_id], 1);
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) counts[E] = p.shared_inter > 0 ? T : 0;
  __syncthreads();
  block_scan_groups(counts, offsets, ntile, tile_off, groups, p.tile_m, wsum, &total_tiles);
  __syncthreads();
  write_tiles(p, counts, offsets, ntile, tile_off, groups, total_tiles);
  // ids written above by this block: visible after the barrier (global path)
  const int32_t* ids = ids_in_smem ? s_ids : p.topk_ids;
  for (int q = threadIdx.x; q < T * k; q += kSelectThreads) {
    const int e = ids[q];
    if (!moe_expert_is_local(p, e)) continue;  // expert parallel: another rank's pair
    p.perm_pairs[offsets[e] + atomicAdd(&fill[e], 1)] = q;
  }
  if (p.shared_inter > 0)
    for (int t = threadIdx.x; t < T; t += kSelectThreads) p.perm_pairs[offsets[E] + t] = T * k + t;
}

}  // namespace

void launch_moe_route_scores(const MoeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  // hash layers need the scores too: their weights come from them
  if (launch_moe_route_scores_mma(p, stream)) return;  // prefill sizes: tensor cores
  const int ty = (p.tokens + kScoreTokens - 1) / kScoreTokens;
  if (p.tokens < 64) {  // one expert per block: E x ceil(T/16) blocks
    router_scores_kernel<1><<<dim3(p.experts, ty), kScoreThreads, 0, stream>>>(p);
  } else {  // 4 experts per block: x read from L2 4x less often
    router_scores_kernel<4><<<dim3((p.experts + 3) / 4, ty), kScoreThreads, 0, stream>>>(p);
  }
}

void launch_moe_route_select(const MoeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (moe_multi_block_routing(p)) {  // prefill sizes: top-k over the whole GPU
    launch_moe_route_select_multi(p, stream);
    return;
  }
  const size_t E = p.experts, groups = E + 1;
  const int chunk_tokens =
      static_cast<int>(std::clamp<size_t>(kSelectScoreBytes / (E * sizeof(float)), 1, static_cast<size_t>(p.tokens)));
  const size_t pairs = static_cast<size_t>(p.tokens) * p.top_k;
  const int ids_in_smem = pairs * sizeof(int) <= kSelectIdsBytes ? 1 : 0;
  const size_t smem = (E + static_cast<size_t>(chunk_tokens) * E) * sizeof(float) + 5 * groups * sizeof(int) +
                      (ids_in_smem ? pairs * sizeof(int) : 0);
  if (smem > 48 * 1024) {  // opt in once to the largest layout (E <= 1024); only large T gets here
    static const cudaError_t attr = cudaFuncSetAttribute(
        select_and_permute_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(kSelectScoreBytes + kSelectIdsBytes + 1024 * sizeof(float) + 5 * 1025 * sizeof(int)));
    (void)attr;  // a failure shows as the launch error the caller checks
  }
  launch_dependent(select_and_permute_kernel, 1, kSelectThreads, smem, stream, p, chunk_tokens, ids_in_smem);
}

}  // namespace megamoe::cuda::kernels
