// Routing at prefill sizes (T >= 256, moe_routing_multi.hpp): the single select
// block of sm90_moe_routing.cu runs every token's top-k on one SM, which at
// T = 4096 cost more than a millisecond, and its CUDA-core scores kernel ran
// at ~11 TFLOP/s. Here:
//   1. router_scores_mma_kernel: x . gate on tensor
//      cores, mma.sync m16n8k16 bf16 x bf16 -> fp32 (the inputs are bf16, so
//      only the summation order differs from the fp32 CUDA-core dot), then
//      sqrtsoftplus; also zeroes the counts workspace (both scores kernels do).
//   2. route_topk_kernel: a warp per token over the whole GPU (route_token,
//      the select block's own code), counts by global atomics.
//   3. route_permute_kernel: every block scans the E+1 counts itself (cheap),
//      block 0 writes the tile table, all blocks scatter their share of the
//      pairs with global atomics on the fill counters.
// Each stage waits for the previous one (programmatic dependent launches).
// Order of pairs within an expert is not fixed (as with the select block's
// shared atomics); every pair's result is independent of it.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/moe/moe_fragments.cuh"
#include "kernels/moe/moe_launch.cuh"
#include "kernels/moe/moe_routing_common.cuh"
#include "kernels/moe/moe_routing_multi.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kMmaThreads = 128;  // 4 warps
constexpr int kMmaExpertTiles = 4;  // n-tiles of 8 experts per warp: 32 experts
constexpr int kTopkThreads = 256;   // 8 tokens per block
constexpr int kPermuteBlocksMax = 64;

// 16 contiguous bf16 (two 16-byte loads) of a row at column c*64 + 16t: the
// lane's values for the 4 k-steps of chunk c under the repack's K permutation
// (moe_params.hpp, "Repacked layouts"): k-step j uses words 2j and 2j+1.
__device__ __forceinline__ void load_row16(const uint16_t* row, int c, int t, uint32_t (&w)[8]) {
  const uint4* p = reinterpret_cast<const uint4*>(row + c * 64 + 16 * t);
  const uint4 v0 = __ldg(p), v1 = __ldg(p + 1);
  w[0] = v0.x, w[1] = v0.y, w[2] = v0.z, w[3] = v0.w, w[4] = v1.x, w[5] = v1.y, w[6] = v1.z, w[7] = v1.w;
}

template <int MT>
struct ScoreOperands {
  uint32_t a[MT][2][8];               // token rows g and g+8 of each m-tile
  uint32_t b[kMmaExpertTiles][8];     // expert row g of each n-tile
};

template <int MT>
__device__ __forceinline__ void load_operands(ScoreOperands<MT>& o, const uint16_t* const (&xa)[MT][2],
                                              const uint16_t* const (&gb)[kMmaExpertTiles], int c, int t) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) load_row16(xa[mt][r], c, t, o.a[mt][r]);
#pragma unroll
  for (int nt = 0; nt < kMmaExpertTiles; ++nt) load_row16(gb[nt], c, t, o.b[nt]);
}

template <int MT>
__device__ __forceinline__ void mma_operands(const ScoreOperands<MT>& o, float (&acc)[MT][kMmaExpertTiles][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const uint32_t a[4] = {o.a[mt][0][2 * j], o.a[mt][1][2 * j], o.a[mt][0][2 * j + 1], o.a[mt][1][2 * j + 1]};
#pragma unroll
      for (int nt = 0; nt < kMmaExpertTiles; ++nt) mma_bf16_16816(acc[mt][nt], a, o.b[nt][2 * j], o.b[nt][2 * j + 1]);
    }
}

