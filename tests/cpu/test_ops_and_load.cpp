// The CPU backend's fp32 ops and its weight loader, against hand-computed
// values and a double-precision naive loop: linear (threaded and not), RMSNorm,
// widening BF16, and dequantize_weight for FP8 block-128 / MXFP4 / NVFP4 byte
// patterns whose values are worked out by hand from the format definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/cpu/load.hpp"
#include "backend/cpu/ops.hpp"
#include "core/error.hpp"
#include "test_seed.hpp"

namespace megamoe::cpu {
namespace {

Tensor random_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  Tensor t(DType::F32, {rows, cols});
  std::mt19937 rng(::megamoe::testing::seeded(seed));
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

TEST(Linear, MatchesNaiveDoubleLoopSmallAndThreaded) {
  MEGAMOE_SEED_TRACE();
  for (auto [rows, in, out] : {std::tuple<int64_t, int64_t, int64_t>{3, 5, 7}, {37, 96, 130}}) {
    const Tensor x = random_matrix(rows, in, 1), w = random_matrix(out, in, 2);
    std::vector<float> y(static_cast<size_t>(rows * out));
    linear({x.data<float>(), static_cast<size_t>(x.numel())}, rows, w, y);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (int64_t i = 0; i < in; ++i) s += double(x.data<float>()[r * in + i]) * w.data<float>()[o * in + i];
        // Measured max |y - s| / (1 + |s|): 2.4e-6 (default seed), 4.7e-6 over 33 seeds; was 1e-4.
        EXPECT_NEAR(y[r * out + o], s, 1.5e-5 * (1 + std::fabs(s)));
      }
  }
}

TEST(Linear, RejectsMismatchedShapes) {
  MEGAMOE_SEED_TRACE();
  const Tensor w = random_matrix(4, 3, 1);
  std::vector<float> x(5), y(8);
  EXPECT_THROW(linear(x, 2, w, y), Error);
}

TEST(RmsNorm, WeightedAndUnweighted) {
  std::vector<float> x = {3.f, 4.f, 0.f, 0.f};  // rows of 2: mean square 12.5 and 0
  rms_norm_rows(std::span<float>(x), 2, std::vector<float>{1.f, 2.f}, 0.f + 1e-6f);
  EXPECT_NEAR(x[0], 3.0 / std::sqrt(12.5 + 1e-6), 1e-6);
  EXPECT_NEAR(x[1], 2 * 4.0 / std::sqrt(12.5 + 1e-6), 1e-6);
  EXPECT_EQ(x[2], 0.f);
  std::vector<float> u = {1.f, 1.f, 1.f, 1.f};
  rms_norm_rows(std::span<float>(u), 4, 0.f);
  for (float v : u) EXPECT_FLOAT_EQ(v, 1.f);
}

TensorView view_of(const std::string& name, DType dtype, Shape shape, const void* data, size_t nbytes) {
  TensorView v;
  v.name = name;
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.data = static_cast<const std::byte*>(data);
  v.nbytes = nbytes;
  return v;
}

TEST(Load, WidensBf16) {
  const uint16_t bits[3] = {0x3F80, 0xC040, 0x3E20};  // 1.0, -3.0, 0.15625
  const TensorView v = view_of("b", DType::BF16, {3}, bits, sizeof(bits));
  const Tensor t = to_f32(v);
  EXPECT_EQ(t.data<float>()[0], 1.f);
  EXPECT_EQ(t.data<float>()[1], -3.f);
  EXPECT_EQ(t.data<float>()[2], 0.15625f);
  const float f32[2] = {1.5f, -0.25f};
  const Tensor f = to_f32(view_of("f", DType::F32, {1, 2}, f32, sizeof(f32)));
  EXPECT_EQ(f.shape(), (Shape{1, 2}));
  EXPECT_EQ(f.data<float>()[1], -0.25f);
  const int8_t ints[1] = {1};
  EXPECT_THROW(to_f32(view_of("i", DType::I8, {1}, ints, 1)), Error);
}

TEST(Load, DequantizesFp8BlockWithE8m0Scale) {
  // E4M3 0x38 = 1.0, 0x40 = 2.0, 0xC4 = -3.0; E8M0 0x80 = 2^1 (one 128x128 tile).
  const uint8_t values[4] = {0x38, 0x40, 0xC4, 0x00};
  const uint8_t scale[1] = {0x80};
  const TensorView w = view_of("w", DType::F8_E4M3, {2, 2}, values, 4);
  const TensorView s = view_of("w.scale", DType::F8_E8M0, {1, 1}, scale, 1);
  WeightRef ref;
  ref.name = "w";
  ref.format = WeightFormat::kFp8Block;
  ref.out = 2;
  ref.in = 2;
  ref.weight = &w;
  ref.scale = &s;
  const Tensor t = dequantize_weight(ref);
  EXPECT_EQ(std::vector<float>(t.data<float>(), t.data<float>() + 4), (std::vector<float>{2.f, 4.f, -6.f, 0.f}));
}

TEST(Load, DequantizesMxfp4AndNvfp4) {
  // One row of 32: bytes 0x21 -> elements (0x1 = 0.5, 0x2 = 1.0), 0xF7 -> (6, -6).
  std::vector<uint8_t> packed(16, 0x00);
  packed[0] = 0x21;
  packed[1] = 0xF7;
  const uint8_t e8m0[1] = {0x7E};  // 2^-1
  const TensorView w = view_of("e.w", DType::U8, {1, 16}, packed.data(), packed.size());
  const TensorView s = view_of("e.scale", DType::F8_E8M0, {1, 1}, e8m0, 1);
  WeightRef mx;
  mx.name = "e";
  mx.format = WeightFormat::kMxfp4;
  mx.out = 1;
  mx.in = 32;
  mx.weight = &w;
  mx.scale = &s;
  const Tensor a = dequantize_weight(mx);
  EXPECT_EQ(a.data<float>()[0], 0.25f);
  EXPECT_EQ(a.data<float>()[1], 0.5f);
  EXPECT_EQ(a.data<float>()[2], 3.f);
  EXPECT_EQ(a.data<float>()[3], -3.f);
  EXPECT_EQ(a.data<float>()[4], 0.f);
  // NVFP4: E4M3 block scales 0x40 (2.0) and 0x30 (0.5) per 16, global scale 0.25.
  const uint8_t e4m3[2] = {0x40, 0x30};
  const float global = 0.25f;
  const TensorView bs = view_of("e.weight_scale", DType::F8_E4M3, {1, 2}, e4m3, 2);
  const TensorView gs = view_of("e.weight_scale_2", DType::F32, {}, &global, 4);
  WeightRef nv = mx;
  nv.format = WeightFormat::kNvfp4;
  nv.scale = &bs;
  nv.global_scale = &gs;
  const Tensor b = dequantize_weight(nv);
  EXPECT_EQ(b.data<float>()[0], 0.25f);  // 0.5 * 2 * 0.25
  EXPECT_EQ(b.data<float>()[1], 0.5f);
  EXPECT_EQ(b.data<float>()[2], 3.f);
  EXPECT_EQ(b.data<float>()[3], -3.f);
  packed[8] = 0x07;  // element 16 (second block) = 6 -> 6 * 0.5 * 0.25
  const Tensor c = dequantize_weight(nv);
  EXPECT_EQ(c.data<float>()[16], 0.75f);
}

TEST(Load, IndexTableChecksRange) {
  const int64_t table[4] = {0, 3, 2, 1};
  const TensorView v = view_of("tid2eid", DType::I64, {2, 2}, table, sizeof(table));
  EXPECT_EQ(to_index_table(v, 4), (std::vector<int32_t>{0, 3, 2, 1}));
  try {
    to_index_table(v, 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tid2eid holds 3 at index 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace megamoe::cpu
