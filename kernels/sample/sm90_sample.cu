// Token sampler (interface: sample_params.hpp). The same id as
// megamoe::Sampler::choose (src/runtime/sampler.cpp) for the same logits,
// parameters and uniform draw. One 1024-thread block per row, three paths:
//   greedy (temperature <= 0): block argmax, ties to the lower id.
//   keep = top_k (or V) <= 1024: radix select of the keep smallest 64-bit keys
//     (~orderable(logit) << 32 | id; -0 folded into +0) by 8-bit digits,
//     most significant first, stopping as soon as the chosen digit's bin holds
//     exactly the count still needed (keys are unique, so at worst after the
//     id bits); one gather pass; a bitonic sort of those <= 1024 keys in
//     shared memory gives the CPU's order (descending logit, lower id first).
//   keep > 1024 (top_k = 0 with a large vocabulary): the rows' keys are
//     sorted by cub::DeviceSegmentedRadixSort (stable LSD, ids ascending as
//     values, so ties keep the lower id first; greedy and select rows get
//     empty segments), then the row block walks the sorted row.
// The choice then follows the CPU op for op in double: p_i = exp((l_i - l_0)
// / T) computed in parallel, the running sums S_i = S_(i-1) + p_i by one
// thread (staged through shared memory in chunks, so the order is the CPU's),
// the cumulative sum of p_i / total by one thread until >= top_p (nucleus),
// mass = S_(nucleus-1), u = u01 * mass and the first i with u < S_i (S is
// non-decreasing, so a binary search finds the CPU's linear-scan answer).
// p_i is recomputed rather than stored (bit-identical), so the full-sort path
// needs only the sort's two key/value buffers: 16 bytes per logit of
// workspace, S living in the sort's spare buffer.
// Constraints: rows * vocab < 2^31 (cub's int offsets); finite logits (NaN
// and inf order differently from std::stable_sort / max_element); a workspace
// smaller than sample_workspace_bytes makes rows that need the full sort
// return id -1. No allocation, no host synchronisation (graph capturable).
// The double exp is CUDA's (<= 1 ulp) where the CPU uses glibc's: a
// probability can differ in its last bit, which changes the id only when u
// falls within ~1e-16 of a boundary.
// Slow parts (NOTES.md): the serial double sums walk keep elements (about
// 1 ms for top_k = 0 at V = 129280); the cub sort always launches its passes
// (empty segments when no row needs it).
// Tests: tests/kernels/test_sm90_sample.cpp (against Sampler::choose).
#include <cuda_runtime.h>

#include <cub/device/device_segmented_radix_sort.cuh>

#include <climits>
#include <cstdint>

#include "kernels/common/warp_reduce.cuh"
#include "kernels/sample/sample_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kSelectMax = 1024;  // largest keep taken by the radix-select path
constexpr int kChunk = 1024;      // doubles staged per step of the serial sums
constexpr int kPrepThreads = 256;
constexpr int kPrepPerThread = 8;

// Ascending order of desc_key = descending order of the logit; -0 == +0.
__device__ __forceinline__ uint32_t desc_key(float f) {
  uint32_t b = __float_as_uint(f);
  if (b == 0x80000000u) b = 0u;
  const uint32_t asc = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return ~asc;
}

__device__ __forceinline__ float key_logit(uint32_t desc) {
  const uint32_t asc = ~desc;
  return __uint_as_float((asc & 0x80000000u) ? (asc & 0x7FFFFFFFu) : ~asc);
}

__device__ __forceinline__ unsigned long long composite(float logit, int id) {
  return (static_cast<unsigned long long>(desc_key(logit)) << 32) | static_cast<uint32_t>(id);
}

__device__ __forceinline__ int keep_of(const SampleRow& rp, int vocab) {
  return (rp.top_k > 0 && rp.top_k < vocab) ? rp.top_k : vocab;
}

__device__ __forceinline__ bool needs_full_sort(const SampleRow& rp, int vocab) {
  return rp.temperature > 0.0f && keep_of(rp, vocab) > kSelectMax;
}

struct Smem {
  unsigned long long cand[kSelectMax];  // selected keys, then sorted
  double prefix[kSelectMax];            // S_i of the select path
  double chunk[kChunk];                 // staging of the serial sums
  unsigned int hist[256];
  float warp_value[kWarps];
  int warp_index[kWarps];
  double total;
  unsigned int sel_digit, sel_before, sel_count, count;
  int nucleus, found, pick;
};

