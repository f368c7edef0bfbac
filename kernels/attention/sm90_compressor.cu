// The KV compressor step on the device (dsv4-architecture.md §5.3, §9.2-9.3;
// contract: kernels/attention/attention_params.hpp, CompressorParams). Two
// kernels in stream order:
//
//  1. compressor_pool_kernel, one block per closing window (the host's list
//     window_seq / window_index), threads over the d channels. Per channel q
//     it gathers the window's slots (overlap: the m Ca halves of window w-1,
//     then the m Cb halves of window w; otherwise the m rows of window w),
//     takes the max of the biased gates, then sum(e * key) / sum(e) with
//     e = exp(gate - max), in slot order like compressor_push. The pooled
//     vector is RMS-normalised (sum of squares in double, the scale
//     1 / sqrt(mean + eps) in double rounded to float, like cpu::rms_norm_rows),
//     times `norm`, rotated on its tail rope_dim channels at position w m
//     (RopeTable::apply's rounding) and written to entries[slot][w].
//     Where each slot's row comes from, for the sequence's first position pos0
//     of this step:
//       - position tau >= pos0: this step's row row0 + tau - pos0 of kv / gate,
//         the gate plus position_bias[tau % m] (the same fp32 add as the host);
//       - tau < pos0 inside a window still open at the start of the step:
//         buf_kv / buf_gate [slot][tau % m] (stored biased);
//       - the Ca halves of a window w-1 that closed before this step:
//         ov_kv / ov_gate [slot]; for w = 0 the constants key 0 / gate -inf
//         (so a fresh slot's overlap pools are never read).
//  2. compressor_state_kernel, one block per sequence: first the overlap state
//     (overlap compressors, when a window closed in this step): the Ca halves
//     of the last closed window, read from the buffer or this step's rows;
//     __syncthreads; then the open window's rows of this step (positions
//     >= max(pos0, floor((pos0 + tokens) / m) m)) into buf_kv / buf_gate
//     [slot][p % m], gates biased. The overlap reads must precede the buffer
//     writes: the last closed window's buffered rows and the new open
//     window's rows share buffer rows (e.g. m = 4, pos0 = 2, 4 tokens).
//  Kernel 1 reads the buffer and the overlap pools before kernel 2 writes
//  them: stream order, no PDL.
//
// Constraints: windows whose index w >= max_entries are not written (the pool
// is full; the host sizes it). Sequences of one step own distinct slots.
// fp32 throughout; matches compressor_push to a few ulp (expf vs std::exp and
// the double sum order are the only differences); the stored buffer and
// overlap rows are bit-identical to CompressorState's.
// Test: tests/kernels/test_sm90_attention.cpp (Compressor*, Layer*).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/attention/attention_common.cuh"
#include "kernels/attention/attention_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

using namespace attention_detail;

constexpr int kPoolThreadsMax = 256;
constexpr int kStateThreads = 256;

// Where the row of position tau (tau in a window open at the start of the
// step, or later) lives. gate_bias is null when the stored gate is biased.
struct RowSource {
  const float* key;
  const float* gate;
  const float* gate_bias;
};

__device__ __forceinline__ RowSource row_source(const CompressorParams& p, int slot, int pos0, int row0, int tau) {
  const int m = p.pools.rate, cd = (p.pools.overlap ? 2 : 1) * p.pools.width;
  const int r = tau % m;
  if (tau < pos0) {
    const size_t off = (static_cast<size_t>(slot) * m + r) * cd;
    return {p.pools.buf_kv + off, p.pools.buf_gate + off, nullptr};
  }
  const size_t off = static_cast<size_t>(row0 + (tau - pos0)) * cd;
  return {p.kv + off, p.gate + off, p.position_bias + static_cast<size_t>(r) * cd};
}

__device__ __forceinline__ float gate_of(const RowSource& s, int ch) {
  return s.gate_bias != nullptr ? __fadd_rn(s.gate[ch], s.gate_bias[ch]) : s.gate[ch];
}

// Slot s of window w for channel q: key and biased gate.
struct Slot {
  float key, gate;
};

__device__ __forceinline__ Slot slot_value(const CompressorParams& p, int slot, int pos0, int row0, int w, int s,
                                           int q) {
  const int m = p.pools.rate, d = p.pools.width;
  if (!p.pools.overlap) {
    const RowSource src = row_source(p, slot, pos0, row0, w * m + s);
    return {src.key[q], gate_of(src, q)};
  }
  if (s >= m) {  // this window's Cb halves
    const RowSource src = row_source(p, slot, pos0, row0, w * m + (s - m));
    return {src.key[d + q], gate_of(src, d + q)};
  }
  // The previous window's Ca halves.
  if (w == 0) return {0.0f, -INFINITY};
  if (w * m <= pos0) {  // window w-1 closed before this step: the overlap state
    const size_t off = (static_cast<size_t>(slot) * m + s) * d + q;
    return {p.pools.ov_kv[off], p.pools.ov_gate[off]};
  }
  const RowSource src = row_source(p, slot, pos0, row0, (w - 1) * m + s);
  return {src.key[q], gate_of(src, q)};
}

