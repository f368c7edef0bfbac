// The lightning indexer on the device (dsv4-architecture.md §5.5; contract:
// kernels/attention/attention_params.hpp, IndexerParams): scores of every
// visible indexer entry for each row, then the top-k with the host's exact
// order rule (score descending, ties to the lower entry index; an fp32 -0
// ties +0 as with the host's ==).
//
// One block of 256 threads per row t (sequence b, position p, slot s);
// n = min(floor((p + 1) / m), max_entries) visible entries.
//  - The row's queries are staged transposed, qt[i][h] for h < Hp (H_I
//    rounded up to 64, padded heads have query 0 and weight 0), and the head
//    weights times H_I^-1/2.
//  - Entries are scored in tiles of 64: the tile is staged transposed,
//    kt[i][e] (row stride 65: conflict-free stores), and each thread computes a
//    4 heads x 4 entries register tile of dots over d_I (16 lanes cover 64
//    heads, 16 lane groups cover 64 entries), then sum_h w_h ReLU(dot) over
//    its 4 heads, a 16-lane butterfly over the head groups, times d_I^-1/2.
//  - Each score becomes a 64-bit key (order-preserving bits of the score << 32
//    | ~index), so one descending sort orders by score, then lower index.
//    Keys live in dynamic shared memory, L of them (a power of two); a bitonic
//    sort orders them. Rows with n <= L: one pass. Rows with n > L: chunks;
//    after each sort only the best min(top_k, seen) keys are kept at the front
//    and the next chunk's scores fill the rest (the top-k of a union is the
//    top-k of the kept top-k and the new chunk), so any n works.
//  - selected[t][i] = the entry index of key i for i < min(top_k, n), else -1.
//
// L = the smallest power of two >= max_entries when it fits the device's
// opt-in shared memory next to the staging (qt + kt + weights), else the
// largest power of two that fits. At H_I = 64, d_I = 128 on sm_90 (227 KiB)
// the staging is 65 KiB and L = 16384: a single pass up to 16384 visible
// entries (64K tokens at m = 4), chunks beyond. Requires top_k < L whenever
// max_entries > L (top_k <= 8191 at those shapes); otherwise the launch asks
// for more shared memory than exists and fails with a launch error. The
// opt-in to large dynamic shared memory happens once per device.
// fp32 FMAs; scores differ from the host's (another summation order) by a
// few ulp, so only near-ties (relative ~1e-7) can order differently.
// Test: tests/kernels/test_sm90_attention.cpp (Indexer*, Layer* CSA).
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>

#include "kernels/attention/attention_common.cuh"
#include "kernels/attention/attention_params.hpp"
#include "kernels/attention/sm90_indexer_testing.hpp"

namespace megamoe::cuda::kernels {
namespace {

using namespace attention_detail;

constexpr int kThreads = 256;
constexpr int kTile = 64;             // entries per scoring tile (16 groups x 4)
constexpr int kHeadChunk = 64;        // heads per register pass (16 lanes x 4)
constexpr int kKtStride = kTile + 1;  // transposed tile row stride (floats)
constexpr int kMinKeys = 64;
constexpr int kScoreChunk = 512;      // entries per block of the split scoring

std::atomic<int> g_key_cap{0};

__device__ __forceinline__ uint64_t make_key(float score, int index) {
  if (score == 0.0f) score = 0.0f;  // -0 ties +0
  uint32_t u = __float_as_uint(score);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(u) << 32) | static_cast<uint64_t>(0xffffffffu - static_cast<uint32_t>(index));
}

__device__ __forceinline__ int key_index(uint64_t key) {
  return static_cast<int>(0xffffffffu - static_cast<uint32_t>(key & 0xffffffffu));
}

// Descending bitonic sort of keys[0, n), n a power of two; ends synchronised.
__device__ void bitonic_sort_desc(uint64_t* keys, int n) {
  for (int k = 2; k <= n; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int q = threadIdx.x; q < n / 2; q += blockDim.x) {
        const int lo = q & (j - 1);
        const int i = ((q - lo) << 1) + lo, ixj = i + j;
        const uint64_t a = keys[i], c = keys[ixj];
        const bool desc = (i & k) == 0;
        if (desc ? (a < c) : (a > c)) {
          keys[i] = c;
          keys[ixj] = a;
        }
      }
      __syncthreads();
    }
  }
}

// Visible indexer entries of row t.
__device__ __forceinline__ int visible_entries(const IndexerParams& p, int t) {
  const int pos = p.step.row_pos[t];
  return pos >= 0 ? min((pos + 1) / p.rate, p.max_entries) : 0;
}