// scores[t, e] = sqrtsoftplus(x_t . gate_e). A warp computes 16*MT tokens x 32
// experts; the block's 4 warps either tile 2 x 2 (KS = 1: a 32*MT x 64 block,
// for large T: x and gate each read by half the warps) or share one tile and
// split K four ways (KS = 4: a 16*MT x 32 block, 4x the blocks for mid T),
// summed in a fixed order: deterministic. Rows past T or E are clamped reads,
// never stored. Needs D % 64 == 0.
template <int MT, int KS>
__global__ void __launch_bounds__(kMmaThreads) router_scores_mma_kernel(MoeParams p) {
  static_assert(KS == 1 || KS == 4, "the 4 warps tile 2 x 2 or split K by 4");
  constexpr int WM = KS == 1 ? 2 : 1, WN = KS == 1 ? 2 : 1;
  __shared__ float red[KS > 1 ? (KS - 1) * MT * kMmaExpertTiles * 4 * 32 : 1];
  zero_route_counts(p);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int ks = warp % KS, wn = (warp / KS) % WN, wm = warp / (KS * WN);
  const int tok0 = blockIdx.x * (WM * MT * 16) + wm * MT * 16;
  const int exp0 = blockIdx.y * (WN * 32) + wn * 32;
  const int T = p.tokens, E = p.experts, D = p.hidden;
  const uint16_t* xa[MT][2];
  const uint16_t* gb[kMmaExpertTiles];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) xa[mt][r] = p.x + static_cast<size_t>(min(tok0 + mt * 16 + g + 8 * r, T - 1)) * D;
#pragma unroll
  for (int nt = 0; nt < kMmaExpertTiles; ++nt)
    gb[nt] = p.gate + static_cast<size_t>(min(exp0 + nt * 8 + g, E - 1)) * D;

  float acc[MT][kMmaExpertTiles][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kMmaExpertTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
  // Two register stages: the next chunk's loads are in flight while one computes.
  const int KC = D / 64;
  ScoreOperands<MT> s0, s1;
  if (ks < KC) load_operands(s0, xa, gb, ks, t);
  for (int c = ks; c < KC; c += 2 * KS) {
    if (c + KS < KC) load_operands(s1, xa, gb, c + KS, t);
    mma_operands(s0, acc);
    if (c + KS >= KC) break;
    if (c + 2 * KS < KC) load_operands(s0, xa, gb, c + 2 * KS, t);
    mma_operands(s1, acc);
  }
  pdl_launch_dependents();  // late: the top-k blocks would only wait, taking this grid's slots

  if (KS > 1) {
    float(&r)[KS > 1 ? KS - 1 : 1][MT][kMmaExpertTiles][4][32] =
        *reinterpret_cast<float(*)[KS > 1 ? KS - 1 : 1][MT][kMmaExpertTiles][4][32]>(red);
    if (ks > 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kMmaExpertTiles; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i) r[ks - 1][mt][nt][i][lane] = acc[mt][nt][i];
    }
    __syncthreads();
    if (ks > 0) return;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kMmaExpertTiles; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int w = 0; w < KS - 1; ++w) acc[mt][nt][i] += r[w][mt][nt][i][lane];
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kMmaExpertTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int tok = tok0 + mt * 16 + g + 8 * (i >> 1), e = exp0 + nt * 8 + 2 * t + (i & 1);
        if (tok < T && e < E) p.scores[static_cast<size_t>(tok) * E + e] = sqrt_softplus(acc[mt][nt][i]);
      }
}

// A warp per token: top-k (or hash) and weights, then the expert counts.
__global__ void __launch_bounds__(kTopkThreads) route_topk_kernel(MoeParams p) {
  pdl_wait();  // the scores, and the zeroed counts
  pdl_launch_dependents();
  const int lane = threadIdx.x & 31;
  const int t = blockIdx.x * (kTopkThreads / 32) + (threadIdx.x >> 5);
  if (t >= p.tokens) return;
  const int my_id = route_token(p, p.scores + static_cast<size_t>(t) * p.experts, p.bias, t, lane);
  // Expert parallel: only this rank's experts are counted (and scattered).
  if (lane < p.top_k && moe_expert_is_local(p, my_id)) atomicAdd(&p.route_counts[my_id], 1);
}

