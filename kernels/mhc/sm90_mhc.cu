// mHC kernels (interface: mhc_params.hpp; dsv4-architecture.md §5.2), fp32.
//   hc_pre: one 512-thread block per token. vec X [n_c D] is staged in shared
//     memory while its sum of squares accumulates (in double, as the CPU
//     oracle does); mu = fn . (X * inv) splits the n_c D columns over the 16
//     warps, each warp running four fn rows at a time (float4 loads, the
//     normalised value rounded to fp32 before the product as the CPU rounds
//     it), and the per-warp partials are added in warp order (deterministic).
//     Warp 0 then makes pre/post and runs Sinkhorn in registers (lane j owns
//     row j; column sums gather the rows by shuffles in row order), in the
//     CPU's op order: row softmax + eps, column normalisation, then
//     (iters - 1) x (row, column). Finally every thread collapses its
//     channels, u = sum_j pre_j X[j], and the weighted RMSNorm of u (double
//     sum of squares, (u * inv) * w) is written.
//   hc_head: the same mixing logits with n_c rows, pre, collapse; no norm.
//   hc_post (in place): one thread per (token, channel) reads the n_c stream
//     values at that channel into registers, then writes all n_c outputs.
// Products and sums outside the dot products use _rn intrinsics so nvcc
// cannot fuse them into FMAs: those values are then bit-identical to the CPU's
// given the same inputs; what differs is the fp32 summation order of the
// mu dot products and 1-2 ulp expf differences (sigmoid, softmax).
// Constraints: 1 <= n_c <= 32 (hc_post buffers the streams of one channel in
// registers); n_c in {2, 3, 4, 8} take compiled-in paths (Sinkhorn in
// registers), any other n_c a generic one (Sinkhorn by one thread in shared
// memory, slower). Shared memory of hc_pre is (n_c D + D + 17 (2+n_c) n_c + n_c)
// floats (83 KB at D 4096, n_c 4); above 48 KB the launcher opts in.
// Cost: hc_pre reads fn ((2+n_c) n_c x n_c D fp32: 1.5 MB at Flash widths)
// once per token, so a decode step is bound by one SM's L2 bandwidth (NOTES.md).
// Tests: tests/kernels/test_sm90_mhc.cpp (against hc_mix / hc_collapse /
// rms_norm_rows / hc_post / hc_head of src/backend/cpu/dsv4/hyper_connection.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/common/warp_reduce.cuh"
#include "kernels/mhc/mhc_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerPass = 4;  // fn rows per pass of a warp over its columns
constexpr int kMaxPostStreams = 32;
constexpr int kPostThreads = 256;
// Mixing split: aim for about two blocks per SM (132 on H200) when tokens are few.
constexpr int kSplitTargetBlocks = 264;
constexpr int kMaxSplits = 64;

// Block-wide double sum; every thread gets the same value.
__device__ __forceinline__ double block_sum_double(double v, double* scratch /*[kWarps]*/) {
  v = warp_sum(v);
  __syncthreads();  // earlier readers of scratch are done
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

// float(1 / sqrt(sum / n + eps)) in double, as cpu::rms_norm_rows and the mHC
// mixing norm compute it.
__device__ __forceinline__ float inv_rms(double sum, int n, float eps) {
  return static_cast<float>(1.0 / sqrt(sum / static_cast<double>(n) + static_cast<double>(eps)));
}

__device__ __forceinline__ float sigmoid(float z) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-z))); }

