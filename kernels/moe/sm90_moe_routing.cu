// MoE routing on the device: router logits and sqrtsoftplus scores (fp32 math
// on bf16 x and bf16 gate), top-k on the biased scores with ties to the lower
// expert index (or tid2eid for hash layers), weights from the unbiased scores
// normalised and times routed_scaling; then the permutation of (token, slot)
// pairs by expert with counts, offsets and tiles computed on the device.
// Two launches, no host sync. A token id or tid2eid entry out of range sets
// *error_flag and is replaced by expert 0 (never an out-of-bounds access).
// Covered by tests/kernels/test_sm90_nvfp4_moe.cpp.
#include <cuda_bf16.h>

#include <cfloat>

#include "kernels/moe/moe_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kLogitWarps = 8;
constexpr int kSelectThreads = 1024;

__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits16) { return __uint_as_float(bits16 << 16); }

__device__ __forceinline__ float sqrt_softplus(float g) {
  const float sp = g > 20.0f ? g : log1pf(expf(g));  // torch softplus, threshold 20
  return sqrtf(sp);
}

// One warp per (token, expert): scores[t, e] = sqrtsoftplus(x_t . gate_e).
__global__ void __launch_bounds__(kLogitWarps * 32) router_scores_kernel(MoeParams p) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int e = blockIdx.x * kLogitWarps + warp;
  const int t = blockIdx.y;
  if (e >= p.experts) return;
  const uint4* xr = reinterpret_cast<const uint4*>(p.x + static_cast<size_t>(t) * p.hidden);
  const uint4* gr = reinterpret_cast<const uint4*>(p.gate + static_cast<size_t>(e) * p.hidden);
  float acc = 0.0f;
  for (int c = lane; c < p.hidden / 8; c += 32) {
    const uint4 a = __ldg(xr + c), b = __ldg(gr + c);
    const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc = fmaf(bf16_bits_to_float(av[i] & 0xffffu), bf16_bits_to_float(bv[i] & 0xffffu), acc);
      acc = fmaf(bf16_bits_to_float(av[i] >> 16), bf16_bits_to_float(bv[i] >> 16), acc);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) p.scores[static_cast<size_t>(t) * p.experts + e] = sqrt_softplus(acc);
}

// Warp-wide argmax: largest value, lower index on ties.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
  }
}

// Exclusive scan of n values in smem by one warp (n up to a few thousand).
__device__ void warp_exclusive_scan(const int* in, int* out, int n, int lane, int* total) {
  const int per = (n + 31) / 32;
  const int b = min(n, lane * per), e = min(n, b + per);
  int sum = 0;
  for (int i = b; i < e; ++i) sum += in[i];
  int incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  int run = incl - sum;
  for (int i = b; i < e; ++i) {
    out[i] = run;
    run += in[i];
  }
  if (lane == 31 && total) *total = incl;
}

