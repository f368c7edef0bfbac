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
// Two variants of the launch (see "The streamed variant" below): split (this
// description) and streamed, which keeps the A words of small tiles in a
// shared-memory ring fed by bulk copies; GEMM2 takes it from T = 16.
// The shared expert (pseudo-expert E) runs in the same launch from its bf16
// fragment copy. Constraints: N multiple of 16, K multiple of 64. Covered by
// tests/kernels/test_sm90_nvfp4_moe.cpp.
#include <cstdlib>
#include <cstring>

#include "kernels/moe/moe_async.cuh"
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
// The streamed variant (below): the token count from which it replaces the
// split variant, per GEMM (MEGAMOE_MOE_GEMV=split / stream forces one at every
// T, for A/B runs). GEMM1 stays split: streamed it is 3-7% faster at uniform
// T = 16..64 but 6% slower at Flash T = 256 and up to 2x slower with skewed
// routing (its full tiles loop over the block's 4 row tiles); GEMM2 streamed is
// 1-11% faster everywhere measured (kernels/moe/NOTES.md, version 10).
template <int kMats>
constexpr int kStreamMinTokens = kMats == 2 ? 1 << 30 : 16;

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

// The epilogue of one output element: v = the fp32 results (gate, up for
// GEMM1) of `row` for `pair`, already times g*.
template <int kMats>
__device__ __forceinline__ void store_output(const MoeParams& p, bool shared, int hs, int pair, int row,
                                             const float (&v)[2]) {
  if (kMats == 2) {
    const float weight = shared || p.weight_after_gemm2 ? 1.0f : p.topk_w[pair];
    const float hv = clamped_swiglu(v[0], v[1], p.swiglu_limit) * weight;
    p.h[static_cast<size_t>(pair) * hs + row] = float_to_bf16_bits(hv);
  } else {
    p.rows[static_cast<size_t>(pair) * p.hidden + row] = v[0];
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
      float v[2] = {0.0f, 0.0f};
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat) {
        float sum = acc[mat][nt][i];
        for (int w = 0; w < kWarps - 1; ++w) sum += red[w][mat][nt][i][lane];
        v[mat] = sum * gscale[mat];
      }
      const int m = nt * 8 + 2 * t + (i & 1);
      if (m >= cnt) continue;
      store_output<kMats>(p, shared, hs, pair_of[m], rt * 16 + g + (i >> 1) * 8, v);
    }
  }
}

// The tile of pairs blockIdx.y works on (tiles in reverse order: the shared
// expert's tiles, last and with 4x the bytes per row in bf16, are dispatched
// first, the short routed ones fill in). They are the last ceil(T/kTileM)
// tiles with pairs T*k + t in token order (select_and_permute_kernel), so
// GEMM1 runs them without waiting for the router (programmatic dependent
// launch; GEMM2's need GEMM1's h). cnt = 0: no tile. N x K: the GEMM's shape
// for this tile's expert (the shared expert's inner size may differ).
struct TileWork {
  int e = 0, begin = 0, cnt = 0, first_pair = -1;  // first_pair >= 0: pairs first_pair + m, no perm_pairs
  bool shared = false;
  int N = 0, K = 0;
};

template <int kMats>
__device__ __forceinline__ void set_tile_shape(const MoeParams& p, TileWork& tw) {
  tw.shared = tw.e == p.experts;
  const int inter = tw.shared ? p.shared_inter : p.intermediate;
  tw.N = kMats == 2 ? inter : p.hidden;
  tw.K = kMats == 2 ? p.hidden : inter;
}

template <int kMats>
__device__ __forceinline__ TileWork tile_work(const MoeParams& p) {
  TileWork tw;
  const int shared_tiles = p.shared_inter > 0 ? (p.tokens + kTileM - 1) / kTileM : 0;
  if (kMats == 2 && static_cast<int>(blockIdx.y) < shared_tiles) {
    tw.e = p.experts;
    const int first_token = (shared_tiles - 1 - static_cast<int>(blockIdx.y)) * kTileM;
    tw.first_pair = p.tokens * p.top_k + first_token;
    tw.cnt = min(kTileM, p.tokens - first_token);
    set_tile_shape<kMats>(p, tw);
    return tw;
  }
  pdl_wait();
  const int n_tiles_total = *p.n_tiles;
  if (static_cast<int>(blockIdx.y) >= n_tiles_total) return tw;
  const int tile = n_tiles_total - 1 - static_cast<int>(blockIdx.y);
  tw.e = p.tile_expert[tile], tw.begin = p.tile_begin[tile], tw.cnt = p.tile_count[tile];
  set_tile_shape<kMats>(p, tw);
  return tw;
}

