// Device interface of the mHC kernels (dsv4-architecture.md §5.2), fp32
// throughout. Each token carries n_c residual streams X [n_c, D].
//   hc_pre:  mu = fn . (vec X / rms(vec X)); pre = sigmoid(mu[0:n]*s0 + b) + eps;
//            post = 2 sigmoid(mu[n:2n]*s1 + b); comb = Sinkhorn(mu[2n:]*s2 + b);
//            u = RMSNorm(sum_j pre_j X[j]) * norm_weight.
//   hc_post: X'[k] = post_k y + sum_j comb[j][k] X[j]   (in place).
//   hc_head: pre = sigmoid(nu*s0 + b) + eps (nu = fn . normalised vec X), h = sum_j pre_j X[j].
// The CPU oracle is src/backend/cpu/dsv4/hyper_connection.cpp (hc_mix,
// sinkhorn, hc_collapse, hc_post, hc_head) plus cpu::rms_norm_rows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

struct HcPreParams {
  int tokens = 0, streams = 0, hidden = 0;  // T, n_c, D
  int sinkhorn_iters = 0;
  float hc_eps = 1e-6f, rms_eps = 1e-6f;
  const float* x = nullptr;      // [T, n_c, D]
  const float* fn = nullptr;     // [(2 + n_c) n_c, n_c D]
  const float* base = nullptr;   // [(2 + n_c) n_c]
  const float* scale = nullptr;  // [3]
  const float* norm = nullptr;   // [D] weight of the RMSNorm applied to u
  float* u = nullptr;            // [T, D] out: block input
  float* mix = nullptr;          // [T, (2 + n_c) n_c] out: pre [n_c], post [n_c], comb [n_c, n_c] (row j = source)
  // Few tokens: the mixing dot products split over `splits` blocks per token
  // (hc_mix_splits), through scratch split [T, splits, (2 + n_c) n_c].
  int splits = 1;
  float* split = nullptr;
};

struct HcPostParams {
  int tokens = 0, streams = 0, hidden = 0;
  float* x = nullptr;          // [T, n_c, D] in/out
  const float* y = nullptr;    // [T, D] block output
  const float* mix = nullptr;  // [T, (2 + n_c) n_c] from hc_pre
};

struct HcHeadParams {
  int tokens = 0, streams = 0, hidden = 0;  // tokens = rows written
  int first = 0;                 // first source token (rows first .. first + tokens - 1 of x)
  float hc_eps = 1e-6f, rms_eps = 1e-6f;
  const float* x = nullptr;      // [first + tokens, n_c, D]
  const float* fn = nullptr;     // [n_c, n_c D]
  const float* base = nullptr;   // [n_c]
  const float* scale = nullptr;  // [1]
  float* h = nullptr;            // [tokens, D] out (not normalised; the caller applies the final RMSNorm)
  int splits = 1;                // as HcPreParams; scratch split [tokens, splits, n_c]
  float* split = nullptr;
};

// Blocks per token for the mixing dot products at this many tokens (1 = no split).
int hc_mix_splits(int tokens);

void launch_hc_pre(const HcPreParams& p, cudaStream_t stream);
void launch_hc_post(const HcPostParams& p, cudaStream_t stream);
void launch_hc_head(const HcHeadParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