// Stages the row's queries transposed (qt [dim][hp]) and scaled head weights.
__device__ void stage_queries(const IndexerParams& p, int t, int hp, float head_scale, float* qt, float* hw) {
  const int dim = p.dim, heads = p.heads;
  for (int idx = threadIdx.x; idx < dim * hp; idx += blockDim.x) {
    const int i = idx / hp, h = idx % hp;
    qt[idx] = h < heads ? p.q[(static_cast<size_t>(t) * heads + h) * dim + i] : 0.0f;
  }
  for (int h = threadIdx.x; h < hp; h += blockDim.x)
    hw[h] = h < heads ? __fmul_rn(p.head_w[static_cast<size_t>(t) * heads + h], head_scale) : 0.0f;
}

// Keys of entries e0 .. e0 + cnt - 1 of `ent` into out[0 .. cnt), in tiles of
// kTile (qt / hw staged; kt is scratch). The per-entry arithmetic does not
// depend on how entries are grouped, so every caller gets the same keys.
__device__ void score_entries(const IndexerParams& p, int hp, float dim_scale, const float* qt, const float* hw,
                              float* kt, const float* ent, int e0, int cnt, uint64_t* out) {
  const int dim = p.dim;
  const int th = threadIdx.x & 15, te = threadIdx.x >> 4;  // head group (lanes), entry group
  for (int tile0 = 0; tile0 < cnt; tile0 += kTile) {
    const int tn = min(kTile, cnt - tile0);
    __syncthreads();  // qt / hw staged; the previous tile's kt reads are done
    for (int idx = threadIdx.x; idx < kTile * dim; idx += blockDim.x) {
      const int e = idx / dim, i = idx % dim;
      kt[i * kKtStride + e] = e < tn ? ent[static_cast<size_t>(e0 + tile0 + e) * dim + i] : 0.0f;
    }
    __syncthreads();
    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int hc = 0; hc < hp; hc += kHeadChunk) {
      float acc[4][4];
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[a][j] = 0.0f;
      const float* qcol = qt + hc + th * 4;
      const float* kcol = kt + te * 4;
#pragma unroll 4
      for (int i = 0; i < dim; ++i) {
        const float4 qv = *reinterpret_cast<const float4*>(qcol + static_cast<size_t>(i) * hp);
        const float* kr = kcol + i * kKtStride;
        const float kv[4] = {kr[0], kr[1], kr[2], kr[3]};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[0][j] = fmaf(qv.x, kv[j], acc[0][j]);
          acc[1][j] = fmaf(qv.y, kv[j], acc[1][j]);
          acc[2][j] = fmaf(qv.z, kv[j], acc[2][j]);
          acc[3][j] = fmaf(qv.w, kv[j], acc[3][j]);
        }
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const float w = hw[hc + th * 4 + a];
#pragma unroll
        for (int j = 0; j < 4; ++j) part[j] = __fadd_rn(part[j], __fmul_rn(w, fmaxf(acc[a][j], 0.0f)));
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int o = 1; o < 16; o <<= 1) part[j] += __shfl_xor_sync(0xffffffffu, part[j], o);
    }
    if (th == 0) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int e = te * 4 + j;
        if (e < tn) out[tile0 + e] = make_key(__fmul_rn(part[j], dim_scale), e0 + tile0 + e);
      }
    }
  }
}

// Few rows: the scoring spread over blocks (x: chunks of kScoreChunk entries,
// y: rows) into scored [T, max_entries]; indexer_kernel then only selects.
__global__ void __launch_bounds__(kThreads)
    indexer_score_kernel(IndexerParams p, int heads_padded, float head_scale, float dim_scale, uint64_t* scored) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int hp = heads_padded;
  float* qt = reinterpret_cast<float*>(smem);  // [dim][hp]
  float* hw = qt + static_cast<size_t>(p.dim) * hp;
  float* kt = hw + hp;
  const int t = blockIdx.y;
  const int n = visible_entries(p, t), e0 = blockIdx.x * kScoreChunk;
  if (e0 >= n) return;  // block-uniform
  const int slot = p.step.seq_slot[p.step.row_seq[t]];
  stage_queries(p, t, hp, head_scale, qt, hw);
  const float* ent = p.entries + static_cast<size_t>(slot) * p.max_entries * p.dim;
  score_entries(p, hp, dim_scale, qt, hw, kt, ent, e0, min(kScoreChunk, n - e0),
                scored + static_cast<size_t>(t) * p.max_entries + e0);
}

