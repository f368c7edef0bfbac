// GPU mHC kernels (kernels/mhc/sm90_mhc.cu) against the CPU oracle itself:
// dsv4::hc_mix + hc_collapse + cpu::rms_norm_rows (hc_pre), dsv4::hc_post and
// dsv4::hc_head, on random inputs drawn as dsv4-architecture.md §12 suggests
// (fn 2 N/sqrt(n_c D), base 0.3 N, scale 1 + 0.3 N, norm 1 + 0.2 N).
//
// Tolerances (per element, |gpu - cpu| <= tol * (|cpu| + rms(cpu))):
//  - hc_pre / hc_head: 1e-4. The only differences are the fp32 summation
//    order of the n_c D-term mixing dot products (the CPU runs 4 sequential
//    partial sums; at n_c D = 16384 its own rounding error is ~4e-6 absolute
//    on |mu| ~ 2) and 1-2 ulp expf differences; sigmoid damps them, the
//    softmax/Sinkhorn passes them on as ~1e-5 relative. A wrong index, a
//    transposed comb or a missing eps gives errors of 1e-3..1.
//  - hc_post, fed the CPU's own mix: 1e-6 (the kernel does the CPU's
//    products and sums in the CPU's order with _rn intrinsics; only an FMA
//    contraction on the host side could differ).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <span>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "gpu_test.hpp"
#include "kernels/mhc/mhc_params.hpp"
#include "backend/cpu/dsv4/hyper_connection.hpp"

