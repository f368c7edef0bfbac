// FP8 KV storage rounding (the reference's QAT, src/backend/cpu/dsv4/kv_round.hpp):
// per block of 64 non-RoPE channels, values are E4M3 codes times the smallest
// power of two >= amax / 448; RoPE channels are bf16; applying it twice changes
// nothing. Checked against values computed here from the definition with the
// codec vectors' own E4M3 decoding (core/float_formats.hpp is checked against
// PyTorch's casts in tests/core).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/dsv4/kv_round.hpp"
#include "backend/cpu/moe.hpp"
#include "core/float_formats.hpp"
#include "test_seed.hpp"

namespace megamoe {
namespace {

TEST(KvRound, NonRopeBlocksAreE4m3TimesAPowerOfTwoAndRopeIsBf16) {
  MEGAMOE_SEED_TRACE();
  std::mt19937 rng(testing::seeded(3));
  std::normal_distribution<float> dist(0.f, 3.f);
  for (int64_t dim : {32, 40, 512}) {
    const int64_t rope = dim == 512 ? 64 : 8, nope = dim - rope;
    std::vector<float> row(static_cast<size_t>(dim));
    for (float& v : row) v = dist(rng);
    row[1] = 0.f;
    const std::vector<float> before = row;
    dsv4::round_kv_row(row.data(), dim, rope);
    for (int64_t b0 = 0; b0 < nope; b0 += 64) {
      const int64_t n = std::min<int64_t>(64, nope - b0);
      float amax = 0.f;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(before[b0 + i]));
      const float scale = std::exp2(std::ceil(std::log2(amax / 448.f)));
      for (int64_t i = 0; i < n; ++i) {
        const float code_value = row[b0 + i] / scale;
        EXPECT_EQ(e4m3_to_f32(f32_to_e4m3(code_value)), code_value) << "dim " << dim << " channel " << b0 + i;
        EXPECT_LE(std::fabs(row[b0 + i] - before[b0 + i]), std::fabs(before[b0 + i]) / 16 + scale * 0x1p-9f);
      }
    }
    for (int64_t i = nope; i < dim; ++i) EXPECT_EQ(row[i], cpu::round_to_bf16(before[i]));
    const std::vector<float> once = row;
    dsv4::round_kv_row(row.data(), dim, rope);
    EXPECT_EQ(row, once) << "rounding is idempotent";
  }
}

TEST(KvRound, AllZeroBlockStaysZero) {
  std::vector<float> row(40, 0.f);
  dsv4::round_kv_row(row.data(), 40, 8);
  for (float v : row) EXPECT_EQ(v, 0.f);
}

}  // namespace
}  // namespace megamoe
