// Dense-expert MoE (interface: dense_moe_params.hpp): fp32 weights, any D, I,
// E, k; the CUDA path of the tiny test checkpoints. One 256-thread block per
// token, everything in shared memory:
//   x -> router logits (warp per expert, fp32 dot) -> sqrtsoftplus scores;
//   selection by warp 0: k rounds of a warp argmax of score + bias over the
//   experts not yet taken (ties: lower expert id), or tid2eid[token] for hash
//   layers (an id or entry out of range sets *error_flag and zeroes the row);
//   weights = score / sum(chosen scores) * routed_scaling (sum in selection
//   order); then for each chosen expert in selection order h[I] = weight *
//   clampedSwiGLU(W1 x, W3 x) (warp per hidden row) and y += W2 h (warp per
//   output channel), and last the shared expert (weight 1): y = sum_j y_j + s.
//   Expert parallel (local_experts > 0): only the chosen experts of this
//   rank's block are computed, and s is its slice of the shared expert.
// Same op order as cpu::moe_forward with MoeOptions{} outside the dot
// products (products, sums and the SwiGLU use _rn intrinsics so nothing is
// fused); the dots differ from the CPU's sequential sums in order only.
// Deterministic: no atomics on data, fixed reduction orders.
// Shared memory: (2 D + max(I, I_s) + 2 E + 2 k) * 4 bytes (D rounded up to 4); above 48 KB the
// launcher opts in (fails at launch beyond the device's 227 KB).
// Cost: every token reads k + 1 experts' weights (3 I D floats each) through
// L2; fine for the tiny checkpoints it exists for, not a production path.
// Tests: tests/kernels/test_sm90_dense_moe.cpp (against cpu::moe_forward).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/common/warp_reduce.cuh"
#include "kernels/moe/dense_moe_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;


// sum_i a[i] * b[i] over the warp (a global, b shared); every lane gets it.
__device__ __forceinline__ float warp_dot(const float* __restrict__ a, const float* b, int n, bool vec4) {
  const int lane = threadIdx.x & 31;
  float acc = 0.0f;
  if (vec4) {
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    for (int i = lane; i < n / 4; i += 32) {
      const float4 x = __ldg(a4 + i), y = b4[i];
      acc += x.x * y.x;
      acc += x.y * y.y;
      acc += x.z * y.z;
      acc += x.w * y.w;
    }
  } else {
    for (int i = lane; i < n; i += 32) acc += __ldg(a + i) * b[i];
  }
  return warp_sum(acc);
}

__device__ __forceinline__ float sqrt_softplus(float g) { return sqrtf(g > 20.0f ? g : log1pf(expf(g))); }

__device__ __forceinline__ float clamped_swiglu(float gate, float up, float limit) {
  if (limit > 0.0f) {
    gate = fminf(gate, limit);
    up = fminf(fmaxf(up, -limit), limit);
  }
  const float silu = __fdiv_rn(gate, __fadd_rn(1.0f, expf(-gate)));
  return __fmul_rn(silu, up);
}


// out[c] (+)= W2[c] . (weight * swiglu(W1 x, W3 x)) for c < D. `accumulate`:
// out[c] += dot (routed slots, in order), else out[c] = base[c] + dot (the
// shared expert, base = the routed sum). h is [I] shared scratch.
__device__ void expert(const float* __restrict__ w1, const float* __restrict__ w3, const float* __restrict__ w2, int D,
                       int I, float weight, float limit, const float* xs, float* h, bool vec4_d, bool vec4_i,
                       float* out, const float* base, bool accumulate) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int i = warp; i < I; i += kWarps) {
    const float g = warp_dot(w1 + static_cast<int64_t>(i) * D, xs, D, vec4_d);
    const float u = warp_dot(w3 + static_cast<int64_t>(i) * D, xs, D, vec4_d);
    if (lane == 0) h[i] = __fmul_rn(clamped_swiglu(g, u, limit), weight);
  }
  __syncthreads();
  for (int c = warp; c < D; c += kWarps) {
    const float s = warp_dot(w2 + static_cast<int64_t>(c) * I, h, I, vec4_i);
    if (lane == 0) out[c] = accumulate ? __fadd_rn(out[c], s) : __fadd_rn(base[c], s);
  }
  __syncthreads();  // h is rewritten by the next expert
}

