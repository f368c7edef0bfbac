// Prefill path of the MoE GEMMs on Hopper WGMMA (sm_90a). Weights are the M
// side (output rows), the tile's pairs the N side:
//   D[rows x pairs] += A[rows x 64 K] * B[64 K x pairs]   per K chunk,
// with wgmma.mma_async m64nNk16 in its RS form: A from registers, B from
// shared memory. A block = kWG warpgroups, each owning 64 weight rows
// (warp w of a warpgroup = one repacked 16-row tile) x all pairs of one tile.
// - A: per chunk a warp copies its lane words (routed: one 16-byte E2M1 word +
//   one scale uint16 per lane and matrix; shared expert: four 16-byte bf16x2
//   fragment words) into shared memory with cp.async; at use each lane loads
//   them back and decodes one k-step at a time (decode_fragment: exact e2m1 x
//   block scale in bf16). A warp's mma.sync m16n8k16 A fragment is exactly the
//   wgmma A fragment of rows 16w..16w+15, so no shuffles.
// - B: the pairs' activation rows (x/xq for GEMM1, h for GEMM2), one 64-column
//   chunk per stage, K-major with the 128-byte swizzle. The repack permutes K
//   inside each chunk (moe_params.hpp), so the B tile holds at logical k
//   c = 16j + q the physical column 16t + 4j + 2(q >= 8) + (q & 1), t = (q&7)/2:
//   logical 16-byte chunk L, 4-byte slot t <- physical bf16 pair 8t + L, copied
//   with 4-byte cp.async (rows beyond the tile's pairs are zero-filled).
// - Multi-stage cp.async ring (kDist = stages - 2 chunks in flight) with one
//   __syncthreads per chunk; per k-step: decode, wgmma.fence, wgmma per matrix,
//   commit, wait until one group is pending, so the tensor core runs k-step j
//   while the lanes decode j + 1; the next chunk's copies are issued right
//   after k-step 0 is queued.
// - N (wgmma width) is the tile's pair count rounded up to 32, 64, 80, 96, 112
//   or 128, chosen per tile at run time; smaller N also gets more stages.
// - Epilogues as the WMMA path: GEMM1 clamped SwiGLU x routing weight -> bf16 h
//   (W4A4: unweighted, MoeParams::weight_after_gemm2),
//   GEMM2 fp32 rows; g* (and the W4A4 act_scale) applied in fp32.
// Shared expert (pseudo-expert E) from its bf16 fragment copy in the same
// launch. Deterministic (each output written once, fixed summation order), no
// atomics, no allocation. Constraints: N and K multiples of 64.
#include "kernels/moe/moe_async.cuh"
#include "kernels/moe/moe_common.cuh"
#include "kernels/moe/moe_fragments.cuh"
#include "kernels/moe/wgmma_ops.cuh"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kTileM = 128;  // pairs per tile (the widest wgmma N used)
constexpr int kMaxStages = 8;

// Block shape per GEMM: kWG warpgroups of 64 weight rows each. GEMM1 (two
// matrices, 128 accumulators per thread at N = 128) runs 2 warpgroups, one
// block per SM; GEMM2 (one matrix) 4 warpgroups: B rows are copied once per
// 256 output rows. Both take most of the SM's shared memory for the ring.
template <int kMats, int kWG>
struct Cfg {
  static constexpr int kThreads = kWG * 128;
  static constexpr int kWarps = kWG * 4;
  static constexpr int kBM = 64 * kWG;
  static constexpr int kMinBlocks = kMats == 1 && kWG == 2 ? 2 : 1;
  static constexpr int kSmemBytes = kMinBlocks == 2 ? 96 * 1024 : 200 * 1024;
};

template <int kMats, int kWG, bool kShared, int kN>
struct Stage {
  using C = Cfg<kMats, kWG>;
  static constexpr int kB = kN * 128;                   // kN rows x 64 bf16, swizzled
  static constexpr int kAWarp = kShared ? 2048 : 512;   // A bytes per warp and matrix
  static constexpr int kA = kMats * C::kWarps * kAWarp;
  static constexpr int kS = kShared ? 0 : kMats * C::kWarps * 64;  // scale uint16 per lane
  static constexpr int kBytes = (kB + kA + kS + 1023) / 1024 * 1024;  // keeps B 1024-aligned
  static constexpr int kStages = C::kSmemBytes / kBytes < kMaxStages ? C::kSmemBytes / kBytes : kMaxStages;
  static_assert(kStages >= 3, "need at least one chunk in flight");
};

