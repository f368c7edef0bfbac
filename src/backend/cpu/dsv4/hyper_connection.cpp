#include "backend/cpu/dsv4/hyper_connection.hpp"

#include <cmath>

#include "backend/cpu/ops.hpp"

namespace megamoe::dsv4 {
namespace {

// mu = fn . U(vec X): unweighted RMSNorm over all n_c D values, then a matvec.
std::vector<float> mixing_logits(const float* x, const Tensor& fn, const HcParams& p) {
  const int64_t n = p.streams * p.hidden;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + p.rms_eps));
  std::vector<float> normed(x, x + n);
  for (float& v : normed) v *= inv;
  const int64_t rows = fn.dim(0);
  std::vector<float> mu(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) mu[r] = cpu::dot(fn.data<float>() + r * n, normed.data(), n);
  return mu;
}

void normalise_columns(std::vector<float>& m, int64_t n, float eps) {
  for (int64_t k = 0; k < n; ++k) {
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) s += m[j * n + k];
    for (int64_t j = 0; j < n; ++j) m[j * n + k] /= (s + eps);
  }
}

void normalise_rows(std::vector<float>& m, int64_t n, float eps) {
  for (int64_t j = 0; j < n; ++j) {
    float s = 0.f;
    for (int64_t k = 0; k < n; ++k) s += m[j * n + k];
    for (int64_t k = 0; k < n; ++k) m[j * n + k] /= (s + eps);
  }
}

}  // namespace

void sinkhorn(std::vector<float>& m, int64_t n, int64_t iters, float eps) {
  for (int64_t j = 0; j < n; ++j) {  // softmax along k for each row j, then + eps
    float mx = -INFINITY;
    for (int64_t k = 0; k < n; ++k) mx = std::max(mx, m[j * n + k]);
    float s = 0.f;
    for (int64_t k = 0; k < n; ++k) s += (m[j * n + k] = std::exp(m[j * n + k] - mx));
    for (int64_t k = 0; k < n; ++k) m[j * n + k] = m[j * n + k] / s + eps;
  }
  normalise_columns(m, n, eps);
  for (int64_t it = 1; it < iters; ++it) {
    normalise_rows(m, n, eps);
    normalise_columns(m, n, eps);
  }
}

HcMix hc_mix(const float* x, const HyperConnectionWeights& w, const HcParams& p) {
  const int64_t nc = p.streams;
  const std::vector<float> mu = mixing_logits(x, w.fn, p);  // [(2 + n_c) n_c]
  const float* base = w.base.data<float>();
  const float* scale = w.scale.data<float>();
  HcMix mix;
  mix.pre.resize(nc);
  mix.post.resize(nc);
  mix.comb.resize(nc * nc);
  for (int64_t j = 0; j < nc; ++j) {
    mix.pre[j] = cpu::sigmoid(mu[j] * scale[0] + base[j]) + p.hc_eps;
    mix.post[j] = 2.f * cpu::sigmoid(mu[nc + j] * scale[1] + base[nc + j]);
  }
  for (int64_t i = 0; i < nc * nc; ++i) mix.comb[i] = mu[2 * nc + i] * scale[2] + base[2 * nc + i];
  sinkhorn(mix.comb, nc, p.sinkhorn_iters, p.hc_eps);
  return mix;
}

void hc_collapse(const float* x, const std::vector<float>& pre, const HcParams& p, float* u) {
  for (int64_t c = 0; c < p.hidden; ++c) {
    float s = 0.f;
    for (int64_t j = 0; j < p.streams; ++j) s += pre[j] * x[j * p.hidden + c];
    u[c] = s;
  }
}

void hc_post(const float* x, const float* y, const HcMix& mix, const HcParams& p, float* x_out) {
  const int64_t nc = p.streams, d = p.hidden;
  for (int64_t k = 0; k < nc; ++k) {
    for (int64_t c = 0; c < d; ++c) {
      float s = mix.post[k] * y[c];
      for (int64_t j = 0; j < nc; ++j) s += mix.comb[j * nc + k] * x[j * d + c];
      x_out[k * d + c] = s;
    }
  }
}

void hc_head(const float* x, const HyperConnectionWeights& w, const HcParams& p, float* h) {
  const std::vector<float> nu = mixing_logits(x, w.fn, p);  // [n_c]
  std::vector<float> pre(static_cast<size_t>(p.streams));
  for (int64_t j = 0; j < p.streams; ++j) {
    pre[j] = cpu::sigmoid(nu[j] * w.scale.data<float>()[0] + w.base.data<float>()[j]) + p.hc_eps;
  }
  hc_collapse(x, pre, p, h);
}

}  // namespace megamoe::dsv4
