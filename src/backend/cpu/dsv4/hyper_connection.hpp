// Manifold-constrained hyper-connections (mHC, dsv4-architecture.md §5.2):
// each token carries n_c residual streams X [n_c, D]. Before a sub-block,
// hc_mix computes (pre, post, comb) from X and hc_collapse gives the block
// input u = sum_j pre_j X[j]; after it, hc_post makes
// X'[k] = post_k y + sum_j comb[j][k] X[j] (comb applied TRANSPOSED).
// hc_head is the final collapse (no Sinkhorn, no post). All fp32.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cpu/dsv4/weights.hpp"

namespace megamoe::dsv4 {

struct HcParams {
  int64_t streams = 0;          // n_c
  int64_t hidden = 0;           // D
  int64_t sinkhorn_iters = 0;   // T_sk
  float hc_eps = 1e-6f;
  float rms_eps = 1e-6f;
};

struct HcMix {
  std::vector<float> pre;   // [n_c]
  std::vector<float> post;  // [n_c]
  std::vector<float> comb;  // [n_c, n_c] doubly stochastic (Sinkhorn), row index j = source stream
};

// Sinkhorn-Knopp on logits M [n, n] in place: row softmax + eps, column
// normalisation, then (iters - 1) x (row, column) normalisations.
void sinkhorn(std::vector<float>& m, int64_t n, int64_t iters, float eps);

// X: one token's streams [n_c, D].
HcMix hc_mix(const float* x, const HyperConnectionWeights& w, const HcParams& p);
void hc_collapse(const float* x, const std::vector<float>& pre, const HcParams& p, float* u /*[D]*/);
// x_out [n_c, D] = post (x) y + comb^T x   (x_out must not alias x).
void hc_post(const float* x, const float* y /*[D]*/, const HcMix& mix, const HcParams& p, float* x_out);
// h [D] = sum_j (sigmoid(nu_j * hc_scale + hc_base_j) + eps) X[j], nu = hc_fn . U(vec X).
void hc_head(const float* x, const HyperConnectionWeights& w, const HcParams& p, float* h);

}  // namespace megamoe::dsv4
