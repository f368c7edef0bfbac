// GPU linear layer (kernels/gemm/sm90_linear.cu through launch_linear,
// contract kernels/gemm/linear_params.hpp) against the CPU oracle:
// cpu::linear (src/backend/cpu/ops.hpp) on the fp32 weight produced by the
// loader's cpu::dequantize_weight (src/backend/cpu/load.hpp) from the very
// bytes the device reads; the grouped layout runs cpu::linear once per group
// on that group's x columns and W rows (attention.cpp's grouped loop).
// Weights: fp32, bf16, and FP8 block-128 (random E4M3 codes, NaN 0x7F/0xFF
// excluded) with E8M0 and with fp32 tile scales. Shapes: tiny (N, K in
// {16, 24, 40, 48, 64}), odd (N = 129, K = 200 and a few more), strided and
// misaligned x / y / W (the kernels' element-wise fallbacks), groups, and the
// DeepSeek-V4-Flash widths (q_b 32768x1024 at T = 1, 4, 33; o_a 8 x [1024,
// 4096] at T = 2, 17; kv, shared expert, a bf16 4096x4096). T covers both
// kernels: 1, 3, 16 (one GEMV pass), 17, 64, 200 (GEMV passes / tiled).
// Every case runs on both kernels, forced through kernels/gemm/sm90_linear.hpp
// (the GEMV runs T > 16 as passes of 16 tokens, the tiled kernel any T), and
// on the launcher's own choice, which must equal the forced run of the kernel
// it picks bit for bit.
//
// Tolerance. Both sides compute each output as an fp32 sum of fp32 products
// of the same numbers (the GPU's FP8 dequantization is exact, see the kernel
// header); only the summation order differs (CPU: 4 strided partial sums, no
// FMA; GPU: per-lane FMA chains + a shuffle tree, or one FMA chain over K).
// Every rounding error is at most u = 2^-24 times a partial sum, and every
// partial sum is at most mag = sum_k |x_k||w_k|, so per output
//   |y_gpu - y_cpu| <= 1e-5 * mag   (~170 u * mag)
// The worst-case bound (~K u mag) is not attainable with random signs: the
// errors add like a random walk. A host emulation of both kernels' orders
// (sequential FMA over K; per-lane FMA chains + xor-shuffle tree + warp sum)
// against cpu::dot on this test's data (2000 rows, K = 24 .. 8192) gave
// max |diff| / mag <= 6.8e-7 (heavy-tailed FP8 weights; 1.8e-7 fp32) and
// per-row relative L2 <= 1.3e-6 at K = 4096 (1.8e-6 at 8192), so both 1e-5
// limits leave a margin of >= 5x, while one dropped or doubled product, a
// wrong tile scale or a wrong row moves an output by ~mag / K >= 1.2e-4 * mag
// (K <= 8192). Output padding (columns out .. ldy) must keep its sentinel
// bits; x padding is NaN so a read past a row's columns shows up.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/load.hpp"
#include "backend/cpu/ops.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "core/block_quant.hpp"
#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/float_formats.hpp"
#include "core/safetensors.hpp"
#include "core/tensor.hpp"
#include "gpu_test.hpp"
#include "kernels/gemm/linear_params.hpp"
#include "kernels/gemm/sm90_linear.hpp"