// mu[r] = sum_i fn[r, i] * float(xs[i] * inv) for r < rows. Warp w owns a
// contiguous slice of the columns; partial[r * kWarps + w] collects the warp
// sums, which are then added in warp order. Ends with a barrier.
// With splits > 1 the block covers only column slice `split` of `splits`.
__device__ void mixing_logits(const float* xs, int n, float inv, const float* __restrict__ fn, int rows, bool vec4,
                              float* partial, float* mu, int split = 0, int splits = 1) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (vec4) {
    const int n4 = n / 4;
    const int slice = (n4 + splits - 1) / splits, s0 = min(n4, split * slice), s1 = min(n4, s0 + slice);
    const int chunk = (s1 - s0 + kWarps - 1) / kWarps;
    const int begin = s0 + warp * chunk, end = min(s1, begin + chunk);
    const float4* x4 = reinterpret_cast<const float4*>(xs);
    const float4* f4 = reinterpret_cast<const float4*>(fn);
    for (int r0 = 0; r0 < rows; r0 += kRowsPerPass) {
      const int nr = min(kRowsPerPass, rows - r0);
      float acc[kRowsPerPass] = {};
#pragma unroll 2
      for (int i = begin + lane; i < end; i += 32) {
        const float4 v = x4[i];
        const float a = __fmul_rn(v.x, inv), b = __fmul_rn(v.y, inv), c = __fmul_rn(v.z, inv),
                    d = __fmul_rn(v.w, inv);
#pragma unroll
        for (int q = 0; q < kRowsPerPass; ++q) {
          if (q < nr) {
            const float4 f = __ldg(f4 + static_cast<int64_t>(r0 + q) * n4 + i);
            acc[q] += f.x * a;
            acc[q] += f.y * b;
            acc[q] += f.z * c;
            acc[q] += f.w * d;
          }
        }
      }
#pragma unroll
      for (int q = 0; q < kRowsPerPass; ++q) {
        const float s = warp_sum(acc[q]);
        if (lane == 0 && q < nr) partial[(r0 + q) * kWarps + warp] = s;
      }
    }
  } else {
    const int slice = (n + splits - 1) / splits, s0 = min(n, split * slice), s1 = min(n, s0 + slice);
    const int chunk = (s1 - s0 + kWarps - 1) / kWarps;
    const int begin = s0 + warp * chunk, end = min(s1, begin + chunk);
    for (int r0 = 0; r0 < rows; r0 += kRowsPerPass) {
      const int nr = min(kRowsPerPass, rows - r0);
      float acc[kRowsPerPass] = {};
      for (int i = begin + lane; i < end; i += 32) {
        const float v = __fmul_rn(xs[i], inv);
#pragma unroll
        for (int q = 0; q < kRowsPerPass; ++q)
          if (q < nr) acc[q] += __ldg(fn + static_cast<int64_t>(r0 + q) * n + i) * v;
      }
#pragma unroll
      for (int q = 0; q < kRowsPerPass; ++q) {
        const float s = warp_sum(acc[q]);
        if (lane == 0 && q < nr) partial[(r0 + q) * kWarps + warp] = s;
      }
    }
  }
  __syncthreads();
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    float s = 0.0f;
    for (int w = 0; w < kWarps; ++w) s += partial[r * kWarps + w];
    mu[r] = s;
  }
  __syncthreads();
}

// Sinkhorn on the NC x NC logits m (shared), by all 32 lanes of one warp:
// lane j < NC holds row j in registers (other lanes shadow row 0, unused).
// Same op order as dsv4::sinkhorn; the result goes to out (row-major).
template <int NC>
__device__ void sinkhorn_warp(const float* m_in, int iters, float eps, float* out) {
  static_assert(NC >= 1 && NC <= 32, "one row per lane");
  const int lane = threadIdx.x & 31;
  const int j = lane < NC ? lane : 0;
  float m[NC];
#pragma unroll
  for (int k = 0; k < NC; ++k) m[k] = m_in[j * NC + k];
  float mx = -INFINITY;
#pragma unroll
  for (int k = 0; k < NC; ++k) mx = fmaxf(mx, m[k]);
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < NC; ++k) {
    m[k] = expf(__fsub_rn(m[k], mx));
    s = __fadd_rn(s, m[k]);
  }
