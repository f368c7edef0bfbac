// Decode path of the MoE GEMMs (few tokens per expert): a tensor-core GEMV.
// mma.sync m16n8k16 bf16 with 16 weight rows of one expert as A (decoded from
// the repacked E2M1 words with two bit operations and one bf16x2 multiply by
// the block scale per register: exact) and up to 8 of the tile's pairs as B
// (zero padded); a tile of up to kTileM = 64 pairs loops over its n-tiles
// re-using the decoded A fragments, so an expert's weights are read once per
// tile of 64 pairs (skewed routing reads each expert once up to T = 64).
// A block is one 16-row tile x all K: its kWarps warps split K (chunk c of 64
// columns goes to warp c % kWarps), each streams one 16-byte word per lane per
// chunk and matrix (4 k-steps) with the next chunk's loads in flight; the
// partial accumulators are summed across warps in a fixed order (deterministic)
// and the epilogue applies the fp32 factor g*, then
//   GEMM1 (kMats = 2): gate and up rows together, clamped SwiGLU and the
//     routing weight fused (W4A4: applied in the combine instead), h rounded to
//     bf16 (the reference's cast before w2).
//   GEMM2 (kMats = 1): w2 rows over h, fp32 rows per pair (summed by combine).
// The shared expert (pseudo-expert E) runs in the same launch from its bf16
// fragment copy. Constraints: N multiple of 16, K multiple of 64. Covered by
// tests/kernels/test_sm90_nvfp4_moe.cpp.
#include "kernels/moe/moe_common.cuh"
#include "kernels/moe/moe_fragments.cuh"
#include "kernels/moe/moe_launch.cuh"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kWarps = 4;
constexpr int kTileM = 64;  // pairs per tile on this path
// Ring depth of the variant for tiles of <= 8 pairs: as deep as fits 128 registers without
// spills (GEMM1 streams two matrices per chunk, GEMM2 one).
template <int kMats>
constexpr int kSmallStages = kMats == 2 ? 3 : 4;

// Per-lane operands of one 64-column chunk: A words (routed: 1 per matrix;
// shared: 4 per matrix, already bf16) and the scale bytes.
template <int kMats, bool kShared>
struct Chunk {
  uint4 q[kMats][kShared ? 4 : 1];
  uint32_t s[kMats];
};

template <int kMats, bool kShared>
__device__ __forceinline__ void load_chunk(Chunk<kMats, kShared>& ch, const uint32_t* const (&w)[2],
                                           const uint16_t* const (&s)[2], int c, int lane) {
#pragma unroll
  for (int mat = 0; mat < kMats; ++mat) {
    if (kShared) {
#pragma unroll
      for (int j = 0; j < 4; ++j) ch.q[mat][j] = ld_stream(w[mat] + ((size_t(c) * 4 + j) * 32 + lane) * 4);
      ch.s[mat] = 0;
    } else {
      ch.q[mat][0] = ld_stream(w[mat] + (size_t(c) * 32 + lane) * 4);
      ch.s[mat] = __ldg(s[mat] + size_t(c) * 32 + lane);
    }
  }
}

// B fragment words of one lane for a chunk: 16 contiguous bf16 of its pair's row.
__device__ __forceinline__ void load_b(const uint16_t* src, int c, int t, uint32_t (&b)[8]) {
  if (src == nullptr) {
#pragma unroll
    for (int i = 0; i < 8; ++i) b[i] = 0;
    return;
  }
  const uint4* p = reinterpret_cast<const uint4*>(src + c * 64 + 16 * t);
  const uint4 v0 = __ldg(p), v1 = __ldg(p + 1);
  b[0] = v0.x, b[1] = v0.y, b[2] = v0.z, b[3] = v0.w, b[4] = v1.x, b[5] = v1.y, b[6] = v1.z, b[7] = v1.w;
}