__device__ __forceinline__ uint4 lds128(uint32_t a) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
  return v;
}
__device__ __forceinline__ uint32_t lds16(uint32_t a) {
  uint16_t v;
  asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(a));
  return v;
}

struct TileCtx {
  int e, N, K, m0, cnt, hs;
  float gs0, gs1;
};

template <int kMats, int kWG, bool kShared, int kN>
__device__ __forceinline__ void run_tile(const MoeParams& p, const TileCtx& tc, uint32_t base,
                                         const uint16_t* const* src_row, const int* pair_of, const float* wgt) {
  using C = Cfg<kMats, kWG>;
  using S = Stage<kMats, kWG, kShared, kN>;
  constexpr int kStages = S::kStages, kDist = kStages - 2, kWarps = C::kWarps;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
  const bool active = tc.m0 + 64 * wg < tc.N;  // warpgroup-uniform (N is a multiple of 64)
  const int KC = tc.K / 64;
  const int rt = (tc.m0 >> 4) + warp;  // this warp's 16-row tile

  const uint32_t* wsrc[2] = {nullptr, nullptr};
  const uint16_t* ssrc[2] = {nullptr, nullptr};
  if (kShared) {
    const size_t off = size_t(rt) * KC * 4 * 32 * 4;
    wsrc[0] = (kMats == 2 ? p.sf1 : p.sf2) + off;
    if (kMats == 2) wsrc[1] = p.sf3 + off;
  } else {
    const size_t blk = (size_t(moe_local_expert(p, tc.e)) * (tc.N / 16) + rt) * KC;  // local experts' weights
    wsrc[0] = (kMats == 2 ? p.w1 : p.w2) + blk * 32 * 4;
    ssrc[0] = (kMats == 2 ? p.s1 : p.s2) + blk * 32;
    if (kMats == 2) wsrc[1] = p.w3 + blk * 32 * 4, ssrc[1] = p.s3 + blk * 32;
  }
  // B copy: this thread moves physical bf16 pair `lane` of rows warp, warp + kWarps, ...
  // (all with row & 7 == warp & 7) to logical chunk lane & 7, slot lane >> 3.
  const uint32_t b_off = warp * 128 + (((lane & 7) ^ (warp & 7)) << 4) + (lane >> 3) * 4;

  auto load_stage = [&](int c) {
    const uint32_t sb = base + (c % kStages) * S::kBytes;
#pragma unroll
    for (int i = 0; i < kN / kWarps; ++i) {
      const uint16_t* r = src_row[warp + kWarps * i];
      cp_async4(sb + b_off + i * kWarps * 128, r != nullptr ? r + c * 64 + 2 * lane : p.x, r != nullptr ? 4 : 0);
    }
    if (active) {
      const uint32_t sa = sb + S::kB;
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat) {
        if (kShared) {
#pragma unroll
          for (int j = 0; j < 4; ++j)
            cp_async16(sa + (mat * kWarps + warp) * S::kAWarp + j * 512 + lane * 16,
                       wsrc[mat] + ((size_t(c) * 4 + j) * 32 + lane) * 4);
        } else {
          cp_async16(sa + (mat * kWarps + warp) * S::kAWarp + lane * 16, wsrc[mat] + (size_t(c) * 32 + lane) * 4);
          if (lane < 16) cp_async4(sa + S::kA + (mat * kWarps + warp) * 64 + lane * 4, ssrc[mat] + c * 32 + 2 * lane, 4);
        }
      }
    }
  };

  float acc[kMats][kN / 2];
#pragma unroll
  for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) acc[mat][i] = 0.0f;

