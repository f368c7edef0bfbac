// Stored-format slices of a weight (parallel/weight_slice.hpp, what the CUDA
// loader uploads per rank): a row or column slice of an FP8 block-128 matrix
// dequantizes to exactly that slice of the whole dequantized matrix, and
// slices that would need scale tiles mixing two stored ones are clear errors.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "core/error.hpp"
#include "core/float_formats.hpp"
#include "parallel/weight_slice.hpp"

namespace megamoe {
namespace {

// w[r, c] = e4m3(codes) * scale[r / 128, c / 128] (fp32 scales).
std::vector<float> dequantize(const std::vector<uint8_t>& codes, const std::vector<uint8_t>& scale_bytes, int64_t rows,
                              int64_t cols) {
  const int64_t tc = (cols + 127) / 128;
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float s = 0;
      std::memcpy(&s, scale_bytes.data() + ((r / 128) * tc + c / 128) * 4, 4);
      out[r * cols + c] = e4m3_to_f32(codes[r * cols + c]) * s;
    }
  return out;
}

struct Fp8Matrix {
  int64_t rows, cols;
  std::vector<uint8_t> codes, scales;  // fp32 scales as bytes
};

Fp8Matrix random_fp8(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  Fp8Matrix m{rows, cols, {}, {}};
  for (int64_t i = 0; i < rows * cols; ++i) {
    uint8_t q = f32_to_e4m3(dist(rng));
    m.codes.push_back((q & 0x7f) == 0x7f ? 0 : q);
  }
  const int64_t tiles = ((rows + 127) / 128) * ((cols + 127) / 128);
  for (int64_t t = 0; t < tiles; ++t) {
    const float s = 0.01f * static_cast<float>(t + 1);
    const auto* b = reinterpret_cast<const uint8_t*>(&s);
    m.scales.insert(m.scales.end(), b, b + 4);
  }
  return m;
}

void expect_exact_slice(const Fp8Matrix& m, SliceAxis axis, IndexRange range) {
  const std::vector<float> whole = dequantize(m.codes, m.scales, m.rows, m.cols);
  const Fp8Slice s = slice_fp8_block128(m.codes.data(), m.scales.data(), 4, m.rows, m.cols, axis, range, "w");
  const std::vector<float> part = dequantize(s.codes, s.scales, s.rows, s.cols);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.cols; ++c) {
      const int64_t wr = axis == SliceAxis::kRows ? r + range.begin : r;
      const int64_t wc = axis == SliceAxis::kCols ? c + range.begin : c;
      ASSERT_EQ(part[r * s.cols + c], whole[wr * m.cols + wc]) << "at " << r << ", " << c;
    }
}

TEST(WeightSlice, Fp8RowAndColumnSlicesDequantizeToTheWholeMatrixSlice) {
  const Fp8Matrix m = random_fp8(300, 260, 1);
  for (const SliceAxis axis : {SliceAxis::kRows, SliceAxis::kCols}) {
    const int64_t extent = axis == SliceAxis::kRows ? m.rows : m.cols;
    expect_exact_slice(m, axis, {0, 128});
    expect_exact_slice(m, axis, {128, extent});  // aligned start, partial last tile
    expect_exact_slice(m, axis, {256, extent});
    expect_exact_slice(m, axis, {40, 100});  // inside one tile
    expect_exact_slice(m, axis, {0, extent});
  }
}

TEST(WeightSlice, SlicesThatSplitAScaleTileAreClearErrors) {
  const Fp8Matrix m = random_fp8(240, 24, 2);
  try {  // tiny-b-fp8's q_b on 3 ranks: rows [80, 160)
    slice_fp8_block128(m.codes.data(), m.scales.data(), 4, m.rows, m.cols, SliceAxis::kRows, {80, 160}, "q_b");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q_b: this rank's slice [80, 160)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("128 boundaries"), std::string::npos) << e.what();
  }
}

TEST(WeightSlice, PlainMatrixRowsAndColumns) {
  std::vector<uint16_t> m(6 * 5);
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<uint16_t>(i);
  const std::vector<uint8_t> rows = slice_matrix(m.data(), 6, 5, 2, SliceAxis::kRows, {2, 4});
  ASSERT_EQ(rows.size(), 2u * 5 * 2);
  EXPECT_EQ(reinterpret_cast<const uint16_t*>(rows.data())[0], 10);
  const std::vector<uint8_t> cols = slice_matrix(m.data(), 6, 5, 2, SliceAxis::kCols, {1, 3});
  ASSERT_EQ(cols.size(), 6u * 2 * 2);
  const auto* c = reinterpret_cast<const uint16_t*>(cols.data());
  EXPECT_EQ(c[0], 1);
  EXPECT_EQ(c[1], 2);
  EXPECT_EQ(c[2], 6);
  EXPECT_EQ(c[11], 27);
  EXPECT_THROW(slice_matrix(m.data(), 6, 5, 2, SliceAxis::kCols, {3, 6}), Error);
}

}  // namespace
}  // namespace megamoe
