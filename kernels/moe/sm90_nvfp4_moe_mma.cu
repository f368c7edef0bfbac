// Prefill path of the MoE GEMMs (many tokens per expert): tensor-core tiles of
// 64 pairs x 64 output rows x 64 K through WMMA bf16 16x16x16 with fp32
// accumulation. The 4-bit weight tile is decoded into shared memory as bf16
// from the repacked layout (kernels/moe/moe_params.hpp; e2m1 * block scale,
// exact in bf16); the fp32 factor g* is applied in the epilogue, so the math is the dequantized reference up to summation order.
//   GEMM1 (kMats = 2): gate and up tiles, clamped SwiGLU, routing weight,
//     h rounded to bf16.   GEMM2 (kMats = 1): fp32 rows per pair.
// The shared expert (pseudo-expert E) uses bf16 weight tiles in the same launch.
// Constraints: N and K multiples of 64. First version: no cp.async/TMA
// pipelining and no WGMMA yet (kernels/moe/NOTES.md). Covered by
// tests/kernels/test_sm90_nvfp4_moe.cpp.
#include <mma.h>

#include "kernels/moe/moe_common.cuh"
#include "kernels/moe/moe_fragments.cuh"

namespace megamoe::cuda::kernels {
namespace {

using namespace nvcuda;

constexpr int kBM = 64, kBN = 64, kBK = 64, kPad = 8;
constexpr int kThreads = 256;
constexpr int kLd = kBK + kPad;  // bf16 elements per smem row
constexpr int kLdC = kBN + 4;    // floats per smem output row

struct StageTiles {
  __nv_bfloat16 a[kBM][kLd];
  __nv_bfloat16 b[2][kBN][kLd];
};
struct OutTiles {
  float c[2][kBM][kLdC];
};
constexpr size_t kSmemBytes = sizeof(OutTiles) > sizeof(StageTiles) ? sizeof(OutTiles) : sizeof(StageTiles);

template <int kMats>
__global__ void __launch_bounds__(kThreads) moe_mma_kernel(MoeParams p) {
  __shared__ __align__(128) unsigned char raw[kSmemBytes];
  __shared__ int src_row[kBM];  // row of x (GEMM1) or h (GEMM2) per tile pair, -1 = padding
  __shared__ int pair_of[kBM];
  StageTiles& st = *reinterpret_cast<StageTiles*>(raw);
  OutTiles& ot = *reinterpret_cast<OutTiles*>(raw);

  const int tile = blockIdx.y;
  if (tile >= *p.n_tiles) return;
  const int e = p.tile_expert[tile], begin = p.tile_begin[tile], cnt = p.tile_count[tile];
  const bool shared = e == p.experts;
  const int inter = shared ? p.shared_inter : p.intermediate;
  const int N = kMats == 2 ? inter : p.hidden;
  const int K = kMats == 2 ? p.hidden : inter;
  const int n0 = blockIdx.x * kBN;
  if (n0 >= N) return;
  const int hs = h_stride(p);
  for (int m = threadIdx.x; m < kBM; m += kThreads) {
    const int pair = m < cnt ? p.perm_pairs[begin + m] : -1;
    pair_of[m] = pair;
    src_row[m] = pair < 0 ? -1 : (kMats == 2 && !(p.xq && !shared) ? pair_token(p, pair) : pair);
  }
  // Row r of the B operand: x's token row, xq's pair row (W4A4 routed GEMM1) or h's pair row.
  const uint16_t* a_base = kMats == 2 ? (p.xq && !shared ? p.xq : p.x) : p.h;
  const size_t a_stride = kMats == 2 ? p.hidden : hs;

  const int warp = threadIdx.x >> 5;
  const int wm = (warp >> 1) * 16, wn = (warp & 1) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int mat = 0; mat < 2; ++mat)
#pragma unroll
    for (int f = 0; f < 2; ++f) wmma::fill_fragment(acc[mat][f], 0.0f);
  __syncthreads();