// Streams the K chunks of this warp (c = warp, warp + kWarps, ...) with
// kStages chunks' A words, scales and first-n-tile B values in flight in a
// register ring while one chunk computes. More stages = more bytes in flight
// per warp, which is what bounds the decode sizes (too few bytes in flight for
// the HBM latency), at the price of registers: the T <= 8 variant has a single
// n-tile of accumulators and spends the freed registers on a deeper ring.
template <int kMats, bool kShared, int kMaxNt, int kStages>
__device__ __forceinline__ void k_loop(const uint32_t* const (&w)[2], const uint16_t* const (&s)[2], int KC,
                                       const uint16_t* const* src_row, int n_tiles, float (&acc)[kMats][kMaxNt][4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const uint16_t* src0 = src_row[g];
  if (warp >= KC) return;
  Chunk<kMats, kShared> ring[kStages];
  uint32_t bring[kStages][8];
#pragma unroll
  for (int st = 0; st < kStages; ++st) {
    const int c = warp + st * kWarps;
    if (c < KC) {
      load_chunk<kMats, kShared>(ring[st], w, s, c, lane);
      load_b(src0, c, t, bring[st]);
    }
  }
  for (int base = warp; base < KC; base += kStages * kWarps) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) {
      const int c = base + st * kWarps;
      if (c >= KC) break;
      const Chunk<kMats, kShared> cur = ring[st];
      uint32_t b0[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) b0[i] = bring[st][i];
      const int cn = c + kStages * kWarps;
      if (cn < KC) {  // refill this ring slot while the chunk computes
        load_chunk<kMats, kShared>(ring[st], w, s, cn, lane);
        load_b(src0, cn, t, bring[st]);
      }
      uint32_t a[kMats][4][4];
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat) {
        if (kShared) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            a[mat][j][0] = cur.q[mat][j].x, a[mat][j][1] = cur.q[mat][j].y;
            a[mat][j][2] = cur.q[mat][j].z, a[mat][j][3] = cur.q[mat][j].w;
          }
        } else {
          const uint32_t sg = scale_pair_bits<0>(cur.s[mat]), sg8 = scale_pair_bits<1>(cur.s[mat]);
          const uint32_t words[4] = {cur.q[mat][0].x, cur.q[mat][0].y, cur.q[mat][0].z, cur.q[mat][0].w};
#pragma unroll
          for (int j = 0; j < 4; ++j) decode_fragment(words[j], sg, sg8, a[mat][j]);
        }
      }
#pragma unroll
      for (int nt = 0; nt < kMaxNt; ++nt) {
        if (nt >= n_tiles) break;
        uint32_t b[8];
        if (nt == 0) {
#pragma unroll
          for (int i = 0; i < 8; ++i) b[i] = b0[i];
        } else {
          load_b(src_row[nt * 8 + g], c, t, b);
        }
#pragma unroll
        for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_bf16_16816(acc[mat][nt], a[mat][j], b[2 * j], b[2 * j + 1]);
      }
    }
  }
}

// Everything after the tile's pairs are known: the K loop, the split-K
// reduction and the fused epilogue, for tiles of up to kMaxNt n-tiles of 8
// pairs. kStages: ring depth for routed chunks (the shared expert's bf16
// chunks are 4x larger and keep one stage).
template <int kMats, int kMaxNt, int kStages>
__device__ __forceinline__ void gemv_tile(const MoeParams& p, int e, int rt, int N, int K, int cnt,
                                          const uint16_t* const* src_row, const int* pair_of, float* red_raw) {
  float(&red)[kWarps - 1][kMats][kMaxNt][4][32] =
      *reinterpret_cast<float(*)[kWarps - 1][kMats][kMaxNt][4][32]>(red_raw);
  const bool shared = e == p.experts;
  const int KC = K / 64, NT = N / 16, n_tiles = (cnt + 7) / 8;
  float acc[kMats][kMaxNt][4];
#pragma unroll
  for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
    for (int nt = 0; nt < kMaxNt; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mat][nt][i] = 0.0f;

  float gscale[2] = {1.0f, 1.0f};
  if (shared) {
    const size_t off = size_t(rt) * KC * 4 * 32 * 4;
    const uint32_t* w[2] = {(kMats == 2 ? p.sf1 : p.sf2) + off, p.sf3 + off};
    const uint16_t* s[2] = {nullptr, nullptr};
    k_loop<kMats, true, kMaxNt, 1>(w, s, KC, src_row, n_tiles, acc);
  } else {
    const int le = moe_local_expert(p, e);  // weights hold the local experts only
    const size_t blk = (size_t(le) * NT + rt) * KC;
    const uint32_t* w[2] = {(kMats == 2 ? p.w1 : p.w2) + blk * 32 * 4, p.w3 + blk * 32 * 4};
    const uint16_t* s[2] = {(kMats == 2 ? p.s1 : p.s2) + blk * 32, p.s3 + blk * 32};
    k_loop<kMats, false, kMaxNt, kStages>(w, s, KC, src_row, n_tiles, acc);
    gscale[0] = kMats == 2 ? p.g1[le] : p.g2[le];
    if (kMats == 2) gscale[1] = p.g3[le];
  }

  // Split-K reduction: warps 1.. park their partials, warp 0 adds them in order.
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if (warp > 0) {
#pragma unroll
    for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
      for (int nt = 0; nt < kMaxNt; ++nt) {
        if (nt >= n_tiles) break;
#pragma unroll
        for (int i = 0; i < 4; ++i) red[warp - 1][mat][nt][i][lane] = acc[mat][nt][i];
      }
  }
  __syncthreads();
  if (warp != 0) return;
  if (!shared) {  // W4A4 activation scale, read after the barrier so it is not held through the K loop
    const float act = act_global_scale(p, kMats == 2 ? 1 : 2, e);
    gscale[0] *= act, gscale[1] *= act;
  }
  const int hs = h_stride(p);
#pragma unroll
  for (int nt = 0; nt < kMaxNt; ++nt) {
    if (nt >= n_tiles) break;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v[2];
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat) {
        float sum = acc[mat][nt][i];
        for (int w = 0; w < kWarps - 1; ++w) sum += red[w][mat][nt][i][lane];
        v[mat] = sum * gscale[mat];
      }
      const int m = nt * 8 + 2 * t + (i & 1);
      if (m >= cnt) continue;
      const int row = rt * 16 + g + (i >> 1) * 8;
      const int pair = pair_of[m];
      if (kMats == 2) {
        const float weight = shared || p.weight_after_gemm2 ? 1.0f : p.topk_w[pair];
        const float hv = clamped_swiglu(v[0], v[1], p.swiglu_limit) * weight;
        p.h[static_cast<size_t>(pair) * hs + row] = float_to_bf16_bits(hv);
      } else {
        p.rows[static_cast<size_t>(pair) * p.hidden + row] = v[0];
      }
    }
  }
}