namespace {

using megamoe::DType;
using megamoe::Tensor;
using megamoe::cuda::DeviceBuffer;
using megamoe::cuda::Stream;
namespace kern = megamoe::cuda::kernels;

constexpr double kElemTol = 1e-5;                // |err| <= kElemTol * sum_k |x||w| (see the header)
constexpr double kRelL2Tol = 1e-5;               // per token row
constexpr uint32_t kSentinelBits = 0x7FBADBADu;  // a NaN: y padding must keep it

enum class Fmt { kF32, kBf16, kFp8E8m0, kFp8F32 };
constexpr Fmt kAllFormats[] = {Fmt::kF32, Fmt::kBf16, Fmt::kFp8E8m0, Fmt::kFp8F32};

const char* fmt_name(Fmt f) {
  switch (f) {
    case Fmt::kF32:
      return "f32";
    case Fmt::kBf16:
      return "bf16";
    case Fmt::kFp8E8m0:
      return "fp8/e8m0";
    case Fmt::kFp8F32:
      return "fp8/f32";
  }
  return "?";
}

// splitmix64: each value a function of (seed, index), cheap for 32M elements.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t hash2(uint64_t seed, uint64_t i) { return mix(seed * 0x2545F4914F6CDD1Dull + i); }
float uniform01(uint64_t h) { return static_cast<float>(h >> 40) * 0x1p-24f; }  // [0, 1)
float uniform_pm1(uint64_t h) { return 2.0f * uniform01(h) - 1.0f; }            // [-1, 1)

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// A weight as stored (the bytes the device gets) and as the CPU oracle sees it.
struct HostWeight {
  Fmt fmt = Fmt::kF32;
  int64_t out = 0, in = 0;
  std::vector<uint8_t> values;  // [out, in] in the stored dtype
  std::vector<uint8_t> scales;  // FP8: [ceil(out/128), ceil(in/128)] E8M0 bytes or fp32
  Tensor dequant;               // [out, in] fp32, cpu::dequantize_weight
};

HostWeight make_weight(Fmt fmt, int64_t out, int64_t in, uint64_t seed) {
  HostWeight w;
  w.fmt = fmt;
  w.out = out;
  w.in = in;
  const size_t n = static_cast<size_t>(out * in);
  megamoe::TensorView wv, sv;
  wv.name = "test.weight";
  wv.shape = {out, in};
  megamoe::WeightRef ref;
  ref.name = "test";
  ref.out = out;
  ref.in = in;
  ref.weight = &wv;
  switch (fmt) {
    case Fmt::kF32:
      w.values.resize(4 * n);
      for (size_t i = 0; i < n; ++i) {
        const float v = 0.5f * uniform_pm1(hash2(seed, i));
        std::memcpy(w.values.data() + 4 * i, &v, 4);
      }
      wv.dtype = DType::F32;
      ref.format = megamoe::WeightFormat::kDense;
      break;
    case Fmt::kBf16:
      w.values.resize(2 * n);
      for (size_t i = 0; i < n; ++i) {
        const uint16_t b = megamoe::f32_to_bf16(0.5f * uniform_pm1(hash2(seed, i)));
        std::memcpy(w.values.data() + 2 * i, &b, 2);
      }
      wv.dtype = DType::BF16;
      ref.format = megamoe::WeightFormat::kDense;
      break;
    case Fmt::kFp8E8m0:
    case Fmt::kFp8F32: {
      w.values.resize(n);
      for (size_t i = 0; i < n; ++i) {
        uint64_t h = hash2(seed, i);
        uint8_t b = static_cast<uint8_t>(h);
        while ((b & 0x7F) == 0x7F) b = static_cast<uint8_t>(h >>= 8);  // no NaN codes
        w.values[i] = b;
      }
      const int64_t tr = (out + 127) / 128, tc = (in + 127) / 128;
      const bool e8m0 = fmt == Fmt::kFp8E8m0;
      w.scales.resize(static_cast<size_t>(tr * tc) * (e8m0 ? 1 : 4));
      for (int64_t i = 0; i < tr * tc; ++i) {
        const uint64_t h = hash2(seed ^ 0x5CA1Eull, static_cast<uint64_t>(i));
        if (e8m0) {
          w.scales[static_cast<size_t>(i)] = static_cast<uint8_t>(115 + h % 16);  // 2^-12 .. 2^3
        } else {
          const float s = std::ldexp(1.0f + uniform01(h), static_cast<int>((h >> 8) % 15) - 12);  // [2^-12, 2^3)
          std::memcpy(w.scales.data() + 4 * i, &s, 4);
        }
      }
      wv.dtype = DType::F8_E4M3;
      sv.name = "test.weight_scale_inv";
      sv.dtype = e8m0 ? DType::F8_E8M0 : DType::F32;
      sv.shape = {tr, tc};
      sv.data = reinterpret_cast<const std::byte*>(w.scales.data());
      sv.nbytes = w.scales.size();
      ref.format = megamoe::WeightFormat::kFp8Block;
      ref.scale = &sv;
      break;
    }
  }
  wv.data = reinterpret_cast<const std::byte*>(w.values.data());
  wv.nbytes = w.values.size();
  w.dequant = megamoe::cpu::dequantize_weight(ref);
  return w;
}

kern::LinearFormat device_format(Fmt f) {
  switch (f) {
    case Fmt::kF32:
      return kern::LinearFormat::kF32;
    case Fmt::kBf16:
      return kern::LinearFormat::kBf16;
    default:
      return kern::LinearFormat::kFp8Block128;
  }
}

// How the operands sit in memory.
struct Layout {
  int groups = 1;
  int64_t ldx_pad = 0;  // x row stride = groups * in + ldx_pad
  int64_t ldy_pad = 0;  // y row stride = out + ldy_pad
  size_t w_offset = 0;  // bytes: W starts this far into its allocation (misalignment)
  size_t x_offset = 0;  // floats: x starts this far into its allocation
};

std::string describe(const HostWeight& w, int tokens, const Layout& l) {
  return megamoe::str_cat(fmt_name(w.fmt), " out=", w.out, " in=", w.in, " G=", l.groups, " T=", tokens, " ldx+",
                          l.ldx_pad, " ldy+", l.ldy_pad, " w_off=", l.w_offset, " x_off=", l.x_offset);
}

// ref = cpu::linear per group; mag = the same on |x| and |W| (error scale).
void cpu_reference(const HostWeight& w, const std::vector<float>& x, int tokens, int groups, std::vector<float>& ref,
                   std::vector<float>& mag) {
  const int64_t n_g = w.out / groups, k = w.in, T = tokens;
  ref.assign(static_cast<size_t>(T * w.out), 0.0f);
  mag.assign(ref.size(), 0.0f);
  const float* wd = w.dequant.data<float>();
  for (int g = 0; g < groups; ++g) {
    std::vector<float> xg(static_cast<size_t>(T * k)), xa(xg.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < k; ++c) {
        const float v = x[static_cast<size_t>(t * groups * k + g * k + c)];
        xg[static_cast<size_t>(t * k + c)] = v;
        xa[static_cast<size_t>(t * k + c)] = std::fabs(v);
      }
    Tensor wg(DType::F32, {n_g, k}), wa(DType::F32, {n_g, k});
    float* pg = wg.data<float>();
    float* pa = wa.data<float>();
    for (int64_t i = 0; i < n_g * k; ++i) {
      pg[i] = wd[g * n_g * k + i];
      pa[i] = std::fabs(pg[i]);
    }
    std::vector<float> yg(static_cast<size_t>(T * n_g)), ya(yg.size());
    megamoe::cpu::linear(xg, T, wg, yg);
    megamoe::cpu::linear(xa, T, wa, ya);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < n_g; ++n) {
        ref[static_cast<size_t>(t * w.out + g * n_g + n)] = yg[static_cast<size_t>(t * n_g + n)];
        mag[static_cast<size_t>(t * w.out + g * n_g + n)] = ya[static_cast<size_t>(t * n_g + n)];
      }
  }
}

