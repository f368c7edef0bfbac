// The CPU W4A4 MoE (cpu::moe_forward with MoeOptions::activations_nvfp4 and
// static input scales) against the independent golden of
// tools/make_w4a4_goldens.py: ModelOpt's NVFP4 quantizers in the op order of
// the Blackwell deployments (x and the UNWEIGHTED SwiGLU output h quantized,
// the routing weight applied to w2's output; docs/w4a4-routing-order.md).
//
// Where the two compute in a different order an element of h can sit on an
// FP4 rounding boundary and take the neighbouring code: a flip moves a whole
// token row by ~1e-2 of max|y|, so the bounds are a tight bound on most
// elements plus a bound on how many may exceed it (measured values below).
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "backend/cpu/moe.hpp"
#include "w4a4_golden.hpp"

namespace {

using megamoe::testing::golden_error;
using megamoe::testing::load_w4a4_golden;
using megamoe::testing::W4a4Golden;

// y of the CPU W4A4 path with the golden's routing; shared_only: every
// routing weight 0, which leaves the shared expert's part.
std::vector<float> cpu_w4a4(const W4a4Golden& g, bool round_hidden_bf16, bool shared_only = false) {
  megamoe::cpu::MoeOptions opt;
  opt.activations_nvfp4 = true;
  opt.round_hidden_bf16 = round_hidden_bf16;
  megamoe::cpu::Routing r{g.T, g.k, g.topk_ids, g.topk_weights};
  if (shared_only) r.weights.assign(r.weights.size(), 0.0f);
  std::vector<float> y(g.T * g.D);
  megamoe::cpu::moe_forward_routed(g.cpu_weights(), g.x, r, y, opt);
  return y;
}

std::vector<float> minus(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
  return a;
}

TEST(W4a4Golden, RoutingMatches) {
  const W4a4Golden g = load_w4a4_golden();
  const megamoe::cpu::Routing r = megamoe::cpu::moe_route(g.cpu_weights(), g.x, {}, g.T);
  EXPECT_EQ(r.experts, g.topk_ids);
  for (size_t i = 0; i < r.weights.size(); ++i)
    EXPECT_NEAR(r.weights[i], g.topk_weights[i], 1e-6 * g.topk_weights[i]) << "pair " << i;
}

// Measured (golden of 2026-12-02, error in units of max|y|):
//   routed experts alone, fp32 h     max 2.6e-7, no element over 1e-5 (no FP4 code differs)
//   shared expert alone              max 1.5e-7
//   whole layer, h -> bf16 first     max 2.4e-3; 31% of elements over 1e-5, 4.3% over 1e-3
//     (the GPU's rounding point: h is rounded to bf16 before its quantizer, so a few h
//     elements take the neighbouring FP4 code; each flip shifts its token's whole row)
//   the other order (weight before quantizing h): max 5.3e-2, 99% over 1e-5.
TEST(W4a4Golden, CpuMatchesGolden) {
  const W4a4Golden g = load_w4a4_golden();
  // Routed experts alone with fp32 h, as the golden: only summation order differs.
  const std::vector<float> routed = minus(cpu_w4a4(g, false), cpu_w4a4(g, false, true));
  const auto r = golden_error(routed, minus(g.y, g.y_shared), 1e-5);
  EXPECT_LT(r.max_rel, 1e-6);
  EXPECT_EQ(r.frac_over, 0.0);
  // The same routed part against the other order's golden: far outside that bound.
  EXPECT_GT(golden_error(routed, minus(g.y_weight_before_quant, g.y_shared), 1e-5).max_rel, 1e-2);

  // Shared expert alone (h rounded to bf16 like the golden's).
  EXPECT_LT(golden_error(cpu_w4a4(g, true, true), g.y_shared, 1e-5).max_rel, 5e-7);

  // The whole layer with the GPU's roundings (the GPU test holds the CUDA op to the same bounds).
  const auto w = golden_error(cpu_w4a4(g, true), g.y, 1e-3);
  EXPECT_LT(w.max_rel, 6e-3);
  EXPECT_LT(w.frac_over, 0.12);
}

}  // namespace