#pragma unroll
  for (int s = 0; s < kDist; ++s) {
    if (s < KC) load_stage(s);
    cp_async_commit();
  }
  for (int c = 0; c < KC; ++c) {
    cp_async_wait<kDist - 1>();  // chunk c has landed (this thread's copies)
    fence_proxy_async();
    __syncthreads();  // everyone's copies of chunk c; everyone done with chunk c - 2's stage
    const uint32_t sb = base + (c % kStages) * S::kBytes;
    const uint32_t sa = sb + S::kB;
    const uint64_t desc = wgmma::desc_sw128(sb);
    uint32_t words[kMats][4], sg[kMats], sg8[kMats];
    if (active && !kShared) {
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat) {
        const uint4 v = lds128(sa + (mat * kWarps + warp) * S::kAWarp + lane * 16);
        words[mat][0] = v.x, words[mat][1] = v.y, words[mat][2] = v.z, words[mat][3] = v.w;
        const uint32_t s16 = lds16(sa + S::kA + (mat * kWarps + warp) * 64 + lane * 2);
        sg[mat] = scale_pair_bits<0>(s16), sg8[mat] = scale_pair_bits<1>(s16);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (active) {
        uint32_t a[kMats][4];
#pragma unroll
        for (int mat = 0; mat < kMats; ++mat) {
          if (kShared) {
            const uint4 v = lds128(sa + (mat * kWarps + warp) * S::kAWarp + j * 512 + lane * 16);
            a[mat][0] = v.x, a[mat][1] = v.y, a[mat][2] = v.z, a[mat][3] = v.w;
          } else {
            decode_fragment(words[mat][j], sg[mat], sg8[mat], a[mat]);
          }
        }
        wgmma::fence();
#pragma unroll
        for (int mat = 0; mat < kMats; ++mat) wgmma::mma_rs<kN>(acc[mat], a[mat], desc + 2 * j);  // +32 B per k16
        wgmma::commit();
      }
      if (j == 0) {  // refill the ring while k-step 0 runs on the tensor core
        if (c + kDist < KC) load_stage(c + kDist);
        cp_async_commit();
      }
      if (active) wgmma::wait<1>();  // k-step j stays queued while j + 1 decodes (wait<2> measured 2-3% slower)
    }
  }
  wgmma::wait<0>();
#pragma unroll
  for (int mat = 0; mat < kMats; ++mat) wgmma::fence_acc(acc[mat]);
  cp_async_wait<0>();

  // Accumulator fragment: register 4i + r holds row 16*(warp&3) + g + 8*(r>>1)
  // of the warpgroup's 64, pair column 8i + 2t + (r&1).
  const int g = lane >> 2, t = lane & 3;
  const int lrow0 = 64 * wg + 16 * (warp & 3) + g;  // row within the block
  if (kMats == 2) {
    // h through shared memory ([pair][row] bf16) so the global stores are 16-byte rows.
    constexpr int kLd = C::kBM + 8;
    __syncthreads();  // all warps are done with the ring
    uint16_t* out = reinterpret_cast<uint16_t*>(__cvta_shared_to_generic(base));
    if (active) {
#pragma unroll
      for (int i = 0; i < kN / 8; ++i)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int m = 8 * i + 2 * t + (r & 1);
          const float hv = clamped_swiglu(acc[0][4 * i + r] * tc.gs0, acc[kMats - 1][4 * i + r] * tc.gs1,
                                          p.swiglu_limit) * wgt[m];
          out[m * kLd + lrow0 + 8 * (r >> 1)] = float_to_bf16_bits(hv);
        }
    }
    __syncthreads();
    const int rows = tc.N - tc.m0 < C::kBM ? tc.N - tc.m0 : C::kBM;
    const int per_pair = rows / 8;  // 16-byte pieces per pair
    for (int idx = tid; idx < tc.cnt * per_pair; idx += C::kThreads) {
      const int m = idx / per_pair, q = idx - m * per_pair;
      const uint4 v = *reinterpret_cast<const uint4*>(out + m * kLd + 8 * q);
      *reinterpret_cast<uint4*>(p.h + static_cast<size_t>(pair_of[m]) * tc.hs + tc.m0 + 8 * q) = v;
    }
  } else {
    if (!active) return;
#pragma unroll
    for (int i = 0; i < kN / 8; ++i) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int m = 8 * i + 2 * t + (r & 1);
        if (m >= tc.cnt) continue;
        const int row = tc.m0 + lrow0 + 8 * (r >> 1);
        p.rows[static_cast<size_t>(pair_of[m]) * p.hidden + row] = acc[0][4 * i + r] * tc.gs0;
      }
    }
  }
}

template <int kMats, int kWG, bool kShared>
__device__ __forceinline__ void dispatch_n(const MoeParams& p, const TileCtx& tc, uint32_t base,
                                           const uint16_t* const* src_row, const int* pair_of, const float* wgt) {
  // Padding costs tensor time: 16-pair steps above 64 (uniform routing at
  // T = 4096 gives ~64 (Pro) to ~96 (Flash) pairs per expert).
  switch ((tc.cnt + 15) / 16) {
    case 1: case 2: run_tile<kMats, kWG, kShared, 32>(p, tc, base, src_row, pair_of, wgt); break;
    case 3: case 4: run_tile<kMats, kWG, kShared, 64>(p, tc, base, src_row, pair_of, wgt); break;
    case 5: run_tile<kMats, kWG, kShared, 80>(p, tc, base, src_row, pair_of, wgt); break;
    case 6: run_tile<kMats, kWG, kShared, 96>(p, tc, base, src_row, pair_of, wgt); break;
    case 7: run_tile<kMats, kWG, kShared, 112>(p, tc, base, src_row, pair_of, wgt); break;
    default: run_tile<kMats, kWG, kShared, 128>(p, tc, base, src_row, pair_of, wgt); break;
  }
}