// Random x [T, groups*in] (rows scaled by 2^-3 .. 2^3), laid out with stride ldx, NaN padding.
std::vector<float> make_x(int tokens, int64_t cols, int64_t ldx, uint64_t seed, std::vector<float>& logical) {
  logical.assign(static_cast<size_t>(tokens * cols), 0.0f);
  std::vector<float> padded(static_cast<size_t>(tokens * ldx), std::nanf(""));
  for (int t = 0; t < tokens; ++t) {
    const float row_scale = std::ldexp(1.0f, static_cast<int>(hash2(seed, 1u << 30 | t) % 7) - 3);
    for (int64_t c = 0; c < cols; ++c) {
      const float v = row_scale * uniform_pm1(hash2(seed, static_cast<uint64_t>(t * cols + c)));
      logical[static_cast<size_t>(t * cols + c)] = v;
      padded[static_cast<size_t>(t * ldx + c)] = v;
    }
  }
  return padded;
}

// Runs launch_linear once on `path`; returns y [T, ldy] as downloaded
// (padding included) and, in *auto_path, what kAuto would run.
std::vector<float> run_gpu(const HostWeight& w, const std::vector<float>& x_padded, int tokens, const Layout& l,
                           int64_t ldx, int64_t ldy, kern::LinearPath path, kern::LinearPath* auto_path = nullptr) {
  Stream stream;
  std::vector<uint8_t> w_host(l.w_offset + w.values.size(), 0);
  std::memcpy(w_host.data() + l.w_offset, w.values.data(), w.values.size());
  DeviceBuffer w_dev(w_host.size());
  if (!w_host.empty()) w_dev.upload(w_host.data(), w_host.size(), stream.get());
  DeviceBuffer s_dev(w.scales.size());
  if (!w.scales.empty()) s_dev.upload(w.scales.data(), w.scales.size(), stream.get());
  std::vector<float> x_host(l.x_offset + x_padded.size(), std::nanf(""));
  std::copy(x_padded.begin(), x_padded.end(), x_host.begin() + static_cast<std::ptrdiff_t>(l.x_offset));
  DeviceBuffer x_dev(x_host.size() * sizeof(float));
  if (!x_host.empty()) x_dev.upload(x_host.data(), x_host.size() * sizeof(float), stream.get());
  std::vector<float> y(static_cast<size_t>(tokens * ldy));
  const float sentinel = [] {
    float f;
    std::memcpy(&f, &kSentinelBits, 4);
    return f;
  }();
  std::fill(y.begin(), y.end(), sentinel);
  DeviceBuffer y_dev(y.size() * sizeof(float));
  if (!y.empty()) y_dev.upload(y.data(), y.size() * sizeof(float), stream.get());

  kern::LinearParams p;
  p.tokens = tokens;
  p.groups = l.groups;
  p.weight.format = device_format(w.fmt);
  p.weight.out = static_cast<int>(w.out);
  p.weight.in = static_cast<int>(w.in);
  p.weight.w = static_cast<const uint8_t*>(w_dev.get()) + l.w_offset;
  p.weight.scale = w.scales.empty() ? nullptr : s_dev.get();
  p.weight.scale_e8m0 = w.fmt == Fmt::kFp8E8m0;
  p.x = x_dev.as<float>() + (x_host.empty() ? 0 : l.x_offset);
  p.ldx = static_cast<int>(ldx);
  p.y = y_dev.as<float>();
  p.ldy = static_cast<int>(ldy);
  if (auto_path != nullptr) *auto_path = kern::linear_auto_path(p);
  if (path == kern::LinearPath::kAuto) {
    kern::launch_linear(p, stream.get());  // the contract's entry point
  } else {
    kern::launch_linear(p, path, stream.get());
  }
  MEGAMOE_CUDA_CHECK_LAUNCH(stream.get());
  stream.synchronize();
  if (!y.empty()) y_dev.download(y.data(), y.size() * sizeof(float), stream.get());
  return y;
}