// The B row (x for GEMM1, h for GEMM2; null = padding) and the pair of each tile slot.
template <int kMats>
__device__ __forceinline__ void fill_tile_rows(const MoeParams& p, const TileWork& tw, const uint16_t** src_row,
                                               int* pair_of) {
  for (int m = threadIdx.x; m < kTileM; m += blockDim.x) {
    const int pair = m >= tw.cnt ? -1 : tw.first_pair >= 0 ? tw.first_pair + m : p.perm_pairs[tw.begin + m];
    pair_of[m] = pair;
    src_row[m] = pair < 0 ? nullptr : gemm_input_row(p, kMats == 2 ? 1 : 2, pair, tw.shared);
  }
}

// One 16-row tile rt of tile tw by the split variant, the variant picked by the pair count.
template <int kMats>
__device__ __forceinline__ void split_tile(const MoeParams& p, const TileWork& tw, int rt,
                                           const uint16_t* const* src_row, const int* pair_of, float* red) {
  if (tw.cnt <= 8)
    gemv_tile<kMats, 1, kSmallStages<kMats>>(p, tw.e, rt, tw.N, tw.K, tw.cnt, src_row, pair_of, red);
  else
    gemv_tile<kMats, kTileM / 8, 1>(p, tw.e, rt, tw.N, tw.K, tw.cnt, src_row, pair_of, red);
}

// ---- The split variant (T < kStreamMinTokens) ----
// One block = one 16-row tile of one tile of pairs. The variant is chosen per
// tile at run time: tiles of <= 8 pairs (all of them at T <= 8) take the
// single-n-tile, deep-ring variant, fuller tiles the 8-n-tile one that re-uses
// each decoded A fragment for up to 64 pairs.
template <int kMats>
__global__ void __launch_bounds__(kWarps * 32, 4) moe_tc_gemv_kernel(MoeParams p) {
  __shared__ const uint16_t* src_row[kTileM];
  __shared__ int pair_of[kTileM];
  __shared__ float red[(kWarps - 1) * kMats * (kTileM / 8) * 4 * 32];
  pdl_launch_dependents();
  const TileWork tw = tile_work<kMats>(p);
  const int rt = blockIdx.x;
  if (tw.cnt == 0 || rt * 16 >= tw.N) return;
  fill_tile_rows<kMats>(p, tw, src_row, pair_of);
  __syncthreads();
  split_tile<kMats>(p, tw, rt, src_row, pair_of, red);
}

// ---- The streamed variant (batched decode, T >= kStreamMinTokens) ----
// A block is kWarps consecutive 16-row tiles of one tile of pairs, warp w
// owning row tile w over all of K (no split-K reduction; the warps read the
// same B values at the same time, so B is fetched once per block through L1).
// Tiles of <= 8 routed pairs stream the A words and scales of all four row
// tiles through a shared-memory ring of kStages stages filled by bulk
// copies (one lane per contiguous run) completing on mbarriers: the bytes in
// flight no longer cost registers, which is what bounded the split variant at
// T = 16..256 (ncu: 23% occupancy, latency-bound). Warp 0 refills a stage
// once all warps have released it. The shared expert's tiles and fuller tiles
// run the split variant's code over the block's row tiles one after another.
template <int kMats>
struct StreamRing {
  static constexpr int kStages = kMats == 2 ? 3 : 5;
  static constexpr int kChunks = 4;  // 64-column chunks per stage and row tile
  static constexpr int kWordBytes = 32 * 16;          // one chunk of one matrix: a 16-byte word per lane
  static constexpr int kScaleBytes = 32 * 2;
  static constexpr int kWordsBytes = kWarps * kMats * kChunks * kWordBytes;
  static constexpr int kStageBytes = kWordsBytes + kWarps * kMats * kChunks * kScaleBytes;
  // Split-variant partials (8 n-tiles), overlaid on the ring: a block takes one or the other.
  static constexpr int kRedBytes = (kWarps - 1) * kMats * (kTileM / 8) * 4 * 32 * 4;
  static constexpr int kSmemBytes = kStages * kStageBytes > kRedBytes ? kStages * kStageBytes : kRedBytes;
};