template <int kMats, int kWG>
__global__ void __launch_bounds__(Cfg<kMats, kWG>::kThreads, Cfg<kMats, kWG>::kMinBlocks)
    moe_wgmma_kernel(MoeParams p) {
  using C = Cfg<kMats, kWG>;
  extern __shared__ unsigned char dyn_smem[];
  __shared__ const uint16_t* src_row[kTileM];  // x / xq (GEMM1) or h (GEMM2) row per tile pair, null = padding
  __shared__ int pair_of[kTileM];
  __shared__ float wgt[kTileM];
  // Tiles in reverse order: the shared expert's (last, longest) start first.
  const int n_tiles_total = *p.n_tiles;
  if (static_cast<int>(blockIdx.y) >= n_tiles_total) return;
  const int tile = n_tiles_total - 1 - static_cast<int>(blockIdx.y);
  TileCtx tc;
  tc.e = p.tile_expert[tile];
  const int begin = p.tile_begin[tile];
  tc.cnt = p.tile_count[tile];
  const bool shared = tc.e == p.experts;
  const int inter = shared ? p.shared_inter : p.intermediate;
  tc.N = kMats == 2 ? inter : p.hidden;
  tc.K = kMats == 2 ? p.hidden : inter;
  tc.m0 = blockIdx.x * C::kBM;
  if (tc.m0 >= tc.N) return;
  tc.hs = h_stride(p);
  const bool quantized_x = kMats == 2 && !shared && p.xq != nullptr;  // W4A4: pair rows of xq
  for (int m = threadIdx.x; m < kTileM; m += C::kThreads) {
    const int pair = m < tc.cnt ? p.perm_pairs[begin + m] : -1;
    pair_of[m] = pair;
    const uint16_t* row = nullptr;
    if (pair >= 0) {
      if (kMats == 2)
        row = quantized_x ? p.xq + static_cast<size_t>(pair) * p.hidden
                          : p.x + static_cast<size_t>(pair_token(p, pair)) * p.hidden;
      else
        row = p.h + static_cast<size_t>(pair) * tc.hs;
    }
    src_row[m] = row;
    wgt[m] = kMats == 2 && !shared && pair >= 0 && !p.weight_after_gemm2 ? p.topk_w[pair] : 1.0f;
  }
  tc.gs0 = tc.gs1 = 1.0f;
  if (!shared) {
    const float act = p.act_scale != nullptr ? p.act_scale[(kMats == 2 ? 0 : p.experts) + tc.e] : 1.0f;
    const int le = moe_local_expert(p, tc.e);
    tc.gs0 = (kMats == 2 ? p.g1[le] : p.g2[le]) * act;
    if (kMats == 2) tc.gs1 = p.g3[le] * act;
  }
  __syncthreads();
  const uint32_t base = (smem_addr(dyn_smem) + 1023u) & ~1023u;  // swizzle atoms need 1024-byte alignment
  if (shared)
    dispatch_n<kMats, kWG, true>(p, tc, base, src_row, pair_of, wgt);
  else
    dispatch_n<kMats, kWG, false>(p, tc, base, src_row, pair_of, wgt);
}

template <int kMats, int kWG>
void launch_one(const MoeParams& p, cudaStream_t stream) {
  using C = Cfg<kMats, kWG>;
  constexpr int kBytes = C::kSmemBytes + 1024;  // + alignment slack
  static const bool configured = [] {
    return cudaFuncSetAttribute(moe_wgmma_kernel<kMats, kWG>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                kBytes) == cudaSuccess;
  }();
  (void)configured;  // a failure shows up as a launch error
  const int inter = p.intermediate > p.shared_inter ? p.intermediate : p.shared_inter;
  const int max_n = kMats == 2 ? inter : p.hidden;
  const dim3 grid((max_n + C::kBM - 1) / C::kBM, p.max_tiles);
  moe_wgmma_kernel<kMats, kWG><<<grid, C::kThreads, kBytes, stream>>>(p);
}

}  // namespace

int moe_wgmma_tile_m() { return kTileM; }

void launch_moe_wgmma_gemm(const MoeParams& p, int gemm, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (gemm == 1)
    launch_one<2, 2>(p, stream);
  else
    launch_one<1, 4>(p, stream);  // measured: 4 warpgroups x 1 block beat 2 x 2 blocks by 23% (Flash T=4096)
}

}  // namespace megamoe::cuda::kernels
