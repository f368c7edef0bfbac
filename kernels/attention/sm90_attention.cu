// Window + compressed attention with sinks on the device (dsv4-architecture.md
// §5.4, §8; contract: kernels/attention/attention_params.hpp, AttentionParams /
// WindowUpdateParams), and the window ring update.
//
// attention_kernel: one block of 256 threads per (row t, head h), blocks of
// one row adjacent (they share every key, so the heads' reloads hit L2).
//  1. The key list, as row pointers in shared memory: the window positions
//     max(0, p - W + 1) .. p (a position >= pos0 of the row's sequence is this
//     step's kv row row0 + position - pos0, an earlier one the window pool's
//     row position % W), then the compressed keys: CSA: entries[selected[t][i]]
//     for i < top_k (a -1 or out-of-range pick is a null key), HCA: entries
//     0 .. min(floor((p + 1) / m), max_entries) - 1, SWA: none.
//  2. Logits scale * q . k, a warp per key (float4 loads when d_h % 4 == 0
//     and the buffers are 16-byte aligned), into shared memory; null keys get
//     -inf.
//  3. max over the logits and the sink, e_j = exp(l_j - max), the sum with
//     exp(sink - max), p_j = e_j / sum (the sink takes mass, adds no value).
//  4. out[t, h, i] = sum_j p_j k_j[i], threads over channels (any d_h).
// Shared memory: 12 bytes per key (pointer + logit) + 4 d_h: W + top_k keys
// (CSA) or W + max_entries (HCA) must fit the device's opt-in shared memory
// (227 KiB on sm_90: about 19K keys at d_h = 512), which the launcher opts in
// to once per device when more than 48 KiB is needed.
//
// window_update_kernel: one block per row; the rows of positions
// >= pos0 + tokens - W of each sequence copy their kv row to
// window_pool[slot][p % W]. Must run after attention (which reads the pool
// rows these overwrite): stream order.
//
// fp32 throughout; matches the host's attention core (dsv4::attend_row) to
// ~1e-6 relative (summation order and expf only).
// Test: tests/kernels/test_sm90_attention.cpp (Attention*, Layer*).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention/attention_common.cuh"
#include "kernels/attention/attention_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

using namespace attention_detail;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kCopyThreads = 128;

template <bool kVec4>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionParams p, int key_capacity) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float red[32];
  const float** keys = reinterpret_cast<const float**>(smem);  // [key_capacity]
  float* qs = reinterpret_cast<float*>(smem + static_cast<size_t>(round_up(key_capacity, 2)) * 8);
  const int dh = p.head_dim;
  float* logit = qs + ((dh + 3) & ~3);  // [key_capacity]

  const int t = blockIdx.x / p.heads, h = blockIdx.x % p.heads;
  const int b = p.step.row_seq[t], pos = p.step.row_pos[t];
  const int slot = p.step.seq_slot[b], pos0 = p.step.seq_pos0[b], row0 = p.step.seq_row0[b];
  const int nw = min(p.window, pos + 1), first = pos - nw + 1;
  int nc = 0;
  if (p.entries != nullptr) {
    if (p.selected != nullptr)
      nc = p.top_k;
    else if (p.rate > 0)
      nc = min((pos + 1) / p.rate, p.max_entries);
  }
  const int nk = nw + nc;

  const float* ent = p.entries != nullptr ? p.entries + static_cast<size_t>(slot) * p.max_entries * dh : nullptr;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) {
    const float* row = nullptr;
    if (j < nw) {
      const int s = first + j;
      row = s >= pos0 ? p.kv + static_cast<size_t>(row0 + (s - pos0)) * dh
                      : p.window_pool + (static_cast<size_t>(slot) * p.window + s % p.window) * dh;
    } else {
      const int e = p.selected != nullptr ? p.selected[static_cast<size_t>(t) * p.top_k + (j - nw)] : j - nw;
      if (e >= 0 && e < p.max_entries) row = ent + static_cast<size_t>(e) * dh;
    }
    keys[j] = row;
  }
  const float* qg = p.q + (static_cast<size_t>(t) * p.heads + h) * dh;
  for (int i = threadIdx.x; i < dh; i += blockDim.x) qs[i] = qg[i];
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int j = warp; j < nk; j += kWarps) {
    const float* row = keys[j];
    float dot = 0.0f;
    if (row != nullptr) {
      if (kVec4) {
        const float4* q4 = reinterpret_cast<const float4*>(qs);
        const float4* k4 = reinterpret_cast<const float4*>(row);
        for (int c = lane; c < dh / 4; c += 32) {
          const float4 a = q4[c], k = __ldg(k4 + c);
          dot = fmaf(a.x, k.x, dot);
          dot = fmaf(a.y, k.y, dot);
          dot = fmaf(a.z, k.z, dot);
          dot = fmaf(a.w, k.w, dot);
        }
      } else {
        for (int i = lane; i < dh; i += 32) dot = fmaf(qs[i], __ldg(row + i), dot);
      }
    }
    dot = warp_sum(dot);
    if (lane == 0) logit[j] = row != nullptr ? p.scale * dot : -INFINITY;
  }
  __syncthreads();

  const float sink = p.sinks[h];
  float mx = sink;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) mx = fmaxf(mx, logit[j]);
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) {
    const float e = expf(logit[j] - mx);  // -inf (null key) -> 0
    logit[j] = e;
    sum += e;
  }
  sum = block_sum(sum, red);  // syncs: every e_j is written
  const float denom = sum + expf(sink - mx);
  for (int j = threadIdx.x; j < nk; j += blockDim.x) logit[j] = logit[j] / denom;
  __syncthreads();

  float* og = p.out + (static_cast<size_t>(t) * p.heads + h) * dh;
  for (int i = threadIdx.x; i < dh; i += blockDim.x) {
    float acc = 0.0f;
    int j = 0;
    for (; j + 4 <= nk; j += 4) {  // four loads in flight
      const float* r0 = keys[j];
      const float* r1 = keys[j + 1];
      const float* r2 = keys[j + 2];
      const float* r3 = keys[j + 3];
      const float v0 = r0 != nullptr ? __ldg(r0 + i) : 0.0f;
      const float v1 = r1 != nullptr ? __ldg(r1 + i) : 0.0f;
      const float v2 = r2 != nullptr ? __ldg(r2 + i) : 0.0f;
      const float v3 = r3 != nullptr ? __ldg(r3 + i) : 0.0f;
      acc = fmaf(logit[j], v0, acc);
      acc = fmaf(logit[j + 1], v1, acc);
      acc = fmaf(logit[j + 2], v2, acc);
      acc = fmaf(logit[j + 3], v3, acc);
    }
    for (; j < nk; ++j) {
      const float* r = keys[j];
      if (r != nullptr) acc = fmaf(logit[j], __ldg(r + i), acc);
    }
    og[i] = acc;
  }
}