// The comparison of the header: per output, per token row, and the padding.
void expect_matches(const std::vector<float>& y, int64_t ldy, const std::vector<float>& ref,
                    const std::vector<float>& mag, int tokens, int64_t out, const std::string& what) {
  int64_t bad = 0, bad_pad = 0;
  for (int t = 0; t < tokens; ++t) {
    double num = 0.0, den = 0.0;
    for (int64_t n = 0; n < out; ++n) {
      const double got = y[static_cast<size_t>(t * ldy + n)];
      const double want = ref[static_cast<size_t>(t * out + n)];
      const double scale = mag[static_cast<size_t>(t * out + n)];
      const double err = std::fabs(got - want);
      if (!std::isfinite(got) || !(err <= kElemTol * scale + 1e-30)) {
        if (bad < 5)
          ADD_FAILURE() << what << ": y[" << t << ", " << n << "] = " << got << ", cpu " << want << ", |err| " << err
                        << " > " << kElemTol << " * " << scale;
        ++bad;
      }
      num += (got - want) * (got - want);
      den += want * want;
    }
    if (den > 0.0 && std::isfinite(num)) {
      const double rel = std::sqrt(num / den);
      EXPECT_LE(rel, kRelL2Tol) << what << ": relative L2 error of token row " << t;
    }
    for (int64_t n = out; n < ldy; ++n)
      if (bits_of(y[static_cast<size_t>(t * ldy + n)]) != kSentinelBits) ++bad_pad;
  }
  EXPECT_EQ(bad, 0) << what << ": outputs off";
  EXPECT_EQ(bad_pad, 0) << what << ": padding columns of y were written";
}