// Offsets and tiles from the counts (every block scans them; block 0 writes
// the tile table), then a grid-stride scatter of the pairs into perm_pairs.
__global__ void __launch_bounds__(kScanThreads) route_permute_kernel(MoeParams p) {
  extern __shared__ int ismem[];
  const int E = p.experts, k = p.top_k, T = p.tokens, groups = E + 1;
  int* counts = ismem;             // [E+1]
  int* offsets = counts + groups;  // [E+1]
  int* ntile = offsets + groups;   // [E+1]
  int* tile_off = ntile + groups;  // [E+1]
  __shared__ int wsum[kScanThreads / 32][2];
  __shared__ int total_tiles;
  pdl_launch_dependents();  // GEMM1 may start: its shared-expert tiles need no routing
  pdl_wait();               // the counts and topk_ids
  for (int i = threadIdx.x; i < E; i += kScanThreads) counts[i] = __ldcg(p.route_counts + i);
  if (threadIdx.x == 0) counts[E] = p.shared_inter > 0 ? T : 0;
  __syncthreads();
  block_scan_groups(counts, offsets, ntile, tile_off, groups, p.tile_m, wsum, &total_tiles);
  __syncthreads();
  if (blockIdx.x == 0) write_tiles(p, counts, offsets, ntile, tile_off, groups, total_tiles);
  int* fill = p.route_counts + groups;
  const int stride = gridDim.x * kScanThreads;
  for (int q = blockIdx.x * kScanThreads + threadIdx.x; q < T * k; q += stride) {
    const int e = p.topk_ids[q];
    if (!moe_expert_is_local(p, e)) continue;  // expert parallel: another rank's pair
    p.perm_pairs[offsets[e] + atomicAdd(&fill[e], 1)] = q;
  }
  if (p.shared_inter > 0)
    for (int t = blockIdx.x * kScanThreads + threadIdx.x; t < T; t += stride) p.perm_pairs[offsets[E] + t] = T * k + t;
}

template <int MT, int KS>
void launch_scores(const MoeParams& p, cudaStream_t stream) {
  constexpr int tokens_per_block = (KS == 1 ? 2 : 1) * MT * 16, experts_per_block = (KS == 1 ? 2 : 1) * 32;
  const dim3 grid((p.tokens + tokens_per_block - 1) / tokens_per_block,
                  (p.experts + experts_per_block - 1) / experts_per_block);
  router_scores_mma_kernel<MT, KS><<<grid, kMmaThreads, 0, stream>>>(p);
}

}  // namespace

bool moe_multi_block_routing(const MoeParams& p) {
  return multi_block_routing_enabled() && p.route_counts != nullptr && p.tokens >= kMultiSelectMinTokens &&
         p.experts <= 1024;
}

bool launch_moe_route_scores_mma(const MoeParams& p, cudaStream_t stream) {
  if (!moe_multi_block_routing(p) || p.tokens < kMmaScoresMinTokens || p.hidden % 64 != 0) return false;
  if (p.tokens >= 2048)
    launch_scores<2, 1>(p, stream);  // 64 x 64 blocks: x and gate each re-read half as often
  else
    launch_scores<1, 4>(p, stream);  // 16 x 32 blocks with split K: enough blocks for mid T
  return true;
}

void launch_moe_route_select_multi(const MoeParams& p, cudaStream_t stream) {
  const int warps_per_block = kTopkThreads / 32;
  launch_dependent(route_topk_kernel, (p.tokens + warps_per_block - 1) / warps_per_block, kTopkThreads, 0, stream, p);
  const long long pairs = static_cast<long long>(p.tokens) * p.top_k;
  const int blocks = static_cast<int>(std::min<long long>(kPermuteBlocksMax, std::max<long long>(1, pairs / 2048)));
  const size_t smem = 4 * static_cast<size_t>(p.experts + 1) * sizeof(int);
  launch_dependent(route_permute_kernel, blocks, kScanThreads, smem, stream, p);
}

}  // namespace megamoe::cuda::kernels
