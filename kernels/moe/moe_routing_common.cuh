// Device helpers shared by the two routing paths (sm90_moe_routing.cu: one
// select block, for decode sizes; sm90_moe_routing_multi.cu: multi-block, for
// prefill sizes), so both choose experts and weights by the same code.
#pragma once

#include <cfloat>
#include <climits>

#include "kernels/moe/moe_params.hpp"

namespace megamoe::cuda::kernels {

// Threads of every block that calls block_scan_groups.
inline constexpr int kScanThreads = 1024;

__device__ __forceinline__ float sqrt_softplus(float g) {
  const float sp = g > 20.0f ? g : log1pf(expf(g));  // torch softplus, threshold 20
  return sqrtf(sp);
}

// Zeroes the multi-block routing's counts and fill counters (block 0 of a
// scores kernel, which every top-k launch waits for).
__device__ __forceinline__ void zero_route_counts(const MoeParams& p) {
  if (p.route_counts == nullptr || blockIdx.x != 0 || blockIdx.y != 0) return;
  for (int i = threadIdx.x; i < 2 * (p.experts + 1); i += blockDim.x) p.route_counts[i] = 0;
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

// One warp routes token t: returns, in lane j < k, the expert of slot j, and
// writes topk_ids / topk_w. s: the token's E scores; bias: [E] or null. Learned
// routing: k rounds of argmax over the biased scores (ties -> lower index),
// the chosen experts remembered in a per-lane bit set (expert e lives in lane
// e % 32, bit e / 32; E <= 1024). Hash routing: tid2eid of the token id, an
// out-of-range id or entry sets *error_flag and uses expert 0. Weights: the
// unbiased scores of the chosen experts over their sum (slots 0..k-1 in order,
// as the CPU router) x routed_scaling.
__device__ __forceinline__ int route_token(const MoeParams& p, const float* s, const float* bias, int t, int lane) {
  const int E = p.experts, k = p.top_k;
  int my_id = 0;
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
      my_id = e;
    }
  } else {
    uint32_t taken = 0;
    for (int j = 0; j < k; ++j) {
      float best = -FLT_MAX;
      int best_i = INT_MAX;
      for (int e = lane, i = 0; e < E; e += 32, ++i) {
        if (taken >> i & 1u) continue;
        const float v = s[e] + (bias != nullptr ? bias[e] : 0.0f);
        if (v > best || (v == best && e < best_i)) best = v, best_i = e;
      }
      warp_argmax(best, best_i);
      if (best_i == INT_MAX) best_i = 0;  // NaN scores: keep indices valid
      if ((best_i & 31) == lane) taken |= 1u << (best_i >> 5);
      if (lane == j) my_id = best_i;
    }
  }
  const float my_s = lane < k ? s[my_id] : 0.0f;
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += __shfl_sync(0xffffffffu, my_s, j);
  if (lane < k) {
    const size_t q = static_cast<size_t>(t) * k + lane;
    p.topk_ids[q] = my_id;
    p.topk_w[q] = my_s / sum * p.routed_scaling;
  }
  return my_id;
}

// Block-wide exclusive scans of counts and of tiles per group (ceil(count /
// tile_m)) in one pass: each thread owns a run of consecutive groups, warp
// scans of the run sums, then a scan of the warp totals. All kScanThreads
// threads call it; wsum is block-shared scratch.
__device__ inline void block_scan_groups(const int* counts, int* offsets, int* ntile, int* tile_off, int n,
                                         int tile_m, int (*wsum)[2], int* total_tiles) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int per = (n + kScanThreads - 1) / kScanThreads;
  const int b = min(n, static_cast<int>(threadIdx.x) * per), e = min(n, b + per);
  int sc = 0, st = 0;
  for (int i = b; i < e; ++i) {
    const int nt = (counts[i] + tile_m - 1) / tile_m;
    ntile[i] = nt;
    sc += counts[i], st += nt;
  }
  int ic = sc, it = st;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int vc = __shfl_up_sync(0xffffffffu, ic, o), vt = __shfl_up_sync(0xffffffffu, it, o);
    if (lane >= o) ic += vc, it += vt;
  }
  if (lane == 31) wsum[warp][0] = ic, wsum[warp][1] = it;
  __syncthreads();
  if (warp == 0) {
    const int c = wsum[lane][0], t = wsum[lane][1];
    int jc = c, jt = t;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int vc = __shfl_up_sync(0xffffffffu, jc, o), vt = __shfl_up_sync(0xffffffffu, jt, o);
      if (lane >= o) jc += vc, jt += vt;
    }
    __syncwarp();
    wsum[lane][0] = jc - c, wsum[lane][1] = jt - t;  // exclusive warp bases
    if (lane == 31) *total_tiles = jt;
  }
  __syncthreads();
  int rc = wsum[warp][0] + ic - sc, rt = wsum[warp][1] + it - st;
  for (int i = b; i < e; ++i) {
    offsets[i] = rc, tile_off[i] = rt;
    rc += counts[i], rt += ntile[i];
  }
}

// Tile table of the permutation: tile_expert / tile_begin / tile_count and n_tiles.
__device__ inline void write_tiles(const MoeParams& p, const int* counts, const int* offsets, const int* ntile,
                                   const int* tile_off, int groups, int total_tiles) {
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
}

}  // namespace megamoe::cuda::kernels