void check_linear(const HostWeight& w, int tokens, const Layout& l, uint64_t seed) {
  const std::string what = describe(w, tokens, l);
  SCOPED_TRACE(what);
  ASSERT_EQ(w.out % l.groups, 0);
  const int64_t cols = l.groups * w.in, ldx = cols + l.ldx_pad, ldy = w.out + l.ldy_pad;
  std::vector<float> x;
  const std::vector<float> x_padded = make_x(tokens, cols, ldx, seed, x);
  std::vector<float> ref, mag;
  cpu_reference(w, x, tokens, l.groups, ref, mag);
  kern::LinearPath chosen = kern::LinearPath::kAuto;
  const std::vector<float> y_gemv = run_gpu(w, x_padded, tokens, l, ldx, ldy, kern::LinearPath::kGemv, &chosen);
  expect_matches(y_gemv, ldy, ref, mag, tokens, w.out, what + " [gemv]");
  const std::vector<float> y_tiled = run_gpu(w, x_padded, tokens, l, ldx, ldy, kern::LinearPath::kTiled);
  expect_matches(y_tiled, ldy, ref, mag, tokens, w.out, what + " [tiled]");
  ASSERT_TRUE(chosen == kern::LinearPath::kGemv || chosen == kern::LinearPath::kTiled);
  const std::vector<float> y_auto = run_gpu(w, x_padded, tokens, l, ldx, ldy, kern::LinearPath::kAuto);
  const std::vector<float>& y_same = chosen == kern::LinearPath::kGemv ? y_gemv : y_tiled;
  size_t diff = 0;
  for (size_t i = 0; i < y_auto.size(); ++i) diff += bits_of(y_auto[i]) != bits_of(y_same[i]);
  EXPECT_EQ(diff, 0u) << what << ": launch_linear differs from the forced "
                      << (chosen == kern::LinearPath::kGemv ? "gemv" : "tiled") << " run";
}

constexpr int kTokenCounts[] = {1, 3, 16, 17, 64, 200};

TEST(Sm90Linear, TinyShapesEveryFormat) {
  MEGAMOE_REQUIRE_GPU();
  const int sizes[] = {16, 24, 40, 48, 64};
  uint64_t seed = 1;
  for (Fmt fmt : kAllFormats)
    for (int n : sizes)
      for (int k : sizes) {
        const HostWeight w = make_weight(fmt, n, k, ++seed);
        for (int t : kTokenCounts) check_linear(w, t, Layout{}, ++seed);
      }
}

TEST(Sm90Linear, OddSizes) {
  MEGAMOE_REQUIRE_GPU();
  struct Shape {
    int n, k;
  };
  // 129 x 200: partial FP8 tiles in both directions; 1 x 1 and 3 x 7: degenerate;
  // 257 x 385: three tile rows/columns, K not a multiple of 4 neither.
  const Shape shapes[] = {{129, 200}, {1, 1}, {3, 7}, {257, 385}, {130, 516}};
  uint64_t seed = 100;
  for (Fmt fmt : kAllFormats)
    for (const Shape& s : shapes) {
      const HostWeight w = make_weight(fmt, s.n, s.k, ++seed);
      for (int t : kTokenCounts) check_linear(w, t, Layout{}, ++seed);
    }
}