__global__ void __launch_bounds__(kPoolThreadsMax) compressor_pool_kernel(CompressorParams p) {
  extern __shared__ float entry[];  // [d]
  __shared__ double red[32];
  const int b = p.window_seq[blockIdx.x], w = p.window_index[blockIdx.x];
  if (w < 0 || w >= p.pools.max_entries) return;  // block-uniform
  const int slot = p.step.seq_slot[b], pos0 = p.step.seq_pos0[b], row0 = p.step.seq_row0[b];
  const int m = p.pools.rate, d = p.pools.width;
  const int slots = p.pools.overlap ? 2 * m : m;

  double ss = 0.0;
  for (int q = threadIdx.x; q < d; q += blockDim.x) {
    float mx = -INFINITY;
    for (int s = 0; s < slots; ++s) mx = fmaxf(mx, slot_value(p, slot, pos0, row0, w, s, q).gate);
    float denom = 0.0f, num = 0.0f;
    for (int s = 0; s < slots; ++s) {
      const Slot v = slot_value(p, slot, pos0, row0, w, s, q);
      const float e = expf(__fsub_rn(v.gate, mx));  // exp(-inf) = 0 for never-filled overlap slots
      denom = __fadd_rn(denom, e);
      num = __fadd_rn(num, __fmul_rn(e, v.key));
    }
    const float x = __fdiv_rn(num, denom);
    entry[q] = x;
    ss += static_cast<double>(x) * static_cast<double>(x);
  }
  ss = block_sum(ss, red);  // syncs: every entry[q] is written
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(d) + static_cast<double>(p.rms_eps)));
  for (int q = threadIdx.x; q < d; q += blockDim.x) entry[q] = __fmul_rn(__fmul_rn(entry[q], inv), p.norm[q]);
  __syncthreads();
  const int base = d - p.rope_dim, pos = w * m;
  for (int i = threadIdx.x; i < p.rope_dim / 2; i += blockDim.x) rope_pair(entry, base, i, pos, p.omega[i]);
  __syncthreads();
  float* out = p.pools.entries + (static_cast<size_t>(slot) * p.pools.max_entries + w) * d;
  for (int q = threadIdx.x; q < d; q += blockDim.x) out[q] = entry[q];
}

__global__ void __launch_bounds__(kStateThreads) compressor_state_kernel(CompressorParams p) {
  const int b = blockIdx.x;
  const int tokens = p.step.seq_tokens[b];
  if (tokens <= 0) return;
  const int slot = p.step.seq_slot[b], pos0 = p.step.seq_pos0[b], row0 = p.step.seq_row0[b];
  const int m = p.pools.rate, d = p.pools.width, cd = (p.pools.overlap ? 2 : 1) * d;
  const int end = pos0 + tokens;       // next position after this step
  const int open_start = end / m * m;  // first position of the window left open

  // 1. Overlap state: the Ca halves of window open_start / m - 1 when it closed in this step.
  if (p.pools.overlap && open_start > pos0) {
    const int prev_start = open_start - m;
    for (int idx = threadIdx.x; idx < m * d; idx += blockDim.x) {
      const int s = idx / d, q = idx % d;
      const RowSource src = row_source(p, slot, pos0, row0, prev_start + s);
      const size_t off = (static_cast<size_t>(slot) * m + s) * d + q;
      p.pools.ov_kv[off] = src.key[q];
      p.pools.ov_gate[off] = gate_of(src, q);
    }
  }
  __syncthreads();  // the reads above may hit buffer rows rewritten below

  // 2. The open window's rows of this step.
  const int first = max(open_start, pos0);
  const int n = (end - first) * cd;
  for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
    const int tau = first + idx / cd, ch = idx % cd;
    const int r = tau % m;
    const size_t src = static_cast<size_t>(row0 + (tau - pos0)) * cd + ch;
    const size_t dst = (static_cast<size_t>(slot) * m + r) * cd + ch;
    p.pools.buf_kv[dst] = p.kv[src];
    p.pools.buf_gate[dst] = __fadd_rn(p.gate[src], p.position_bias[static_cast<size_t>(r) * cd + ch]);
  }
}

}  // namespace

void launch_compressor(const CompressorParams& p, cudaStream_t stream) {
  if (p.pools.rate <= 0 || p.pools.width <= 0) return;
  if (p.windows > 0) {
    const int threads = std::min(kPoolThreadsMax, round_up(p.pools.width, 32));
    const size_t smem = static_cast<size_t>(p.pools.width) * sizeof(float);
    compressor_pool_kernel<<<p.windows, threads, smem, stream>>>(p);
  }
  if (p.step.batch > 0) compressor_state_kernel<<<p.step.batch, kStateThreads, 0, stream>>>(p);
}

}  // namespace megamoe::cuda::kernels
