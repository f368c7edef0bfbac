#include "backend/cpu/dsv4/attention.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/ops.hpp"

namespace megamoe::dsv4 {

std::vector<float> indexer_scores(const float* q, const float* head_w, const float* entries, int64_t n,
                                  int64_t heads, int64_t dim) {
  const float head_scale = 1.f / std::sqrt(static_cast<float>(heads));
  const float dim_scale = 1.f / std::sqrt(static_cast<float>(dim));
  std::vector<float> scores(static_cast<size_t>(n));
  for (int64_t e = 0; e < n; ++e) {
    float s = 0.f;
    for (int64_t h = 0; h < heads; ++h) {
      const float dotp = cpu::dot(q + h * dim, entries + e * dim, dim);
      s += head_w[h] * head_scale * std::max(dotp, 0.f);
    }
    scores[e] = s * dim_scale;
  }
  return scores;
}

std::vector<int64_t> indexer_top_k(const std::vector<float>& scores, int64_t top_k) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = std::min<int64_t>(top_k, static_cast<int64_t>(scores.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  order.resize(static_cast<size_t>(k));
  return order;
}

void attend_row(const float* q, const std::vector<const float*>& keys, int64_t dh, float scale, float sink, float* out) {
  std::vector<float> logits(keys.size());
  float mx = sink;
  for (size_t j = 0; j < keys.size(); ++j) {
    logits[j] = scale * cpu::dot(q, keys[j], dh);
    mx = std::max(mx, logits[j]);
  }
  float denom = std::exp(sink - mx);  // the sink takes mass, adds nothing to o
  for (float& l : logits) denom += (l = std::exp(l - mx));
  std::fill(out, out + dh, 0.f);
  for (size_t j = 0; j < keys.size(); ++j) {
    const float p = logits[j] / denom;
    for (int64_t i = 0; i < dh; ++i) out[i] += p * keys[j][i];  // values = keys
  }
}

}  // namespace megamoe::dsv4