TEST(Sm90Linear, StridedInputAndOutput) {
  MEGAMOE_REQUIRE_GPU();
  struct Shape {
    int n, k;
  };
  const Shape shapes[] = {{64, 256}, {129, 200}};
  uint64_t seed = 200;
  for (Fmt fmt : kAllFormats)
    for (const Shape& s : shapes) {
      const HostWeight w = make_weight(fmt, s.n, s.k, ++seed);
      for (int t : {1, 3, 16, 17, 64}) {
        Layout aligned;  // ldx a multiple of 4: the vector paths
        aligned.ldx_pad = 8;
        aligned.ldy_pad = 5;
        check_linear(w, t, aligned, ++seed);
        Layout odd;  // ldx odd: x element-wise
        odd.ldx_pad = 3;
        odd.ldy_pad = 1;
        check_linear(w, t, odd, ++seed);
      }
    }
}

TEST(Sm90Linear, MisalignedPointers) {
  MEGAMOE_REQUIRE_GPU();
  uint64_t seed = 300;
  for (Fmt fmt : kAllFormats) {
    const HostWeight w = make_weight(fmt, 64, 256, ++seed);
    const size_t elem = fmt == Fmt::kF32 ? 4 : fmt == Fmt::kBf16 ? 2 : 1;
    for (int t : {1, 5, 16, 33, 64}) {
      Layout wl;  // W one element past a 16-byte boundary
      wl.w_offset = elem;
      check_linear(w, t, wl, ++seed);
      Layout xl;  // x one float past a 16-byte boundary
      xl.x_offset = 1;
      check_linear(w, t, xl, ++seed);
    }
  }
}

TEST(Sm90Linear, GroupedTiny) {
  MEGAMOE_REQUIRE_GPU();
  struct Shape {
    int groups, n_g, k_g;
  };
  // n_g = 24 / 40: warps' row blocks and 128-row scale tiles straddle groups.
  const Shape shapes[] = {{2, 16, 24}, {4, 24, 48}, {3, 40, 200}, {8, 64, 64}, {2, 130, 256}};
  uint64_t seed = 400;
  for (Fmt fmt : kAllFormats)
    for (const Shape& s : shapes) {
      const HostWeight w = make_weight(fmt, static_cast<int64_t>(s.groups) * s.n_g, s.k_g, ++seed);
      for (int t : kTokenCounts) {
        Layout l;
        l.groups = s.groups;
        check_linear(w, t, l, ++seed);
        l.ldx_pad = 4;
        l.ldy_pad = 3;
        check_linear(w, t, l, ++seed);
      }
    }
}

// DeepSeek-V4-Flash q_b_proj: [32768, 1024] FP8 block-128, E8M0 scales.
TEST(Sm90Linear, FlashQbProjection) {
  MEGAMOE_REQUIRE_GPU();
  const HostWeight w = make_weight(Fmt::kFp8E8m0, 32768, 1024, 501);
  for (int t : {1, 4, 33}) check_linear(w, t, Layout{}, 510 + t);
  const HostWeight wf = make_weight(Fmt::kFp8F32, 32768, 1024, 502);
  check_linear(wf, 4, Layout{}, 520);
}

// DeepSeek-V4-Flash o_a_proj: 8 groups of [1024, 4096] FP8 (weight [8192, 4096]).
TEST(Sm90Linear, FlashGroupedOutputProjection) {
  MEGAMOE_REQUIRE_GPU();
  const HostWeight w = make_weight(Fmt::kFp8E8m0, 8 * 1024, 4096, 601);
  Layout l;
  l.groups = 8;
  check_linear(w, 2, l, 610);
  check_linear(w, 17, l, 611);
}