#pragma unroll
  for (int k = 0; k < NC; ++k) m[k] = __fadd_rn(__fdiv_rn(m[k], s), eps);
  auto normalise_columns = [&]() {
#pragma unroll
    for (int k = 0; k < NC; ++k) {
      float cs = 0.0f;
#pragma unroll
      for (int r = 0; r < NC; ++r) cs = __fadd_rn(cs, __shfl_sync(0xFFFFFFFFu, m[k], r));
      m[k] = __fdiv_rn(m[k], __fadd_rn(cs, eps));
    }
  };
  normalise_columns();
  for (int it = 1; it < iters; ++it) {
    float rs = 0.0f;
#pragma unroll
    for (int k = 0; k < NC; ++k) rs = __fadd_rn(rs, m[k]);
    const float den = __fadd_rn(rs, eps);
#pragma unroll
    for (int k = 0; k < NC; ++k) m[k] = __fdiv_rn(m[k], den);
    normalise_columns();
  }
  if (lane < NC) {
#pragma unroll
    for (int k = 0; k < NC; ++k) out[lane * NC + k] = m[k];
  }
}

// Generic n: one thread, in place in shared memory (the CPU code verbatim).
__device__ void sinkhorn_serial(float* m, int n, int iters, float eps) {
  auto columns = [&]() {
    for (int k = 0; k < n; ++k) {
      float s = 0.0f;
      for (int j = 0; j < n; ++j) s = __fadd_rn(s, m[j * n + k]);
      for (int j = 0; j < n; ++j) m[j * n + k] = __fdiv_rn(m[j * n + k], __fadd_rn(s, eps));
    }
  };
  for (int j = 0; j < n; ++j) {
    float mx = -INFINITY;
    for (int k = 0; k < n; ++k) mx = fmaxf(mx, m[j * n + k]);
    float s = 0.0f;
    for (int k = 0; k < n; ++k) s = __fadd_rn(s, (m[j * n + k] = expf(__fsub_rn(m[j * n + k], mx))));
    for (int k = 0; k < n; ++k) m[j * n + k] = __fadd_rn(__fdiv_rn(m[j * n + k], s), eps);
  }
  columns();
  for (int it = 1; it < iters; ++it) {
    for (int j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int k = 0; k < n; ++k) s = __fadd_rn(s, m[j * n + k]);
      for (int k = 0; k < n; ++k) m[j * n + k] = __fdiv_rn(m[j * n + k], __fadd_rn(s, eps));
    }
    columns();
  }
}

// Stages vec X of one token in xs and returns float(1/rms(vec X)).
__device__ __forceinline__ float stage_streams(const float* __restrict__ xt, int n, float eps, float* xs,
                                               double* scratch) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float v = xt[i];
    xs[i] = v;
    acc += static_cast<double>(v) * v;
  }
  return inv_rms(block_sum_double(acc, scratch), n, eps);  // the sum's barriers publish xs
}

// Few tokens: the mixing dot products of one token spread over `splits`
// blocks (one block would stream all of fn through a single SM). Block
// (s, t) writes split[(t splits + s) rows + r]; the main kernel adds the
// slices in order. 1/rms is recomputed per block exactly as stage_streams does.
__global__ void __launch_bounds__(kThreads) hc_mix_split_kernel(const float* __restrict__ x, int first, int n,
                                                                 const float* __restrict__ fn, int rows, float rms_eps,
                                                                 bool vec4, float* split) {
  extern __shared__ float partial[];  // [rows, kWarps]
  __shared__ double scratch[kWarps];
  const int s = blockIdx.x, splits = gridDim.x;
  const int64_t t = blockIdx.y;
  const float* xt = x + (first + t) * n;
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float v = xt[i];
    acc += static_cast<double>(v) * v;
  }
  const float inv = inv_rms(block_sum_double(acc, scratch), n, rms_eps);
  mixing_logits(xt, n, inv, fn, rows, vec4, partial, split + (t * splits + s) * rows, s, splits);
}

// mu[r] = the slices' sums added in slice order. Ends with a barrier.
__device__ void gather_split(const float* split, int64_t t, int splits, int rows, float* mu) {
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += split[(t * splits + s) * rows + r];
    mu[r] = v;
  }
  __syncthreads();
}