// scored == null: scores its row itself; else reads the keys indexer_score_kernel wrote.
__global__ void __launch_bounds__(kThreads) indexer_kernel(IndexerParams p, int key_capacity, int heads_padded,
                                                           float head_scale, float dim_scale, const uint64_t* scored) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int dim = p.dim, hp = heads_padded, cap = key_capacity;
  uint64_t* keys = reinterpret_cast<uint64_t*>(smem);                         // [cap]
  float* qt = reinterpret_cast<float*>(smem + static_cast<size_t>(cap) * 8);  // [dim][hp]
  float* hw = qt + static_cast<size_t>(dim) * hp;                             // [hp]
  float* kt = hw + hp;                                                        // [dim][kKtStride]

  const int t = blockIdx.x;
  const int slot = p.step.seq_slot[p.step.row_seq[t]];
  const int n = visible_entries(p, t);
  if (scored == nullptr) stage_queries(p, t, hp, head_scale, qt, hw);

  const float* ent = p.entries + static_cast<size_t>(slot) * p.max_entries * dim;
  int kept = 0;
  for (int c0 = 0; c0 < n;) {
    const int cnt = min(n - c0, cap - kept);
    if (scored == nullptr) {
      score_entries(p, hp, dim_scale, qt, hw, kt, ent, c0, cnt, keys + kept);
    } else {
      const uint64_t* row = scored + static_cast<size_t>(t) * p.max_entries + c0;
      for (int i = threadIdx.x; i < cnt; i += blockDim.x) keys[kept + i] = row[i];
    }
    const int total = kept + cnt;
    int padded = 1;
    while (padded < total) padded <<= 1;
    for (int i = total + threadIdx.x; i < padded; i += blockDim.x) keys[i] = 0;  // below every real key
    __syncthreads();
    bitonic_sort_desc(keys, padded);
    kept = min(p.top_k, total);
    c0 += cnt;
  }
  __syncthreads();
  int32_t* out = p.selected + static_cast<size_t>(t) * p.top_k;
  for (int i = threadIdx.x; i < p.top_k; i += blockDim.x) out[i] = i < kept ? key_index(keys[i]) : -1;
}

int pow2_at_least(int v) {
  int r = 1;
  while (r < v && r < (1 << 30)) r <<= 1;
  return r;
}

}  // namespace

void set_indexer_key_capacity_for_testing(int keys) { g_key_cap.store(keys < 0 ? 0 : keys); }

void launch_indexer(const IndexerParams& p, cudaStream_t stream) {
  if (p.step.rows <= 0 || p.top_k <= 0 || p.heads <= 0 || p.dim <= 0 || p.rate <= 0) return;
  static SmemOptIn optin;
  const int limit = optin.limit(reinterpret_cast<const void*>(indexer_kernel));
  const int hp = round_up(p.heads, kHeadChunk);
  const size_t staging =
      (static_cast<size_t>(p.dim) * hp + hp + static_cast<size_t>(p.dim) * kKtStride) * sizeof(float);
  int fit = 0;  // largest power of two of keys next to the staging
  for (int l = kMinKeys; static_cast<size_t>(l) * 8 + staging <= static_cast<size_t>(limit) && l < (1 << 30); l <<= 1)
    fit = l;
  const int want = pow2_at_least(p.max_entries > kMinKeys ? p.max_entries : kMinKeys);
  int capacity = fit > 0 && want > fit ? fit : want;
  const int cap = g_key_cap.load();
  if (cap > 0 && capacity > cap) {
    capacity = kMinKeys;
    while (capacity * 2 <= cap) capacity <<= 1;
  }
  if (p.max_entries > capacity && capacity <= p.top_k) capacity = pow2_at_least(p.top_k + 1);
  const size_t smem = static_cast<size_t>(capacity) * 8 + staging;
  const float head_scale = 1.0f / std::sqrt(static_cast<float>(p.heads));
  const float dim_scale = 1.0f / std::sqrt(static_cast<float>(p.dim));
  const uint64_t* scored = nullptr;
  if (p.scored != nullptr) {  // split scoring (the caller sized scored for rows x max_entries)
    const size_t score_smem = staging;
    static SmemOptIn score_optin;
    (void)score_optin.limit(reinterpret_cast<const void*>(indexer_score_kernel));
    const dim3 grid((p.max_entries + kScoreChunk - 1) / kScoreChunk, p.step.rows);
    indexer_score_kernel<<<grid, kThreads, score_smem, stream>>>(p, hp, head_scale, dim_scale, p.scored);
    scored = p.scored;
  }
  indexer_kernel<<<p.step.rows, kThreads, smem, stream>>>(p, capacity, hp, head_scale, dim_scale, scored);
}

}  // namespace megamoe::cuda::kernels