__global__ void __launch_bounds__(kCopyThreads) window_update_kernel(WindowUpdateParams p) {
  const int t = blockIdx.x;
  const int b = p.step.row_seq[t], pos = p.step.row_pos[t];
  const int tokens = p.step.seq_tokens[b], pos0 = p.step.seq_pos0[b], slot = p.step.seq_slot[b];
  if (pos < pos0 + tokens - p.window) return;  // overwritten later in this step anyway
  const float* src = p.kv + static_cast<size_t>(t) * p.head_dim;
  float* dst = p.window_pool + (static_cast<size_t>(slot) * p.window + pos % p.window) * p.head_dim;
  for (int i = threadIdx.x; i < p.head_dim; i += blockDim.x) dst[i] = src[i];
}

bool aligned16(const void* ptr) { return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

}  // namespace

void launch_attention(const AttentionParams& p, cudaStream_t stream) {
  if (p.step.rows <= 0 || p.heads <= 0 || p.head_dim <= 0 || p.window <= 0) return;
  int key_capacity = p.window;
  if (p.entries != nullptr) key_capacity += p.selected != nullptr ? p.top_k : p.max_entries;
  const size_t smem = static_cast<size_t>(round_up(key_capacity, 2)) * 8 +
                      static_cast<size_t>(round_up(p.head_dim, 4)) * 4 + static_cast<size_t>(key_capacity) * 4;
  const bool vec4 =
      p.head_dim % 4 == 0 && aligned16(p.q) && aligned16(p.kv) && aligned16(p.window_pool) && aligned16(p.entries);
  const unsigned blocks = static_cast<unsigned>(p.step.rows) * static_cast<unsigned>(p.heads);
  if (vec4) {
    if (smem > 48 * 1024) {
      static SmemOptIn optin;
      (void)optin.limit(reinterpret_cast<const void*>(attention_kernel<true>));
    }
    attention_kernel<true><<<blocks, kThreads, smem, stream>>>(p, key_capacity);
  } else {
    if (smem > 48 * 1024) {
      static SmemOptIn optin;
      (void)optin.limit(reinterpret_cast<const void*>(attention_kernel<false>));
    }
    attention_kernel<false><<<blocks, kThreads, smem, stream>>>(p, key_capacity);
  }
}

void launch_window_update(const WindowUpdateParams& p, cudaStream_t stream) {
  if (p.step.rows <= 0 || p.head_dim <= 0 || p.window <= 0) return;
  window_update_kernel<<<p.step.rows, kCopyThreads, 0, stream>>>(p);
}

}  // namespace megamoe::cuda::kernels