template <int NC>
__global__ void __launch_bounds__(kThreads) hc_pre_kernel(const HcPreParams p, bool vec4) {
  extern __shared__ float4 smem4[];
  __shared__ double scratch[kWarps];
  const int nc = NC > 0 ? NC : p.streams;
  const int D = p.hidden, n = nc * D, M = (2 + nc) * nc;
  float* xs = reinterpret_cast<float*>(smem4);  // [n_c D] the token's streams
  float* us = xs + n;                           // [D] collapsed, before the norm
  float* partial = us + D;                      // [M, kWarps]
  float* mu = partial + M * kWarps;             // [M]
  float* pre = mu + M;                          // [n_c]
  const int64_t t = blockIdx.x;
  const int lane = threadIdx.x & 31;

  const float inv = stage_streams(p.x + t * n, n, p.rms_eps, xs, scratch);
  if (p.splits > 1) {
    gather_split(p.split, t, p.splits, M, mu);
  } else {
    mixing_logits(xs, n, inv, p.fn, M, vec4, partial, mu);
  }

  float* mix = p.mix + t * M;
  if (threadIdx.x < 32) {
    for (int j = lane; j < 2 * nc; j += 32) {
      const int which = j < nc ? 0 : 1;
      const float z = __fadd_rn(__fmul_rn(mu[j], p.scale[which]), p.base[j]);
      if (which == 0) {
        const float v = __fadd_rn(sigmoid(z), p.hc_eps);
        pre[j] = v;
        mix[j] = v;
      } else {
        mix[j] = __fmul_rn(2.0f, sigmoid(z));
      }
    }
    float* comb = mu + 2 * nc;  // logits in place
    for (int i = lane; i < nc * nc; i += 32) comb[i] = __fadd_rn(__fmul_rn(comb[i], p.scale[2]), p.base[2 * nc + i]);
    __syncwarp();
    if constexpr (NC > 0) {
      sinkhorn_warp<NC>(comb, p.sinkhorn_iters, p.hc_eps, mix + 2 * nc);
    } else {
      if (lane == 0) {
        sinkhorn_serial(comb, nc, p.sinkhorn_iters, p.hc_eps);
        for (int i = 0; i < nc * nc; ++i) mix[2 * nc + i] = comb[i];
      }
    }
  }
  __syncthreads();  // pre

  double acc = 0.0;
  for (int c = threadIdx.x; c < D; c += kThreads) {
    float s = 0.0f;
    for (int j = 0; j < nc; ++j) s = __fadd_rn(s, __fmul_rn(pre[j], xs[j * D + c]));
    us[c] = s;
    acc += static_cast<double>(s) * s;
  }
  const float inv_u = inv_rms(block_sum_double(acc, scratch), D, p.rms_eps);
  float* u = p.u + t * D;
  for (int c = threadIdx.x; c < D; c += kThreads) u[c] = __fmul_rn(__fmul_rn(us[c], inv_u), p.norm[c]);
}

__global__ void __launch_bounds__(kThreads) hc_head_kernel(const HcHeadParams p, bool vec4) {
  extern __shared__ float4 smem4[];
  __shared__ double scratch[kWarps];
  const int nc = p.streams, D = p.hidden, n = nc * D;
  float* xs = reinterpret_cast<float*>(smem4);  // [n_c D]
  float* partial = xs + n;                      // [n_c, kWarps]
  float* mu = partial + nc * kWarps;            // [n_c]
  float* pre = mu + nc;                         // [n_c]
  const int64_t row = blockIdx.x;

  const float inv = stage_streams(p.x + (p.first + row) * n, n, p.rms_eps, xs, scratch);
  if (p.splits > 1) {
    gather_split(p.split, row, p.splits, nc, mu);
  } else {
    mixing_logits(xs, n, inv, p.fn, nc, vec4, partial, mu);
  }
  for (int j = threadIdx.x; j < nc; j += kThreads)
    pre[j] = __fadd_rn(sigmoid(__fadd_rn(__fmul_rn(mu[j], p.scale[0]), p.base[j])), p.hc_eps);
  __syncthreads();
  float* h = p.h + row * D;
  for (int c = threadIdx.x; c < D; c += kThreads) {
    float s = 0.0f;
    for (int j = 0; j < nc; ++j) s = __fadd_rn(s, __fmul_rn(pre[j], xs[j * D + c]));
    h[c] = s;
  }
}