// Warp 0: issues stage `i` (chunks i*kChunks ..) of the row tiles rt0 .. rt0 + rows - 1.
template <int kMats>
__device__ __forceinline__ void issue_stage(const MoeParams& p, int le, int NT, int KC, int rt0, int rows, int i,
                                            uint32_t ring, uint32_t full_bar) {
  using R = StreamRing<kMats>;
  const int lane = threadIdx.x & 31, c0 = i * R::kChunks, nc = min(R::kChunks, KC - c0);
  const uint32_t stage = ring + (i % R::kStages) * R::kStageBytes;
  if (lane == 0) mbar_arrive_expect_tx(full_bar, rows * kMats * nc * (R::kWordBytes + R::kScaleBytes));
  __syncwarp();
  if (lane < rows * kMats * 2) {
    const int w = lane / (2 * kMats), mat = (lane >> 1) % kMats, scales = lane & 1;
    const size_t blk = (size_t(le) * NT + rt0 + w) * KC + c0;
    const int run = (w * kMats + mat) * R::kChunks;
    if (scales) {
      const uint16_t* src = (mat == 0 ? (kMats == 2 ? p.s1 : p.s2) : p.s3) + blk * 32;
      bulk_copy_g2s(stage + R::kWordsBytes + run * R::kScaleBytes, src, nc * R::kScaleBytes, full_bar);
    } else {
      const uint32_t* src = (mat == 0 ? (kMats == 2 ? p.w1 : p.w2) : p.w3) + blk * 32 * 4;
      bulk_copy_g2s(stage + run * R::kWordBytes, src, nc * R::kWordBytes, full_bar);
    }
  }
}

// A routed tile of <= 8 pairs, row tiles rt0 + warp, through the ring.
template <int kMats>
__device__ __forceinline__ void stream_tile(const MoeParams& p, int e, int rt0, int N, int K, int cnt,
                                            const uint16_t* const* src_row, const int* pair_of,
                                            unsigned char* ring_ptr, uint64_t* bars) {
  using R = StreamRing<kMats>;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int le = moe_local_expert(p, e), NT = N / 16, KC = K / 64;
  const int rows = min(kWarps, NT - rt0), n_stages = (KC + R::kChunks - 1) / R::kChunks;
  const bool active = warp < rows;
  const uint32_t ring = smem_addr(ring_ptr), full = smem_addr(bars), empty = smem_addr(bars + R::kStages);
  if (warp == 0)
    for (int i = 0; i < R::kStages && i < n_stages; ++i)
      issue_stage<kMats>(p, le, NT, KC, rt0, rows, i, ring, full + 8 * i);

  float acc[kMats][4];
#pragma unroll
  for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mat][i] = 0.0f;
  const uint16_t* src0 = active ? src_row[g] : nullptr;
  uint32_t b_next[8];
  load_b(src0, 0, t, b_next);
  for (int i = 0; i < n_stages; ++i) {
    const int slot = i % R::kStages;
    const uint32_t parity = (i / R::kStages) & 1;
    mbar_wait(full + 8 * slot, parity);
    const unsigned char* stage = ring_ptr + slot * R::kStageBytes;
#pragma unroll
    for (int j = 0; j < R::kChunks; ++j) {
      const int c = i * R::kChunks + j;
      if (c >= KC) break;
      uint32_t b[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) b[q] = b_next[q];
      if (c + 1 < KC) load_b(src0, c + 1, t, b_next);
      if (!active) continue;
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat) {
        const int run = (warp * kMats + mat) * R::kChunks + j;
        const uint4 q = *reinterpret_cast<const uint4*>(stage + run * R::kWordBytes + lane * 16);
        const uint32_t sc = *reinterpret_cast<const uint16_t*>(stage + R::kWordsBytes + run * R::kScaleBytes + lane * 2);
        const uint32_t sg = scale_pair_bits<0>(sc), sg8 = scale_pair_bits<1>(sc);
        const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          uint32_t a[4];
          decode_fragment(words[k], sg, sg8, a);
          mma_bf16_16816(acc[mat], a, b[2 * k], b[2 * k + 1]);
        }
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(empty + 8 * slot);
    if (warp == 0 && i + R::kStages < n_stages) {
      mbar_wait(empty + 8 * slot, parity);
      issue_stage<kMats>(p, le, NT, KC, rt0, rows, i + R::kStages, ring, full + 8 * slot);
    }
  }
  if (!active) return;
  float gscale[2] = {kMats == 2 ? p.g1[le] : p.g2[le], kMats == 2 ? p.g3[le] : 1.0f};
  const float act = act_global_scale(p, kMats == 2 ? 1 : 2, e);
  gscale[0] *= act, gscale[1] *= act;
  const int hs = h_stride(p), rt = rt0 + warp;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = 2 * t + (i & 1);
    if (m >= cnt) continue;
    float v[2] = {0.0f, 0.0f};
