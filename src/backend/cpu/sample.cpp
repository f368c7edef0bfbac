#include "backend/cpu/sample.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.hpp"

namespace megamoe::cpu {

int32_t choose_token(std::span<const float> logits, double temperature, int64_t top_k, double top_p, double u01) {
  MEGAMOE_CHECK(!logits.empty(), "sampling: empty logits");
  if (temperature <= 0.0) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = order.size();
  if (top_k > 0) keep = std::min(keep, static_cast<size_t>(top_k));
  std::vector<double> probs(keep);
  const double mx = logits[order[0]];
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += (probs[i] = std::exp((logits[order[i]] - mx) / temperature));
  // Nucleus: smallest prefix with cumulative probability >= top_p.
  double cumulative = 0.0;
  size_t nucleus = keep;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs[i] / total;
    if (cumulative >= top_p) {
      nucleus = i + 1;
      break;
    }
  }
  double mass = 0.0;
  for (size_t i = 0; i < nucleus; ++i) mass += probs[i];
  const double u = u01 * mass;  // uniform in [0, mass)
  double acc = 0.0;
  for (size_t i = 0; i < nucleus; ++i) {
    acc += probs[i];
    if (u < acc) return order[i];
  }
  return order[nucleus - 1];
}

}  // namespace megamoe::cpu