// Other Flash widths: kv_proj [512, 4096], shared expert gate [2048, 4096]
// (fp32 scales), a bf16 [4096, 4096] (lm_head's K and format), fp32 q_a-sized.
TEST(Sm90Linear, FlashOtherWidths) {
  MEGAMOE_REQUIRE_GPU();
  const HostWeight kv = make_weight(Fmt::kFp8E8m0, 512, 4096, 701);
  check_linear(kv, 1, Layout{}, 710);
  check_linear(kv, 64, Layout{}, 711);
  const HostWeight shared = make_weight(Fmt::kFp8F32, 2048, 4096, 702);
  check_linear(shared, 3, Layout{}, 712);
  check_linear(shared, 200, Layout{}, 713);
  const HostWeight bf = make_weight(Fmt::kBf16, 4096, 4096, 703);
  check_linear(bf, 1, Layout{}, 714);
  check_linear(bf, 16, Layout{}, 715);
  const HostWeight f = make_weight(Fmt::kF32, 1024, 4096, 704);
  check_linear(f, 8, Layout{}, 716);
  check_linear(f, 17, Layout{}, 717);
}

// Fixed summation order: two runs give identical bits (both kernels).
TEST(Sm90Linear, Deterministic) {
  MEGAMOE_REQUIRE_GPU();
  const HostWeight w = make_weight(Fmt::kFp8E8m0, 1024, 4096, 801);  // GEMV splits K over 8 warps here
  for (kern::LinearPath path : {kern::LinearPath::kGemv, kern::LinearPath::kTiled})
    for (int t : {1, 4, 33}) {
      std::vector<float> x;
      const std::vector<float> xp = make_x(t, w.in, w.in, 810 + t, x);
      const std::vector<float> a = run_gpu(w, xp, t, Layout{}, w.in, w.out, path);
      const std::vector<float> b = run_gpu(w, xp, t, Layout{}, w.in, w.out, path);
      ASSERT_EQ(a.size(), b.size());
      size_t diff = 0;
      for (size_t i = 0; i < a.size(); ++i) diff += bits_of(a[i]) != bits_of(b[i]);
      EXPECT_EQ(diff, 0u) << "path " << static_cast<int>(path) << " T=" << t;
    }
}

// T = 0 launches nothing; K = 0 gives zeros.
TEST(Sm90Linear, DegenerateSizes) {
  MEGAMOE_REQUIRE_GPU();
  const HostWeight w = make_weight(Fmt::kBf16, 40, 24, 901);
  {
    Stream stream;
    DeviceBuffer y(4 * 40);
    std::vector<float> host(40);
    float sentinel;
    std::memcpy(&sentinel, &kSentinelBits, 4);
    std::fill(host.begin(), host.end(), sentinel);
    y.upload(host.data(), 4 * 40, stream.get());
    kern::LinearParams p;
    p.tokens = 0;
    p.weight.format = kern::LinearFormat::kBf16;
    p.weight.out = 40;
    p.weight.in = 24;
    p.y = y.as<float>();
    p.ldy = 40;
    kern::launch_linear(p, stream.get());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream.get());
    stream.synchronize();
    y.download(host.data(), 4 * 40, stream.get());
    for (float v : host) EXPECT_EQ(bits_of(v), kSentinelBits);
  }
  for (Fmt fmt : kAllFormats) {
    HostWeight empty;  // [24, 0]: no values, no scales (built by hand, the CPU loader is not needed)
    empty.fmt = fmt;
    empty.out = 24;
    empty.in = 0;
    for (kern::LinearPath path : {kern::LinearPath::kGemv, kern::LinearPath::kTiled})
      for (int t : {1, 17}) {
        std::vector<float> x;
        const std::vector<float> xp = make_x(t, 0, 4, 903, x);
        const std::vector<float> y = run_gpu(empty, xp, t, Layout{}, 4, 24, path);
        for (float v : y)
          EXPECT_EQ(bits_of(v), 0u) << fmt_name(fmt) << " T=" << t << " path " << static_cast<int>(path);
      }
  }
}

}  // namespace