// ---- greedy ---------------------------------------------------------------


__device__ int argmax_row(const float* __restrict__ row, int vocab, Smem& sh) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = __ldg(row + i);
    if (argmax_better(v, i, bv, bi)) {
      bv = v;
      bi = i;
    }
  }
  warp_argmax(bv, bi);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh.warp_value[warp] = bv;
    sh.warp_index[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w)
      if (argmax_better(sh.warp_value[w], sh.warp_index[w], bv, bi)) {
        bv = sh.warp_value[w];
        bi = sh.warp_index[w];
      }
    sh.pick = bi == INT_MAX ? 0 : bi;  // all NaN: the CPU's max_element stays at 0
  }
  __syncthreads();
  return sh.pick;
}

// ---- select path -----------------------------------------------------------

// sh.cand[0, keep) = the keep smallest composite keys of the row, ascending.
__device__ void select_top(const float* __restrict__ row, int vocab, int keep, Smem& sh) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int id_bits = vocab > 1 ? 32 - __clz(vocab - 1) : 0;
  unsigned long long prefix = 0, mask = 0;
  uint32_t krem = static_cast<uint32_t>(keep);
  for (int pass = 0; pass < 8; ++pass) {
    const int shift = 56 - 8 * pass;
    if (shift < 32 && shift >= id_bits) continue;  // id digits that are 0 for every id
    for (int b = tid; b < 256; b += kThreads) sh.hist[b] = 0;
    __syncthreads();
#pragma unroll 4
    for (int i = tid; i < vocab; i += kThreads) {
      const unsigned long long c = composite(__ldg(row + i), i);
      if ((c & mask) == prefix) atomicAdd(&sh.hist[(c >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (warp == 0) {  // the digit whose bin holds the krem-th smallest key
      uint32_t local[8], sum = 0;
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        local[b] = sh.hist[lane * 8 + b];
        sum += local[b];
      }
      uint32_t incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t t = __shfl_up_sync(0xFFFFFFFFu, incl, o);
        if (lane >= o) incl += t;
      }
      uint32_t run = incl - sum;
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        if (run < krem && krem <= run + local[b]) {
          sh.sel_digit = static_cast<uint32_t>(lane * 8 + b);
          sh.sel_before = run;
          sh.sel_count = local[b];
        }
        run += local[b];
      }
    }
    __syncthreads();
    krem -= sh.sel_before;
    prefix |= static_cast<unsigned long long>(sh.sel_digit) << shift;
    mask |= 0xFFull << shift;
    const bool done = sh.sel_count == krem;  // the whole bin is needed: the set is {key & mask <= prefix}
    __syncthreads();
    if (done) break;
  }
  if (tid == 0) sh.count = 0;
  __syncthreads();
#pragma unroll 4
  for (int i = tid; i < vocab; i += kThreads) {
    const unsigned long long c = composite(__ldg(row + i), i);
    if ((c & mask) <= prefix) {
      const uint32_t slot = atomicAdd(&sh.count, 1u);
      if (slot < static_cast<uint32_t>(kSelectMax)) sh.cand[slot] = c;
    }
  }
  int n2 = 1;
  while (n2 < keep) n2 <<= 1;
  for (int i = keep + tid; i < n2; i += kThreads) sh.cand[i] = ~0ull;
  __syncthreads();
  for (int k = 2; k <= n2; k <<= 1) {  // bitonic sort, ascending
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < n2; i += kThreads) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const unsigned long long a = sh.cand[i], b = sh.cand[ixj];
          if ((a > b) == ((i & k) == 0)) {
            sh.cand[i] = b;
            sh.cand[ixj] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

struct SelectedCandidates {
  const unsigned long long* cand;
  __device__ float logit(int i) const { return key_logit(static_cast<uint32_t>(cand[i] >> 32)); }
  __device__ int id(int i) const { return static_cast<int>(static_cast<uint32_t>(cand[i])); }
};

struct SortedCandidates {
  const uint32_t* keys;
  const int32_t* ids;
  __device__ float logit(int i) const { return key_logit(keys[i]); }
  __device__ int id(int i) const { return ids[i]; }
};

// ---- the choice, in the CPU's order -----------------------------------------

// c[i] = run += c[i] for i < m (one thread; loads batched ahead of the adds).
__device__ __forceinline__ void serial_prefix(double* c, int m, double& run) {
  int i = 0;
  for (; i + 8 <= m; i += 8) {
    double v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = c[i + j];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      run = __dadd_rn(run, v[j]);
      c[i + j] = run;
    }
  }
  for (; i < m; ++i) {
    run = __dadd_rn(run, c[i]);
    c[i] = run;
  }
}

// Candidates [0, keep) in the CPU's order; S: keep doubles of scratch (shared
// or global). Returns the chosen candidate's id.
template <class Candidates>
__device__ int sample_candidates(const Candidates& cand, int keep, const SampleRow& rp, double* S, Smem& sh) {
  const int tid = threadIdx.x;
  const double mx = static_cast<double>(cand.logit(0));
  const double temperature = static_cast<double>(rp.temperature);
  auto prob = [&](int i) { return exp(__ddiv_rn(__dsub_rn(static_cast<double>(cand.logit(i)), mx), temperature)); };

  // S_i = S_(i-1) + p_i; total = S_(keep-1).
  double run = 0.0;  // meaningful in thread 0
  for (int base = 0; base < keep; base += kChunk) {
    const int m = min(kChunk, keep - base);
    for (int i = tid; i < m; i += kThreads) sh.chunk[i] = prob(base + i);
    __syncthreads();
    if (tid == 0) serial_prefix(sh.chunk, m, run);
    __syncthreads();
    for (int i = tid; i < m; i += kThreads) S[base + i] = sh.chunk[i];
    __syncthreads();
  }
  if (tid == 0) {
    sh.total = run;
    sh.nucleus = keep;
    sh.found = 0;
  }
  __syncthreads();

  // Nucleus: the first i with sum_(j <= i) p_j / total >= top_p.
  const double total = sh.total, top_p = static_cast<double>(rp.top_p);
  double cumulative = 0.0;  // thread 0
  for (int base = 0; base < keep; base += kChunk) {
    const int m = min(kChunk, keep - base);
    for (int i = tid; i < m; i += kThreads) sh.chunk[i] = __ddiv_rn(prob(base + i), total);
    __syncthreads();
    if (tid == 0) {
      for (int i = 0; i < m; ++i) {
        cumulative = __dadd_rn(cumulative, sh.chunk[i]);
        if (cumulative >= top_p) {
          sh.nucleus = base + i + 1;
          sh.found = 1;
          break;
        }
      }
    }
    __syncthreads();
    if (sh.found) break;
  }

  if (tid == 0) {
    const int nucleus = sh.nucleus;
    const double u = rp.u01 * S[nucleus - 1];  // u01 * mass
    int lo = 0, hi = nucleus;                  // first i < nucleus with u < S_i
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (u < S[mid]) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    sh.pick = lo < nucleus ? lo : nucleus - 1;
  }
  __syncthreads();
  return cand.id(sh.pick);
}

// ---- kernels ---------------------------------------------------------------

// Keys and ids of the rows that need the full sort; segment offsets of all
// rows (empty for the others). grid (blocks per row, rows).
__global__ void __launch_bounds__(kPrepThreads) sample_prep_kernel(const SampleParams p, uint32_t* keys, int32_t* ids,
                                                                   int* begin, int* end) {
  const int r = blockIdx.y;
  const SampleRow rp = p.row_params[r];
  const bool sort = needs_full_sort(rp, p.vocab);
  const int base = r * p.vocab;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    begin[r] = base;
    end[r] = sort ? base + p.vocab : base;
  }
  if (!sort) return;
  const float* row = p.logits + base;
  for (int i = blockIdx.x * kPrepThreads + threadIdx.x; i < p.vocab; i += gridDim.x * kPrepThreads) {
    keys[base + i] = desc_key(__ldg(row + i));
    ids[base + i] = i;
  }
}

