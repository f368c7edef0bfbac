// The cores of DeepSeek-V4 attention on the CPU (dsv4-architecture.md §5.4,
// §5.5): the lightning indexer's scores and top-k, and one query's softmax
// over its keys with a learned sink (values = keys). The CPU backend
// (cpu_backend.cpp) gathers the keys: the sliding window, then the compressed
// entries (HCA: all causal ones; CSA: the indexer's top-k).
#pragma once

#include <cstdint>
#include <vector>

namespace megamoe::dsv4 {

// I[e] = d_I^-1/2 sum_h head_w[h] H_I^-1/2 ReLU(q[h] . K[e]) for e < n.
// q [H_I, d_I], head_w [H_I], entries [n, d_I].
std::vector<float> indexer_scores(const float* q, const float* head_w, const float* entries, int64_t n,
                                  int64_t heads, int64_t dim);

// The lightning indexer's choice for one query: the top-min(K_I, visible)
// entries by score, ties to the lower index. scores has `visible` values.
std::vector<int64_t> indexer_top_k(const std::vector<float>& scores, int64_t top_k);

// out [d_h] = sum_j softmax_j(scale q . k_j) k_j, the softmax also over the
// sink logit, which takes mass and adds nothing.
void attend_row(const float* q, const std::vector<const float*>& keys, int64_t dh, float scale, float sink, float* out);

}  // namespace megamoe::dsv4