namespace {

using megamoe::Tensor;
using megamoe::cuda::DeviceBuffer;
using megamoe::cuda::Stream;
namespace kern = megamoe::cuda::kernels;
namespace dsv4 = megamoe::dsv4;

using megamoe::testing::from_device;
using megamoe::testing::to_device;

using megamoe::testing::normal;

Tensor tensor_of(const std::vector<float>& v, megamoe::Shape shape) {
  Tensor t = Tensor::zeros_f32(std::move(shape));
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

// Largest |gpu - cpu| / (|cpu| + rms(cpu)); the test asserts it is <= tol.
double max_scaled_error(const std::vector<float>& gpu, const std::vector<float>& cpu) {
  double ss = 0.0;
  for (float v : cpu) ss += static_cast<double>(v) * v;
  const double rms = std::sqrt(ss / std::max<size_t>(cpu.size(), 1));
  double worst = 0.0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double err = std::fabs(static_cast<double>(gpu[i]) - cpu[i]);
    if (!std::isfinite(gpu[i])) return INFINITY;
    worst = std::max(worst, err / (std::fabs(static_cast<double>(cpu[i])) + rms + 1e-30));
  }
  return worst;
}

struct HcCase {
  int tokens, streams, hidden, iters;
  uint64_t seed = 1;
};

struct HcInputs {
  std::vector<float> x, fn, base, scale, norm;
  dsv4::HyperConnectionWeights w;
  dsv4::HcParams p;
};

HcInputs make_inputs(const HcCase& c, int fn_rows, int scale_n) {
  std::mt19937_64 rng(c.seed);
  HcInputs in;
  const int n = c.streams * c.hidden;
  in.x = normal(static_cast<size_t>(c.tokens) * n, rng, 0.0f, 1.0f);
  in.fn = normal(static_cast<size_t>(fn_rows) * n, rng, 0.0f, 2.0f / std::sqrt(static_cast<float>(n)));
  in.base = normal(fn_rows, rng, 0.0f, 0.3f);
  in.scale = normal(scale_n, rng, 1.0f, 0.3f);
  in.norm = normal(c.hidden, rng, 1.0f, 0.2f);
  in.w.fn = tensor_of(in.fn, {fn_rows, n});
  in.w.base = tensor_of(in.base, {fn_rows});
  in.w.scale = tensor_of(in.scale, {scale_n});
  in.p = dsv4::HcParams{c.streams, c.hidden, c.iters, 1e-6f, 1e-6f};
  return in;
}

void run_hc_pre(const HcCase& c, bool split) {
  SCOPED_TRACE(testing::Message() << "hc_pre T=" << c.tokens << " n_c=" << c.streams << " D=" << c.hidden
                                  << " iters=" << c.iters << (split ? " split" : ""));
  const int nc = c.streams, D = c.hidden, n = nc * D, M = (2 + nc) * nc;
  const HcInputs in = make_inputs(c, M, 3);

  // CPU: the model's hc_pre (hc_mix + hc_collapse per token, then the weighted RMSNorm).
  std::vector<float> mix_cpu(static_cast<size_t>(c.tokens) * M), u_cpu(static_cast<size_t>(c.tokens) * D);
  for (int t = 0; t < c.tokens; ++t) {
    const float* xt = in.x.data() + static_cast<size_t>(t) * n;
    const dsv4::HcMix mix = dsv4::hc_mix(xt, in.w, in.p);
    dsv4::hc_collapse(xt, mix.pre, in.p, u_cpu.data() + static_cast<size_t>(t) * D);
    float* m = mix_cpu.data() + static_cast<size_t>(t) * M;
    std::copy(mix.pre.begin(), mix.pre.end(), m);
    std::copy(mix.post.begin(), mix.post.end(), m + nc);
    std::copy(mix.comb.begin(), mix.comb.end(), m + 2 * nc);
  }
  megamoe::cpu::rms_norm_rows(u_cpu, D, in.norm, 1e-6f);

  Stream s;
  DeviceBuffer x = to_device(in.x), fn = to_device(in.fn), base = to_device(in.base), scale = to_device(in.scale),
               norm = to_device(in.norm);
  DeviceBuffer u(u_cpu.size() * 4), mix(mix_cpu.size() * 4);
  kern::HcPreParams p;
  p.tokens = c.tokens;
  p.streams = nc;
  p.hidden = D;
  p.sinkhorn_iters = c.iters;
  p.x = x.as<float>();
  p.fn = fn.as<float>();
  p.base = base.as<float>();
  p.scale = scale.as<float>();
  p.norm = norm.as<float>();
  p.u = u.as<float>();
  p.mix = mix.as<float>();
  DeviceBuffer scratch;
  if (split) {
    p.splits = kern::hc_mix_splits(c.tokens);
    EXPECT_GT(p.splits, 1);
    scratch = DeviceBuffer(static_cast<size_t>(c.tokens) * p.splits * M * 4);
    p.split = scratch.as<float>();
  }
  kern::launch_hc_pre(p, s.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> mix_gpu = from_device<float>(mix, mix_cpu.size(), s);
  const std::vector<float> u_gpu = from_device<float>(u, u_cpu.size(), s);

  const double e_mix = max_scaled_error(mix_gpu, mix_cpu), e_u = max_scaled_error(u_gpu, u_cpu);
  std::printf("  hc_pre T=%d n_c=%d D=%d iters=%d: mix err %.2e, u err %.2e\n", c.tokens, nc, D, c.iters, e_mix, e_u);
  EXPECT_LE(e_mix, 1e-4);
  EXPECT_LE(e_u, 1e-4);
  // Every comb is doubly stochastic up to the eps terms (a sanity check that
  // does not depend on the oracle).
  for (int t = 0; t < c.tokens; ++t) {
    const float* comb = mix_gpu.data() + static_cast<size_t>(t) * M + 2 * nc;
    for (int k = 0; k < nc; ++k) {
      float col = 0.0f;
      for (int j = 0; j < nc; ++j) col += comb[j * nc + k];
      EXPECT_NEAR(col, 1.0f, 1e-3f) << "token " << t << " column " << k;
    }
  }
}

void run_hc_post(const HcCase& c) {
  SCOPED_TRACE(testing::Message() << "hc_post T=" << c.tokens << " n_c=" << c.streams << " D=" << c.hidden);
  const int nc = c.streams, D = c.hidden, n = nc * D, M = (2 + nc) * nc;
  const HcInputs in = make_inputs(c, M, 3);
  std::mt19937_64 rng(c.seed + 99);
  const std::vector<float> y = normal(static_cast<size_t>(c.tokens) * D, rng, 0.0f, 1.0f);

  // The CPU mix feeds both sides, so hc_post is compared on its own.
  std::vector<float> mix_flat(static_cast<size_t>(c.tokens) * M), x_cpu(in.x.size());
  for (int t = 0; t < c.tokens; ++t) {
    const float* xt = in.x.data() + static_cast<size_t>(t) * n;
    const dsv4::HcMix mix = dsv4::hc_mix(xt, in.w, in.p);
    float* m = mix_flat.data() + static_cast<size_t>(t) * M;
    std::copy(mix.pre.begin(), mix.pre.end(), m);
    std::copy(mix.post.begin(), mix.post.end(), m + nc);
    std::copy(mix.comb.begin(), mix.comb.end(), m + 2 * nc);
    dsv4::hc_post(xt, y.data() + static_cast<size_t>(t) * D, mix, in.p, x_cpu.data() + static_cast<size_t>(t) * n);
  }

  Stream s;
  DeviceBuffer x = to_device(in.x), yb = to_device(y), mix = to_device(mix_flat);
  kern::HcPostParams p;
  p.tokens = c.tokens;
  p.streams = nc;
  p.hidden = D;
  p.x = x.as<float>();
  p.y = yb.as<float>();
  p.mix = mix.as<float>();
  kern::launch_hc_post(p, s.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> x_gpu = from_device<float>(x, x_cpu.size(), s);
  const double e = max_scaled_error(x_gpu, x_cpu);
  std::printf("  hc_post T=%d n_c=%d D=%d: err %.2e\n", c.tokens, nc, D, e);
  EXPECT_LE(e, 1e-6);
}

void run_hc_head(const HcCase& c, int first, bool split) {
  SCOPED_TRACE(testing::Message() << "hc_head T=" << c.tokens << " first=" << first << " n_c=" << c.streams
                                  << " D=" << c.hidden << (split ? " split" : ""));
  const int nc = c.streams, D = c.hidden, n = nc * D;
  const HcInputs in = make_inputs(c, nc, 1);
  const int rows = c.tokens - first;
  std::vector<float> h_cpu(static_cast<size_t>(rows) * D);
  for (int t = first; t < c.tokens; ++t)
    dsv4::hc_head(in.x.data() + static_cast<size_t>(t) * n, in.w, in.p, h_cpu.data() + static_cast<size_t>(t - first) * D);

  Stream s;
  DeviceBuffer x = to_device(in.x), fn = to_device(in.fn), base = to_device(in.base), scale = to_device(in.scale);
  DeviceBuffer h(h_cpu.size() * 4);
  kern::HcHeadParams p;
  p.tokens = rows;
  p.streams = nc;
  p.hidden = D;
  p.first = first;
  p.x = x.as<float>();
  p.fn = fn.as<float>();
  p.base = base.as<float>();
  p.scale = scale.as<float>();
  p.h = h.as<float>();
  DeviceBuffer scratch;
  if (split) {
    p.splits = kern::hc_mix_splits(rows);
    scratch = DeviceBuffer(static_cast<size_t>(rows) * p.splits * nc * 4);
    p.split = scratch.as<float>();
  }
  kern::launch_hc_head(p, s.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> h_gpu = from_device<float>(h, h_cpu.size(), s);
  const double e = max_scaled_error(h_gpu, h_cpu);
  std::printf("  hc_head rows=%d first=%d n_c=%d D=%d: err %.2e\n", rows, first, nc, D, e);
  EXPECT_LE(e, 1e-4);
}

// Tiny checkpoint shapes (D 32/48/64, n_c 3/4), the generic n_c path (1, 5),
// the other compiled-in n_c (2, 8), a width that is not a multiple of 4
// (scalar loads), and DeepSeek-V4-Flash (D 4096, n_c 4, 20 Sinkhorn iterations).
const HcCase kCases[] = {
    {5, 4, 64, 20, 1}, {7, 3, 48, 20, 2}, {3, 4, 32, 20, 3}, {4, 3, 33, 20, 4}, {3, 2, 64, 20, 5},
    {2, 8, 64, 20, 6}, {3, 5, 40, 7, 7},  {2, 1, 32, 20, 8}, {3, 4, 64, 1, 9},  {1, 4, 4096, 20, 10},
    {6, 4, 4096, 20, 11},
};

TEST(GpuMhc, PreMatchesHcMixCollapseAndNorm) {
  MEGAMOE_REQUIRE_GPU();
  for (const HcCase& c : kCases) run_hc_pre(c, false), run_hc_pre(c, true);  // one block per token / split mixing
}

TEST(GpuMhc, PostMatchesCpuInPlace) {
  MEGAMOE_REQUIRE_GPU();
  for (const HcCase& c : kCases) run_hc_post(c);
}

TEST(GpuMhc, HeadMatchesCpuFromFirstRow) {
  MEGAMOE_REQUIRE_GPU();
  for (const HcCase& c : kCases) {
    for (const bool split : {false, true}) {
      run_hc_head(c, 0, split);
      if (c.tokens > 1) run_hc_head(c, c.tokens - 1, split);  // last-logits-only head
    }
  }
}

}  // namespace
