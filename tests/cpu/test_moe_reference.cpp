// CPU reference MoE (src/backend/cpu/moe.hpp) against an independent
// double-precision computation written differently: top-k by repeated argmax,
// routing weight applied after w2 (equal in exact arithmetic), log(1+e^g).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/moe.hpp"
#include "core/block_quant.hpp"
#include "core/error.hpp"
#include "test_seed.hpp"

namespace {

using megamoe::cpu::MoeDims;
using megamoe::cpu::MoeWeights;

struct Problem {
  MoeDims dims;
  std::vector<float> gate, bias, w1, w3, w2, sw1, sw3, sw2;
  std::vector<int32_t> tid2eid;
  int64_t vocab = 0;
  MoeWeights view() const {
    MoeWeights w;
    w.dims = dims;
    w.gate = gate;
    w.bias = bias;
    w.tid2eid = tid2eid;
    w.w1 = w1;
    w.w3 = w3;
    w.w2 = w2;
    w.shared_w1 = sw1;
    w.shared_w3 = sw3;
    w.shared_w2 = sw2;
    return w;
  }
};

std::vector<float> random_vector(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

Problem make_problem(uint32_t seed, int64_t D, int64_t I, int64_t E, int64_t k, int64_t Is, float wscale,
                     bool with_bias, int64_t vocab) {
  std::mt19937 rng(::megamoe::testing::seeded(seed));
  Problem p;
  p.dims = MoeDims{D, I, E, k, Is, 1.5f, 10.0f};
  p.gate = random_vector(rng, E * D, 1.0f / std::sqrt(float(D)));
  if (with_bias) p.bias = random_vector(rng, E, 0.3f);
  p.w1 = random_vector(rng, E * I * D, wscale);
  p.w3 = random_vector(rng, E * I * D, wscale);
  p.w2 = random_vector(rng, E * D * I, wscale);
  p.sw1 = random_vector(rng, Is * D, wscale);
  p.sw3 = random_vector(rng, Is * D, wscale);
  p.sw2 = random_vector(rng, D * Is, wscale);
  if (vocab > 0) {
    p.vocab = vocab;
    std::uniform_int_distribution<int32_t> pick(0, int32_t(E) - 1);
    for (int64_t v = 0; v < vocab; ++v) {
      std::vector<int32_t> row;
      while (int64_t(row.size()) < k) {  // distinct experts per token, like the checkpoints
        int32_t e = pick(rng);
        if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
      }
      p.tid2eid.insert(p.tid2eid.end(), row.begin(), row.end());
    }
  }
  return p;
}

struct Oracle {
  std::vector<double> y;
  std::vector<int32_t> ids;
  std::vector<double> weights;
  int64_t clamps_fired = 0;
};

// Independent double-precision MoE.
Oracle oracle(const Problem& p, const std::vector<float>& x, const std::vector<int32_t>& tokens, int64_t T) {
  const auto& d = p.dims;
  const int64_t D = d.hidden, I = d.intermediate, E = d.n_experts, k = d.top_k, Is = d.shared_intermediate;
  const double lim = d.swiglu_limit;
  Oracle o;
  o.y.assign(T * D, 0.0);
  auto expert = [&](const float* w1, const float* w3, const float* w2, int64_t width, const float* xt, double scale,
                    double* out) {
    std::vector<double> h(width);
    for (int64_t i = 0; i < width; ++i) {
      double g = 0, u = 0;
      for (int64_t c = 0; c < D; ++c) {
        g += double(w1[i * D + c]) * xt[c];
        u += double(w3[i * D + c]) * xt[c];
      }
      if (g > lim || u > lim || u < -lim) ++o.clamps_fired;
      g = g > lim ? lim : g;
      u = u > lim ? lim : (u < -lim ? -lim : u);
      h[i] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int64_t r = 0; r < D; ++r) {
      double acc = 0;
      for (int64_t i = 0; i < width; ++i) acc += double(w2[r * width + i]) * h[i];
      out[r] += scale * acc;
    }
  };
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.data() + t * D;
    std::vector<double> s(E);
    for (int64_t e = 0; e < E; ++e) {
      double g = 0;
      for (int64_t c = 0; c < D; ++c) g += double(p.gate[e * D + c]) * xt[c];
      s[e] = std::sqrt(std::log(1.0 + std::exp(g)));
    }
    std::vector<int32_t> chosen;
    if (!p.tid2eid.empty()) {
      for (int64_t j = 0; j < k; ++j) chosen.push_back(p.tid2eid[tokens[t] * k + j]);
    } else {
      std::vector<bool> taken(E, false);
      for (int64_t j = 0; j < k; ++j) {  // repeated argmax; strict '>' keeps the lowest index on ties
        int64_t best = -1;
        double best_v = -1e300;
        for (int64_t e = 0; e < E; ++e) {
          double v = s[e] + (p.bias.empty() ? 0.0 : p.bias[e]);
          if (!taken[e] && v > best_v) best = e, best_v = v;
        }
        taken[best] = true;
        chosen.push_back(int32_t(best));
      }
    }
    double sum = 0;
    for (int32_t e : chosen) sum += s[e];
    for (int32_t e : chosen) {
      const double w = s[e] / sum * d.routed_scaling_factor;
      o.ids.push_back(e);
      o.weights.push_back(w);
      expert(p.w1.data() + e * I * D, p.w3.data() + e * I * D, p.w2.data() + e * D * I, I, xt, w, o.y.data() + t * D);
    }
    if (Is > 0) expert(p.sw1.data(), p.sw3.data(), p.sw2.data(), Is, xt, 1.0, o.y.data() + t * D);
  }
  return o;
}

double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

void check_case(const Problem& p, int64_t T, uint32_t seed, float xscale, bool expect_clamp) {
  MEGAMOE_SEED_TRACE();
  std::mt19937 rng(::megamoe::testing::seeded(seed));
  std::vector<float> x = random_vector(rng, T * p.dims.hidden, xscale);
  std::vector<int32_t> tokens(T);
  if (p.vocab > 0) {
    std::uniform_int_distribution<int32_t> pick(0, int32_t(p.vocab) - 1);
    for (auto& t : tokens) t = pick(rng);
  }
  const Oracle want = oracle(p, x, tokens, T);
  const auto routing = megamoe::cpu::moe_route(p.view(), x, tokens, T);
  ASSERT_EQ(routing.experts, want.ids);
  // Measured (fp32 vs the double oracle, 4 cases x 33 seeds): weights 2.3e-7 relative (was 1e-5),
  // y 4.4e-7 relative L2 (was 2e-5).
  for (size_t i = 0; i < want.weights.size(); ++i) EXPECT_NEAR(routing.weights[i], want.weights[i], 7e-7 * want.weights[i]);
  std::vector<float> y(T * p.dims.hidden, NAN);
  megamoe::cpu::moe_forward(p.view(), x, tokens, T, y);
  EXPECT_LT(relative_error(y, want.y), 1.5e-6);
  if (expect_clamp) EXPECT_GT(want.clamps_fired, 0) << "the case meant to fire the clamp did not";
  else EXPECT_EQ(want.clamps_fired, 0);
}

TEST(MoeReference, LearnedRoutingWithBiasAndShared) {
  check_case(make_problem(1, 64, 32, 16, 4, 32, 0.2f, true, 0), 7, 11, 1.0f, false);
}

TEST(MoeReference, LearnedRoutingNoBiasNoShared) {
  check_case(make_problem(2, 48, 16, 8, 2, 0, 0.2f, false, 0), 5, 12, 1.0f, false);
}

TEST(MoeReference, HashRouting) { check_case(make_problem(3, 32, 16, 12, 3, 16, 0.2f, false, 50), 9, 13, 1.0f, false); }

TEST(MoeReference, ClampFires) {
  // Weights and inputs large enough that gate and up exceed the limit of 10.
  check_case(make_problem(4, 64, 16, 8, 2, 16, 1.0f, true, 0), 6, 14, 2.0f, true);
}

TEST(MoeReference, TieBreakPrefersLowerExpertIndex) {
  MEGAMOE_SEED_TRACE();
  Problem p = make_problem(5, 16, 8, 6, 2, 0, 0.2f, false, 0);
  // Experts 1, 3 and 4 share one router row: equal scores; 1 and 3 must win.
  for (int64_t c = 0; c < 16; ++c) {
    p.gate[3 * 16 + c] = p.gate[1 * 16 + c];
    p.gate[4 * 16 + c] = p.gate[1 * 16 + c];
  }
  std::vector<float> x(16, 0.0f);
  for (int64_t c = 0; c < 16; ++c) x[c] = p.gate[16 + c] * 40.0f;  // makes that row's logit the largest
  const auto r = megamoe::cpu::moe_route(p.view(), x, {}, 1);
  EXPECT_EQ(r.experts[0], 1);
  EXPECT_EQ(r.experts[1], 3);
}

TEST(MoeReference, LoadExpertCallbackMatchesArrays) {
  MEGAMOE_SEED_TRACE();
  const Problem p = make_problem(6, 32, 16, 8, 2, 16, 0.2f, true, 0);
  std::mt19937 rng(::megamoe::testing::seeded(16));
  const int64_t T = 4, D = 32, I = 16;
  std::vector<float> x = random_vector(rng, T * D, 1.0f);
  std::vector<float> a(T * D), b(T * D);
  megamoe::cpu::moe_forward(p.view(), x, {}, T, a);
  MoeWeights lazy = p.view();
  lazy.w1 = {};
  lazy.w3 = {};
  lazy.w2 = {};
  lazy.load_expert = [&](int64_t e, std::vector<float>& w1, std::vector<float>& w3, std::vector<float>& w2) {
    w1.assign(p.w1.begin() + e * I * D, p.w1.begin() + (e + 1) * I * D);
    w3.assign(p.w3.begin() + e * I * D, p.w3.begin() + (e + 1) * I * D);
    w2.assign(p.w2.begin() + e * D * I, p.w2.begin() + (e + 1) * D * I);
  };
  megamoe::cpu::moe_forward(lazy, x, {}, T, b);
  EXPECT_EQ(a, b);
}

TEST(MoeReference, BadInputsThrow) {
  MEGAMOE_SEED_TRACE();
  Problem p = make_problem(7, 16, 8, 6, 2, 0, 0.2f, false, 4);
  std::vector<float> x(16, 0.5f), y(16);
  p.tid2eid[3] = 6;  // token 1, slot 1 -> expert 6 of 6
  std::vector<int32_t> bad_token{1};
  EXPECT_THROW(megamoe::cpu::moe_forward(p.view(), x, bad_token, 1, y), megamoe::Error);
  std::vector<int32_t> out_of_vocab{4};
  EXPECT_THROW(megamoe::cpu::moe_forward(p.view(), x, out_of_vocab, 1, y), megamoe::Error);
  Problem q = make_problem(8, 16, 8, 6, 2, 0, 0.2f, false, 0);
  q.w2.pop_back();
  EXPECT_THROW(megamoe::cpu::moe_forward(q.view(), x, {}, 1, y), megamoe::Error);
}

// W4A4 (MoeOptions::activations_nvfp4): static per-expert scales equal to the
// dynamic ones (max|a| / 2688 of the same tensors) give the same result; the
// result differs from W4A16 by NVFP4 activation noise (a few percent, not 0);
// bad scale arrays throw.
TEST(MoeReference, W4a4StaticEqualsDynamicAndAddsQuantizationNoise) {
  MEGAMOE_SEED_TRACE();
  const Problem p = make_problem(9, 64, 32, 8, 2, 32, 0.2f, true, 0);
  std::mt19937 rng(::megamoe::testing::seeded(19));
  const int64_t T = 5, D = 64, I = 32, E = 8, k = 2;
  const std::vector<float> x = random_vector(rng, T * D, 1.0f);
  megamoe::cpu::MoeOptions w4a4;
  w4a4.activations_nvfp4 = true;
  std::vector<float> dynamic(T * D), fixed(T * D), w4a16(T * D);
  megamoe::cpu::moe_forward(p.view(), x, {}, T, dynamic, w4a4);
  megamoe::cpu::moe_forward(p.view(), x, {}, T, w4a16);

  // The dynamic scales, recomputed here: x's amax, and the unweighted h's amax over all routed rows.
  float x_amax = 0;
  for (float v : x) x_amax = std::max(x_amax, std::abs(v));
  const auto routing = megamoe::cpu::moe_route(p.view(), x, {}, T);
  std::vector<float> xq(x);
  {
    const megamoe::Nvfp4Tensor q = megamoe::quantize_nvfp4_activation(x.data(), T, D);
    megamoe::dequantize_nvfp4(q.packed.data(), q.block_scales.data(), q.global_scale, T, D, xq.data());
  }
  float h_amax = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = routing.experts[t * k + j];
      for (int64_t i = 0; i < I; ++i) {
        float g = 0, u = 0;
        for (int64_t c = 0; c < D; ++c)
          g += p.w1[(e * I + i) * D + c] * xq[t * D + c], u += p.w3[(e * I + i) * D + c] * xq[t * D + c];
        g = std::min(g, 10.0f), u = std::clamp(u, -10.0f, 10.0f);
        h_amax = std::max(h_amax, std::abs(g / (1 + std::exp(-g)) * u));  // unweighted: W4A4 weights after w2
      }
    }
  const std::vector<float> s13(E, x_amax / 2688.0f), s2(E, h_amax / 2688.0f);
  MoeWeights w = p.view();
  w.input_scale_w13 = s13, w.input_scale_w2 = s2;
  megamoe::cpu::moe_forward(w, x, {}, T, fixed, w4a4);
  std::vector<double> want(dynamic.begin(), dynamic.end());
  EXPECT_LT(relative_error(fixed, want), 1e-6);  // measured 0 (33 seeds); was 1e-5
  const double noise = relative_error(w4a16, want);
  // Measured 0.085 .. 0.164 over 33 seeds (0.147 at the default); the lower bound was 1e-3.
  EXPECT_GT(noise, 0.03);
  EXPECT_LT(noise, 0.2);