__global__ void __launch_bounds__(kThreads) sample_rows_kernel(const SampleParams p, const uint32_t* sorted_keys,
                                                               const int32_t* sorted_ids, double* sorted_prefix) {
  __shared__ Smem sh;
  const int r = blockIdx.x;
  const SampleRow rp = p.row_params[r];
  const int vocab = p.vocab;
  const int64_t base = static_cast<int64_t>(r) * vocab;
  const float* row = p.logits + base;
  int id;
  if (!(rp.temperature > 0.0f)) {
    id = argmax_row(row, vocab, sh);
  } else {
    const int keep = keep_of(rp, vocab);
    if (keep <= kSelectMax) {
      select_top(row, vocab, keep, sh);
      id = sample_candidates(SelectedCandidates{sh.cand}, keep, rp, sh.prefix, sh);
    } else if (sorted_keys != nullptr) {
      id = sample_candidates(SortedCandidates{sorted_keys + base, sorted_ids + base}, keep, rp, sorted_prefix + base,
                             sh);
    } else {
      id = -1;  // workspace too small for the full sort
    }
  }
  if (threadIdx.x == 0) p.ids[r] = id;
}

// ---- workspace -------------------------------------------------------------

constexpr size_t kAlign = 256;
size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// [keys0 | ids0] [keys1 | ids1] (the sort's double buffer; after the sort the
// spare one holds S as doubles), begin [rows], end [rows], cub's temporaries.
struct Layout {
  size_t n = 0, region = 0, begin = 0, end = 0, temp = 0, temp_bytes = 0, total = 0;
};