#pragma unroll
    for (int mat = 0; mat < kMats; ++mat) v[mat] = acc[mat][i] * gscale[mat];
    store_output<kMats>(p, false, hs, pair_of[m], rt * 16 + g + (i >> 1) * 8, v);
  }
}

template <int kMats>
__global__ void __launch_bounds__(kWarps * 32, 4) moe_tc_gemv_stream_kernel(MoeParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ const uint16_t* src_row[kTileM];
  __shared__ int pair_of[kTileM];
  __shared__ uint64_t bars[2 * StreamRing<kMats>::kStages];  // full[stage], then empty[stage]
  pdl_launch_dependents();
  const TileWork tw = tile_work<kMats>(p);
  const int rt0 = blockIdx.x * kWarps;
  if (tw.cnt == 0 || rt0 * 16 >= tw.N) return;
  fill_tile_rows<kMats>(p, tw, src_row, pair_of);
  const bool stream = !tw.shared && tw.cnt <= 8;
  if (stream && threadIdx.x == 0) {
    for (int i = 0; i < StreamRing<kMats>::kStages; ++i) {
      mbar_init(smem_addr(bars + i), 1);
      mbar_init(smem_addr(bars + StreamRing<kMats>::kStages + i), kWarps);
    }
    mbar_fence_init();
  }
  __syncthreads();
  if (stream) {
    stream_tile<kMats>(p, tw.e, rt0, tw.N, tw.K, tw.cnt, src_row, pair_of, smem, bars);
    return;
  }
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll 1
  for (int r = 0; r < kWarps && (rt0 + r) * 16 < tw.N; ++r) {
    if (r > 0) __syncthreads();  // warp 0 has read the partials of the previous row tile
    split_tile<kMats>(p, tw, rt0 + r, src_row, pair_of, red);
  }
}

// MEGAMOE_MOE_GEMV=split / stream (read once): that variant at every T.
enum class GemvVariant { kAuto, kSplit, kStream };
GemvVariant forced_gemv_variant() {
  static const GemvVariant v = [] {
    const char* s = std::getenv("MEGAMOE_MOE_GEMV");
    if (s != nullptr && std::strcmp(s, "split") == 0) return GemvVariant::kSplit;
    if (s != nullptr && std::strcmp(s, "stream") == 0) return GemvVariant::kStream;
    return GemvVariant::kAuto;
  }();
  return v;
}

template <int kMats>
void launch_one(const MoeParams& p, cudaStream_t stream) {
  const int inter = p.intermediate > p.shared_inter ? p.intermediate : p.shared_inter;
  const int row_tiles = (kMats == 2 ? inter : p.hidden) / 16;
  const GemvVariant forced = forced_gemv_variant();
  const bool streamed = forced == GemvVariant::kAuto ? p.tokens >= kStreamMinTokens<kMats> : forced == GemvVariant::kStream;
  if (!streamed) {
    launch_dependent(moe_tc_gemv_kernel<kMats>, dim3(row_tiles, p.max_tiles), kWarps * 32, 0, stream, p);
    return;
  }
  constexpr int smem = StreamRing<kMats>::kSmemBytes;
  static const bool configured = [] {
    return cudaFuncSetAttribute(moe_tc_gemv_stream_kernel<kMats>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) ==
           cudaSuccess;
  }();
  (void)configured;  // a failure surfaces as the launch's error
  const dim3 grid((row_tiles + kWarps - 1) / kWarps, p.max_tiles);
  launch_dependent(moe_tc_gemv_stream_kernel<kMats>, grid, kWarps * 32, smem, stream, p);
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