__global__ void __launch_bounds__(kThreads) dense_moe_kernel(const DenseMoeParams p, bool vec4_d, bool vec4_i,
                                                             bool vec4_is) {
  extern __shared__ float4 smem4[];
  __shared__ int invalid;
  const int D = p.hidden, I = p.intermediate, E = p.experts, k = p.top_k, Is = p.shared_inter;
  const int I_max = Is > I ? Is : I;
  const int Dp = (D + 3) / 4 * 4;               // keeps h 16-byte aligned
  float* xs = reinterpret_cast<float*>(smem4);  // [D]
  float* yacc = xs + Dp;                        // [D] routed sum
  float* h = yacc + Dp;                         // [max(I, I_s)]
  float* scores = h + I_max;                    // [E]
  int* taken = reinterpret_cast<int*>(scores + E);  // [E]
  int* sel = taken + E;                             // [k]
  float* wsel = reinterpret_cast<float*>(sel + k);  // [k]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t t = blockIdx.x;

  for (int c = threadIdx.x; c < D; c += kThreads) {
    xs[c] = p.x[t * D + c];
    yacc[c] = 0.0f;
  }
  if (threadIdx.x == 0) invalid = 0;
  __syncthreads();
  for (int e = warp; e < E; e += kWarps) {
    const float logit = warp_dot(p.gate + static_cast<int64_t>(e) * D, xs, D, vec4_d);
    if (lane == 0) scores[e] = sqrt_softplus(logit);
  }
  __syncthreads();

  if (warp == 0) {
    if (p.tid2eid != nullptr) {
      if (lane == 0) {
        const int32_t tok = p.token_ids[t];
        if (tok < 0 || tok >= p.vocab) {
          invalid = 1;
        } else {
          for (int j = 0; j < k; ++j) {
            const int32_t e = p.tid2eid[static_cast<int64_t>(tok) * k + j];
            if (e < 0 || e >= E) invalid = 1;
            sel[j] = e;
          }
        }
      }
    } else {
      for (int e = lane; e < E; e += 32) taken[e] = 0;
      __syncwarp();
      for (int j = 0; j < k; ++j) {
        float bv = -INFINITY;
        int bi = INT_MAX;
        for (int e = lane; e < E; e += 32) {
          if (taken[e]) continue;
          const float b = p.bias != nullptr ? __fadd_rn(scores[e], p.bias[e]) : __fadd_rn(scores[e], 0.0f);
          if (argmax_better(b, e, bv, bi)) {
            bv = b;
            bi = e;
          }
        }
        warp_argmax(bv, bi);
        if (lane == 0) {
          if (bi == INT_MAX) {  // only NaN scores left: the lowest expert not yet taken
            bi = 0;
            while (bi + 1 < E && taken[bi]) ++bi;
          }
          sel[j] = bi;
          taken[bi] = 1;
        }
        __syncwarp();
      }
    }
    if (lane == 0 && !invalid) {
      float sum = 0.0f;
      for (int j = 0; j < k; ++j) sum = __fadd_rn(sum, scores[sel[j]]);
      for (int j = 0; j < k; ++j) wsel[j] = __fmul_rn(__fdiv_rn(scores[sel[j]], sum), p.routed_scaling);
    }
  }
  __syncthreads();
  float* y = p.y + t * D;
  if (invalid) {
    if (threadIdx.x == 0 && p.error_flag != nullptr) *p.error_flag = 1;
    for (int c = threadIdx.x; c < D; c += kThreads) y[c] = 0.0f;
    return;
  }

  const int64_t expert_stride = static_cast<int64_t>(I) * D;
  for (int j = 0; j < k; ++j) {
    int e = sel[j];
    if (p.local_experts > 0) {  // expert parallel: other ranks add their experts in the all-reduce
      if (e < p.expert_begin || e >= p.expert_begin + p.local_experts) continue;
      e -= p.expert_begin;
    }
    expert(p.w1 + e * expert_stride, p.w3 + e * expert_stride, p.w2 + e * expert_stride, D, I, wsel[j],
           p.swiglu_limit, xs, h, vec4_d, vec4_i, yacc, nullptr, true);
  }
  if (Is > 0 && p.shared_w1 != nullptr) {
    // y = routed sum + shared, written straight to global.
    expert(p.shared_w1, p.shared_w3, p.shared_w2, D, Is, 1.0f, p.swiglu_limit, xs, h, vec4_d, vec4_is, y, yacc,
           false);
  } else {
    for (int c = threadIdx.x; c < D; c += kThreads) y[c] = yacc[c];
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void launch_dense_moe(const DenseMoeParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.hidden <= 0 || p.intermediate <= 0 || p.experts <= 0 || p.top_k <= 0) return;
  const int I_max = p.shared_inter > p.intermediate ? p.shared_inter : p.intermediate;
  const size_t Dp = (static_cast<size_t>(p.hidden) + 3) / 4 * 4;
  const size_t smem = (2 * Dp + I_max + 2 * static_cast<size_t>(p.experts) +
                       2 * static_cast<size_t>(p.top_k)) *
                      4;
  const bool vec4_d = p.hidden % 4 == 0 && aligned16(p.gate) && aligned16(p.w1) && aligned16(p.w3) &&
                      (p.shared_w1 == nullptr || (aligned16(p.shared_w1) && aligned16(p.shared_w3)));
  const bool vec4_i = p.intermediate % 4 == 0 && aligned16(p.w2);
  const bool vec4_is = p.shared_inter % 4 == 0 && (p.shared_w2 == nullptr || aligned16(p.shared_w2));
  if (smem > 48 * 1024) {
    // A failure surfaces as the launch error the caller checks.
    (void)cudaFuncSetAttribute(dense_moe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  }
  dense_moe_kernel<<<p.tokens, kThreads, smem, stream>>>(p, vec4_d, vec4_i, vec4_is);
}

}  // namespace megamoe::cuda::kernels