  MoeWeights lazy = w;  // the on-demand expert loader gives the same result
  lazy.w1 = {}, lazy.w3 = {}, lazy.w2 = {};
  lazy.load_expert = [&](int64_t e, std::vector<float>& w1, std::vector<float>& w3, std::vector<float>& w2) {
    w1.assign(p.w1.begin() + e * I * D, p.w1.begin() + (e + 1) * I * D);
    w3.assign(p.w3.begin() + e * I * D, p.w3.begin() + (e + 1) * I * D);
    w2.assign(p.w2.begin() + e * D * I, p.w2.begin() + (e + 1) * D * I);
  };
  std::vector<float> lazy_out(T * D);
  megamoe::cpu::moe_forward(lazy, x, {}, T, lazy_out, w4a4);
  EXPECT_EQ(lazy_out, fixed);

  const std::vector<float> short_scales(E - 1, 0.01f);
  w.input_scale_w2 = short_scales;
  EXPECT_THROW(megamoe::cpu::moe_forward(w, x, {}, T, fixed, w4a4), megamoe::Error);
}

TEST(MoeReference, Bf16Rounding) {
  using megamoe::cpu::round_to_bf16;
  EXPECT_EQ(round_to_bf16(1.0f + 1.0f / 256), 1.0f);                   // tie -> even (1.0)
  EXPECT_EQ(round_to_bf16(1.0f + 3.0f / 256), 1.0f + 4.0f / 256);      // tie -> even (1+2^-6)
  EXPECT_EQ(round_to_bf16(1.0f + 1.0f / 256 + 1.0f / 4096), 1.0f + 2.0f / 256);
  EXPECT_EQ(round_to_bf16(-3.0f), -3.0f);
  EXPECT_TRUE(std::isnan(round_to_bf16(NAN)));
}

TEST(MoeReference, SqrtSoftplusMatchesDouble) {
  for (float g : {-30.0f, -5.0f, -0.1f, 0.0f, 0.7f, 5.0f, 19.9f, 20.5f, 60.0f}) {
    const double want = std::sqrt(g > 20 ? double(g) : std::log1p(std::exp(double(g))));
    EXPECT_NEAR(megamoe::cpu::sqrt_softplus(g), want, 1e-6 * want + 1e-30) << g;
  }
}

}  // namespace