  for (int k0 = 0; k0 < K; k0 += kBK) {
    // A: 64 rows x 64 bf16 = 512 16-byte pieces.
    for (int idx = threadIdx.x; idx < kBM * 8; idx += kThreads) {
      const int m = idx >> 3, piece = idx & 7;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (src_row[m] >= 0)
        v = __ldg(reinterpret_cast<const uint4*>(a_base + static_cast<size_t>(src_row[m]) * a_stride + k0) + piece);
      *reinterpret_cast<uint4*>(&st.a[m][piece * 8]) = v;
    }
    // B: kMats x 64 rows x 64 K.
    if (shared) {
      for (int idx = threadIdx.x; idx < kMats * kBN * 8; idx += kThreads) {
        const int mat = idx / (kBN * 8), n = (idx >> 3) % kBN, piece = idx & 7;
        const uint16_t* w = mat == 0 ? (kMats == 2 ? p.sw1 : p.sw2) : p.sw3;
        const uint4 v = __ldcs(reinterpret_cast<const uint4*>(w + static_cast<size_t>(n0 + n) * K + k0) + piece);
        *reinterpret_cast<uint4*>(&st.b[mat][n][piece * 8]) = v;
      }
    } else {
      // Repacked 4-bit tile: one lane-word (4 k-steps of rows g, g+8) per thread.
      const int idx = threadIdx.x;
      if (idx < kMats * (kBN / 16) * 32) {
        const int mat = idx / ((kBN / 16) * 32), rtl = (idx >> 5) % (kBN / 16), lane = idx & 31;
        const int g = lane >> 2, t = lane & 3;
        const uint32_t* w = mat == 0 ? (kMats == 2 ? p.w1 : p.w2) : p.w3;
        const uint16_t* s = mat == 0 ? (kMats == 2 ? p.s1 : p.s2) : p.s3;
        const size_t blk = ((static_cast<size_t>(e) * (N / 16) + n0 / 16 + rtl) * (K / 64) + k0 / 64) * 32 + lane;
        const uint4 q = ld_stream(w + blk * 4);
        const uint32_t s16 = __ldg(s + blk);
        const uint32_t sg = scale_pair_bits<0>(s16), sg8 = scale_pair_bits<1>(s16);
        const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          uint32_t a[4];
          decode_fragment(words[j], sg, sg8, a);
          const int col = 16 * t + 4 * j, r0 = rtl * 16 + g;
          *reinterpret_cast<uint32_t*>(&st.b[mat][r0][col]) = a[0];
          *reinterpret_cast<uint32_t*>(&st.b[mat][r0 + 8][col]) = a[1];
          *reinterpret_cast<uint32_t*>(&st.b[mat][r0][col + 2]) = a[2];
          *reinterpret_cast<uint32_t*>(&st.b[mat][r0 + 8][col + 2]) = a[3];
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> af;
      wmma::load_matrix_sync(af, &st.a[wm][kk], kLd);
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
        for (int f = 0; f < 2; ++f) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> bf;
          wmma::load_matrix_sync(bf, &st.b[mat][wn + f * 16][kk], kLd);
          wmma::mma_sync(acc[mat][f], af, bf, acc[mat][f]);
        }
    }
    __syncthreads();
  }
#pragma unroll
  for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
    for (int f = 0; f < 2; ++f)
      wmma::store_matrix_sync(&ot.c[mat][wm][wn + f * 16], acc[mat][f], kLdC, wmma::mem_row_major);
  __syncthreads();

  const float act = shared ? 1.0f : act_global_scale(p, kMats == 2 ? 1 : 2, e);
  const float gs0 = shared ? 1.0f : (kMats == 2 ? p.g1[e] : p.g2[e]) * act;
  const float gs1 = shared || kMats == 1 ? 1.0f : p.g3[e] * act;
  for (int idx = threadIdx.x; idx < kBM * kBN; idx += kThreads) {
    const int m = idx / kBN, n = idx % kBN;
    const int pair = pair_of[m];
    if (pair < 0) continue;
    if (kMats == 2) {
      const float weight = shared ? 1.0f : p.topk_w[pair];
      const float hv = clamped_swiglu(ot.c[0][m][n] * gs0, ot.c[1][m][n] * gs1, p.swiglu_limit) * weight;
      p.h[static_cast<size_t>(pair) * hs + n0 + n] = float_to_bf16_bits(hv);
    } else {
      p.rows[static_cast<size_t>(pair) * p.hidden + n0 + n] = ot.c[0][m][n] * gs0;
    }
  }
}

template <int kMats>
void launch_one(const MoeParams& p, cudaStream_t stream) {
  const int inter = p.intermediate > p.shared_inter ? p.intermediate : p.shared_inter;
  const int max_n = kMats == 2 ? inter : p.hidden;
  const dim3 grid((max_n + kBN - 1) / kBN, p.max_tiles);
  moe_mma_kernel<kMats><<<grid, kThreads, 0, stream>>>(p);
}

}  // namespace

int moe_mma_tile_m() { return kBM; }

void launch_moe_mma_gemm(const MoeParams& p, int gemm, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (gemm == 1)
    launch_one<2>(p, stream);
  else
    launch_one<1>(p, stream);
}

}  // namespace megamoe::cuda::kernels