// X'[k] = post_k y + sum_j comb[j][k] X[j], one thread per (token, channel).
template <int NC>
__global__ void __launch_bounds__(kPostThreads) hc_post_kernel(const HcPostParams p) {
  constexpr int kBuf = NC > 0 ? NC : kMaxPostStreams;
  const int nc = NC > 0 ? NC : p.streams;
  const int D = p.hidden, M = (2 + nc) * nc;
  const int64_t total = static_cast<int64_t>(p.tokens) * D;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / D;
    const int c = static_cast<int>(idx % D);
    float* xt = p.x + t * nc * D + c;
    const float* mix = p.mix + t * M;
    const float* post = mix + nc;
    const float* comb = mix + 2 * nc;
    float xv[kBuf];
#pragma unroll
    for (int j = 0; j < kBuf; ++j)
      if (j < nc) xv[j] = xt[static_cast<int64_t>(j) * D];
    const float y = p.y[t * D + c];
#pragma unroll
    for (int k = 0; k < kBuf; ++k) {
      if (k < nc) {
        float s = __fmul_rn(post[k], y);
#pragma unroll
        for (int j = 0; j < kBuf; ++j)
          if (j < nc) s = __fadd_rn(s, __fmul_rn(comb[j * nc + k], xv[j]));
        xt[static_cast<int64_t>(k) * D] = s;
      }
    }
  }
}

template <typename F>
void dispatch_streams(int nc, F&& f) {
  switch (nc) {
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes) {
  // A failure surfaces as the launch error the caller checks.
  if (bytes > 48 * 1024) (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

int hc_mix_splits(int tokens) {
  if (tokens <= 0 || tokens >= kSplitTargetBlocks / 2) return 1;
  return std::min(kMaxSplits, (kSplitTargetBlocks + tokens - 1) / tokens);
}

void launch_hc_pre(const HcPreParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.streams <= 0 || p.hidden <= 0) return;
  const int nc = p.streams, n = nc * p.hidden, M = (2 + nc) * nc;
  const size_t smem = static_cast<size_t>(n + p.hidden + M * kWarps + M + nc) * sizeof(float);
  const bool vec4 = n % 4 == 0 && aligned16(p.fn);
  if (p.splits > 1)
    hc_mix_split_kernel<<<dim3(p.splits, p.tokens), kThreads, M * kWarps * sizeof(float), stream>>>(
        p.x, 0, n, p.fn, M, p.rms_eps, vec4 && aligned16(p.x), p.split);
  dispatch_streams(nc, [&](auto tag) {
    constexpr int NC = decltype(tag)::value;
    allow_dynamic_smem(hc_pre_kernel<NC>, smem);
    hc_pre_kernel<NC><<<p.tokens, kThreads, smem, stream>>>(p, vec4);
  });
}

void launch_hc_post(const HcPostParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.streams <= 0 || p.streams > kMaxPostStreams || p.hidden <= 0) return;
  const int64_t work = static_cast<int64_t>(p.tokens) * p.hidden;
  const int64_t blocks64 = (work + kPostThreads - 1) / kPostThreads;
  const unsigned blocks = static_cast<unsigned>(blocks64 < 16384 ? blocks64 : 16384);
  dispatch_streams(p.streams, [&](auto tag) {
    constexpr int NC = decltype(tag)::value;
    hc_post_kernel<NC><<<blocks, kPostThreads, 0, stream>>>(p);
  });
}

void launch_hc_head(const HcHeadParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.streams <= 0 || p.hidden <= 0) return;
  const int nc = p.streams, n = nc * p.hidden;
  const size_t smem = static_cast<size_t>(n + nc * kWarps + 2 * nc) * sizeof(float);
  const bool vec4 = n % 4 == 0 && aligned16(p.fn);
  if (p.splits > 1)
    hc_mix_split_kernel<<<dim3(p.splits, p.tokens), kThreads, nc * kWarps * sizeof(float), stream>>>(
        p.x, p.first, n, p.fn, nc, p.rms_eps, vec4 && aligned16(p.x), p.split);
  allow_dynamic_smem(hc_head_kernel, smem);
  hc_head_kernel<<<p.tokens, kThreads, smem, stream>>>(p, vec4);
}

}  // namespace megamoe::cuda::kernels