Layout layout_for(int rows, int vocab) {
  Layout l;
  l.n = static_cast<size_t>(rows) * static_cast<size_t>(vocab);
  l.region = align_up(l.n * 8);
  l.begin = 2 * l.region;
  l.end = l.begin + align_up(static_cast<size_t>(rows) * sizeof(int));
  l.temp = l.end + align_up(static_cast<size_t>(rows) * sizeof(int));
  cub::DoubleBuffer<uint32_t> keys(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> ids(nullptr, nullptr);
  size_t bytes = 0;
  const cudaError_t e = cub::DeviceSegmentedRadixSort::SortPairs(nullptr, bytes, keys, ids, static_cast<int>(l.n), rows,
                                                                 static_cast<const int*>(nullptr),
                                                                 static_cast<const int*>(nullptr), 0, 32);
  l.temp_bytes = e == cudaSuccess ? bytes : 0;
  l.total = l.temp + align_up(l.temp_bytes > 0 ? l.temp_bytes : 1);
  return l;
}

}  // namespace

size_t sample_workspace_bytes(int rows, int vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  return layout_for(rows, vocab).total;
}

void launch_sample(const SampleParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.vocab <= 0) return;
  const Layout l = layout_for(p.rows, p.vocab);
  const uint32_t* sorted_keys = nullptr;
  const int32_t* sorted_ids = nullptr;
  double* sorted_prefix = nullptr;
  if (p.workspace != nullptr && p.workspace_bytes >= l.total && l.temp_bytes > 0) {
    char* ws = static_cast<char*>(p.workspace);
    uint32_t* keys[2] = {reinterpret_cast<uint32_t*>(ws), reinterpret_cast<uint32_t*>(ws + l.region)};
    int32_t* ids[2] = {reinterpret_cast<int32_t*>(ws + l.n * 4), reinterpret_cast<int32_t*>(ws + l.region + l.n * 4)};
    int* begin = reinterpret_cast<int*>(ws + l.begin);
    int* end = reinterpret_cast<int*>(ws + l.end);
    const int per_block = kPrepThreads * kPrepPerThread;
    const dim3 prep_grid(static_cast<unsigned>((p.vocab + per_block - 1) / per_block), static_cast<unsigned>(p.rows));
    sample_prep_kernel<<<prep_grid, kPrepThreads, 0, stream>>>(p, keys[0], ids[0], begin, end);
    cub::DoubleBuffer<uint32_t> dk(keys[0], keys[1]);
    cub::DoubleBuffer<int32_t> dv(ids[0], ids[1]);
    size_t temp_bytes = l.temp_bytes;
    const cudaError_t e = cub::DeviceSegmentedRadixSort::SortPairs(ws + l.temp, temp_bytes, dk, dv,
                                                                   static_cast<int>(l.n), p.rows, begin, end, 0, 32,
                                                                   stream);
    if (e == cudaSuccess && dk.selector == dv.selector) {
      sorted_keys = dk.Current();
      sorted_ids = dv.Current();
      sorted_prefix = reinterpret_cast<double*>(ws + (dk.selector == 0 ? l.region : 0));  // the spare buffer
    }
  }
  sample_rows_kernel<<<p.rows, kThreads, 0, stream>>>(p, sorted_keys, sorted_ids, sorted_prefix);
}

}  // namespace megamoe::cuda::kernels