// One block = one 16-row tile of one tile of pairs. The variant is chosen per
// tile at run time: tiles of <= 8 pairs (all of them at T <= 8, most of them
// with uniform routing up to T ~ 256) take the single-n-tile, deep-ring
// variant, fuller tiles the 8-n-tile one that re-uses each decoded A fragment
// for up to 64 pairs.
template <int kMats>
__global__ void __launch_bounds__(kWarps * 32, 4) moe_tc_gemv_kernel(MoeParams p) {
  __shared__ const uint16_t* src_row[kTileM];  // x (GEMM1) or h (GEMM2) row of each tile pair, null = padding
  __shared__ int pair_of[kTileM];
  __shared__ float red[(kWarps - 1) * kMats * (kTileM / 8) * 4 * 32];
  pdl_launch_dependents();
  // Tiles in reverse order: the shared expert's tiles (last, and with 4x the
  // bytes per row in bf16) are dispatched first, the short routed ones fill in.
  // They are the last ceil(T/kTileM) tiles with pairs T*k + t in token order
  // (select_and_permute_kernel), so GEMM1 runs them without waiting for the
  // router (programmatic dependent launch; GEMM2's need GEMM1's h).
  const int shared_tiles = p.shared_inter > 0 ? (p.tokens + kTileM - 1) / kTileM : 0;
  const bool early_shared = kMats == 2 && static_cast<int>(blockIdx.y) < shared_tiles;
  int e, begin = 0, cnt, first_pair = -1;  // first_pair >= 0: pairs first_pair + m, no perm_pairs
  if (early_shared) {
    e = p.experts;
    const int first_token = (shared_tiles - 1 - static_cast<int>(blockIdx.y)) * kTileM;
    first_pair = p.tokens * p.top_k + first_token;
    cnt = min(kTileM, p.tokens - first_token);
  } else {
    pdl_wait();
    const int n_tiles_total = *p.n_tiles;
    if (static_cast<int>(blockIdx.y) >= n_tiles_total) return;
    const int tile = n_tiles_total - 1 - static_cast<int>(blockIdx.y);
    e = p.tile_expert[tile], begin = p.tile_begin[tile], cnt = p.tile_count[tile];
  }
  const bool shared = e == p.experts;
  const int inter = shared ? p.shared_inter : p.intermediate;
  const int N = kMats == 2 ? inter : p.hidden;
  const int K = kMats == 2 ? p.hidden : inter;
  const int rt = blockIdx.x;
  if (rt * 16 >= N) return;
  for (int m = threadIdx.x; m < kTileM; m += blockDim.x) {
    const int pair = m >= cnt ? -1 : first_pair >= 0 ? first_pair + m : p.perm_pairs[begin + m];
    pair_of[m] = pair;
    src_row[m] = pair < 0 ? nullptr : gemm_input_row(p, kMats == 2 ? 1 : 2, pair, shared);
  }
  __syncthreads();
  if (cnt <= 8)
    gemv_tile<kMats, 1, kSmallStages<kMats>>(p, e, rt, N, K, cnt, src_row, pair_of, red);
  else
    gemv_tile<kMats, kTileM / 8, 1>(p, e, rt, N, K, cnt, src_row, pair_of, red);
}

template <int kMats>
void launch_one(const MoeParams& p, cudaStream_t stream) {
  const int inter = p.intermediate > p.shared_inter ? p.intermediate : p.shared_inter;
  const int max_n = kMats == 2 ? inter : p.hidden;
  const dim3 grid(max_n / 16, p.max_tiles);
  launch_dependent(moe_tc_gemv_kernel<kMats>, grid, kWarps * 32, 0, stream, p);
}

}  // namespace

int moe_gemv_tile_m() { return kTileM; }

void launch_moe_gemv_gemm(const MoeParams& p, int gemm, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (gemm == 1)
    launch_one<2>(p, stream);
  else
    launch_one<1>(p, stream);
}

}  // namespace megamoe::cuda::kernels