// One block: top-k per token (a warp per token), then counts, offsets, tiles
// and the scatter of pairs.
__global__ void __launch_bounds__(kSelectThreads) select_and_permute_kernel(MoeParams p) {
  extern __shared__ int smem[];
  const int E = p.experts, k = p.top_k, T = p.tokens;
  const int groups = E + 1;  // the shared expert is group E
  int* counts = smem;                 // [E+1]
  int* offsets = counts + groups;     // [E+1]
  int* fill = offsets + groups;       // [E+1]
  int* ntile = fill + groups;         // [E+1] tiles per group
  int* tile_off = ntile + groups;     // [E+1]
  __shared__ int total_tiles;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  for (int i = threadIdx.x; i < groups; i += blockDim.x) counts[i] = 0, fill[i] = 0;
  __syncthreads();

  for (int t = warp; t < T; t += nwarps) {
    const float* s = p.scores + static_cast<size_t>(t) * E;
    int32_t* ids = p.topk_ids + static_cast<size_t>(t) * k;
    if (p.tid2eid) {
      if (lane < k) {
        const int tok = p.token_ids[t];
        int e = 0;
        if (tok < 0 || tok >= p.vocab) {
          atomicExch(p.error_flag, 1);
        } else {
          e = p.tid2eid[static_cast<size_t>(tok) * k + lane];
          if (e < 0 || e >= E) atomicExch(p.error_flag, 1), e = 0;
        }
        ids[lane] = e;
      }
    } else {
      // k rounds of argmax over the biased scores; chosen experts are remembered
      // in a per-lane bit set (expert e lives in lane e % 32, slot e / 32).
      uint32_t taken = 0;  // bit i: expert lane + 32*i taken (E <= 1024)
      for (int j = 0; j < k; ++j) {
        float best = -FLT_MAX;
        int best_i = INT_MAX;
        for (int e = lane, i = 0; e < E; e += 32, ++i) {
          if (taken >> i & 1u) continue;
          const float v = s[e] + (p.bias ? p.bias[e] : 0.0f);
          if (v > best || (v == best && e < best_i)) best = v, best_i = e;
        }
        warp_argmax(best, best_i);
        if (best_i == INT_MAX) best_i = 0;  // NaN scores: keep indices valid
        if ((best_i & 31) == lane) taken |= 1u << (best_i >> 5);
        if (lane == 0) ids[j] = best_i;
      }
    }
    __syncwarp();
    if (lane == 0) {
      float sum = 0.0f;
      for (int j = 0; j < k; ++j) sum += s[ids[j]];
      for (int j = 0; j < k; ++j) p.topk_w[static_cast<size_t>(t) * k + j] = s[ids[j]] / sum * p.routed_scaling;
    }
    for (int j = lane; j < k; j += 32) atomicAdd(&counts[ids[j]], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) counts[E] = p.shared_inter > 0 ? T : 0;
  __syncthreads();
  for (int g = threadIdx.x; g < groups; g += blockDim.x) ntile[g] = (counts[g] + p.tile_m - 1) / p.tile_m;
  __syncthreads();
  if (warp == 0) {
    warp_exclusive_scan(counts, offsets, groups, lane, nullptr);
    warp_exclusive_scan(ntile, tile_off, groups, lane, &total_tiles);
  }
  __syncthreads();
  if (threadIdx.x == 0) *p.n_tiles = min(total_tiles, p.max_tiles);
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    for (int i = 0; i < ntile[g]; ++i) {
      const int slot = tile_off[g] + i;
      if (slot >= p.max_tiles) break;  // cannot happen with max_tiles >= T*(k+1)
      p.tile_expert[slot] = g;
      p.tile_begin[slot] = offsets[g] + i * p.tile_m;
      p.tile_count[slot] = min(p.tile_m, counts[g] - i * p.tile_m);
    }
  }
  for (int q = threadIdx.x; q < T * k; q += blockDim.x) {
    const int e = p.topk_ids[q];
    p.perm_pairs[offsets[e] + atomicAdd(&fill[e], 1)] = q;
  }
  if (p.shared_inter > 0)
    for (int t = threadIdx.x; t < T; t += blockDim.x) p.perm_pairs[offsets[E] + t] = T * k + t;
}

}  // namespace

void launch_moe_route_scores(const MoeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  // hash layers need the scores too: their weights come from them
  const dim3 grid((p.experts + kLogitWarps - 1) / kLogitWarps, p.tokens);
  router_scores_kernel<<<grid, kLogitWarps * 32, 0, stream>>>(p);
}

void launch_moe_route_select(const MoeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  const size_t smem = 5 * static_cast<size_t>(p.experts + 1) * sizeof(int);
  select_and_permute_kernel<<<1, kSelectThreads, smem, stream>>>(p);
}

void launch_moe_route(const MoeParams& p, cudaStream_t stream) {
  launch_moe_route_scores(p, stream);
  launch_moe_route_select(p, stream);
}

}  // namespace megamoe::cuda::kernels
