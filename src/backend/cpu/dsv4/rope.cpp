#include "backend/cpu/dsv4/rope.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.hpp"

namespace megamoe::dsv4 {

RopeTable::RopeTable(const RopeParams& params, int64_t rope_dim) : rope_dim_(rope_dim) {
  MEGAMOE_CHECK(rope_dim > 0 && rope_dim % 2 == 0, "rope: rotary dim ", rope_dim, " must be even and positive");
  const int64_t half = rope_dim / 2;
  const double d = static_cast<double>(rope_dim);
  // YaRN correction range (§5.1): corr(n) = d_r ln(L0 / (2 pi n)) / (2 ln theta).
  double lo = 0.0, hi = 0.0;
  if (params.yarn) {
    MEGAMOE_CHECK(params.factor > 0 && params.original_max_position > 0, "rope: YaRN needs a positive factor and ",
                  "original_max_position_embeddings");
    auto corr = [&](double n) {
      return d * std::log(static_cast<double>(params.original_max_position) / (2.0 * std::numbers::pi * n)) /
             (2.0 * std::log(params.theta));
    };
    lo = std::max(std::floor(corr(params.beta_fast)), 0.0);
    hi = std::min(std::ceil(corr(params.beta_slow)), d - 1.0);
    if (lo == hi) hi += 0.001;
  }
  omega_.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // transformers builds the base table in fp32: 1 / theta^(2i/d).
    const float base = 1.0f / static_cast<float>(std::pow(params.theta, static_cast<double>(2 * i) / d));
    double omega = base;
    if (params.yarn) {
      const double r = std::clamp((static_cast<double>(i) - lo) / (hi - lo), 0.0, 1.0);
      omega = static_cast<double>(base) * (1.0 - r) + static_cast<double>(base) / params.factor * r;
    }
    omega_[static_cast<size_t>(i)] = static_cast<float>(omega);
  }
}

void RopeTable::apply(float* v, int64_t dim, int64_t pos, bool inverse) const {
  MEGAMOE_CHECK(dim >= rope_dim_, "rope: vector of ", dim, " channels is shorter than the rotary dim ", rope_dim_);
  float* tail = v + (dim - rope_dim_);
  for (int64_t i = 0; i < rope_dim_ / 2; ++i) {
    // Angle in fp32 like transformers (position * inv_freq), cos/sin of that value.
    const float angle = static_cast<float>(pos) * omega_[static_cast<size_t>(i)];
    const float c = static_cast<float>(std::cos(static_cast<double>(angle)));
    float s = static_cast<float>(std::sin(static_cast<double>(angle)));
    if (inverse) s = -s;
    const float a = tail[2 * i], b = tail[2 * i + 1];
    tail[2 * i] = a * c - b * s;
    tail[2 * i + 1] = a * s + b * c;
  }
}

}  // namespace megamoe::dsv4
