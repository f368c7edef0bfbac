// Scalar codecs against PyTorch's casts and ModelOpt's E2M1 rounding
// (tests/data/codecs, tools/make_codec_vectors.py), plus published tables.
#include "core/float_formats.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <iomanip>

#include "core/error.hpp"
#include "core/codec_vectors.hpp"

namespace megamoe {
namespace {

using testing::bits_of;
using testing::CodecVectors;

std::string hex(uint32_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

bool f32_bits_are_nan(uint32_t bits) { return (bits & 0x7FFFFFFFu) > 0x7F800000u; }

TEST(FloatFormats, VectorsRecordTheirTools) {
  const auto& doc = CodecVectors::get().doc();
  EXPECT_FALSE(doc.at("torch_version").get<std::string>().empty());
  EXPECT_FALSE(doc.at("modelopt_version").get<std::string>().empty());
}

TEST(FloatFormats, E4m3DecodesEveryByteLikePyTorch) {
  const auto expected = CodecVectors::get().u32("e4m3_decode/out");
  ASSERT_EQ(expected.size(), 256u);
  for (int b = 0; b < 256; ++b) {
    const uint32_t got = bits_of(e4m3_to_f32(static_cast<uint8_t>(b)));
    if (f32_bits_are_nan(expected[b])) {
      EXPECT_TRUE(f32_bits_are_nan(got)) << "byte " << b;
      EXPECT_TRUE(b == 0x7F || b == 0xFF) << "byte " << b;
    } else {
      EXPECT_EQ(got, expected[b]) << "byte " << hex(b);
    }
  }
  // Published anchors (nvfp4-format.md §1.2).
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), 0x1p-9f);
  EXPECT_EQ(e4m3_to_f32(0x30), 0.5f);
}

TEST(FloatFormats, E8m0DecodesEveryByteLikePyTorch) {
  const auto expected = CodecVectors::get().u32("e8m0_decode/out");
  ASSERT_EQ(expected.size(), 256u);
  for (int b = 0; b < 256; ++b) {
    const uint32_t got = bits_of(e8m0_to_f32(static_cast<uint8_t>(b)));
    if (f32_bits_are_nan(expected[b])) {
      EXPECT_TRUE(f32_bits_are_nan(got)) << "byte " << b;
    } else {
      EXPECT_EQ(got, expected[b]) << "byte " << hex(b);
    }
  }
  EXPECT_TRUE(std::isnan(e8m0_to_f32(0xFF)));
}

TEST(FloatFormats, E2m1DecodesEveryCodeLikeModelOpt) {
  const auto expected = CodecVectors::get().u32("e2m1_decode/out");
  ASSERT_EQ(expected.size(), 16u);
  for (int code = 0; code < 16; ++code) {
    EXPECT_EQ(bits_of(e2m1_to_f32(static_cast<uint8_t>(code))), expected[code]) << "code " << code;
    EXPECT_EQ(e2m1_to_f32(static_cast<uint8_t>(code | 0xF0)), e2m1_to_f32(static_cast<uint8_t>(code)));
  }
  EXPECT_TRUE(std::signbit(e2m1_to_f32(0x8)));  // code 8 is -0 (nvfp4-format.md §1.1)
}

TEST(FloatFormats, F32ToE4m3MatchesPyTorchCast) {
  const auto& v = CodecVectors::get();
  const auto in = v.f32("f32_to_e4m3/in");
  const auto expected = v.u8("f32_to_e4m3/out");
  ASSERT_EQ(in.size(), expected.size());
  ASSERT_GT(in.size(), 3000u);
  int mismatches = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const uint8_t got = f32_to_e4m3(in[i]);
    if (got != expected[i] && ++mismatches < 20) {
      ADD_FAILURE() << "x = " << std::setprecision(9) << in[i] << " (" << hex(bits_of(in[i])) << "): got "
                    << hex(got) << ", PyTorch " << hex(expected[i]);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(FloatFormats, F32ToBf16AndF16MatchPyTorchCast) {
  const auto& v = CodecVectors::get();
  const auto in = v.f32("f32_to_bf16_f16/in");
  const auto bf16 = v.u16("f32_to_bf16/out");
  const auto f16 = v.u16("f32_to_f16/out");
  ASSERT_EQ(in.size(), bf16.size());
  ASSERT_EQ(in.size(), f16.size());
  int mismatches = 0, nans = 0;
  for (size_t i = 0; i < in.size() && mismatches < 20; ++i) {
    const uint16_t got_bf16 = f32_to_bf16(in[i]);
    const uint16_t got_f16 = f32_to_f16(in[i]);
    if (std::isnan(in[i])) {
      // PyTorch's NaN payloads depend on its code path (scalar 0x7FC0, vectorised 0xFFFF):
      // the contract is only "stays a NaN".
      ++nans;
      EXPECT_TRUE(std::isnan(bf16_to_f32(got_bf16))) << hex(bits_of(in[i]));
      EXPECT_TRUE(std::isnan(bf16_to_f32(bf16[i]))) << "vector for " << hex(bits_of(in[i]));
      EXPECT_TRUE(std::isnan(f16_to_f32(got_f16))) << hex(bits_of(in[i]));
      EXPECT_TRUE(std::isnan(f16_to_f32(f16[i]))) << "vector for " << hex(bits_of(in[i]));
      continue;
    }
    if (got_bf16 != bf16[i]) {
      ++mismatches;
      ADD_FAILURE() << "bf16 of " << hex(bits_of(in[i])) << ": got " << hex(got_bf16) << ", PyTorch " << hex(bf16[i]);
    }
    if (got_f16 != f16[i]) {
      ++mismatches;
      ADD_FAILURE() << "f16 of " << hex(bits_of(in[i])) << ": got " << hex(got_f16) << ", PyTorch " << hex(f16[i]);
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_GT(nans, 3);
}

TEST(FloatFormats, HalfDecodesMatchPyTorch) {
  const auto& v = CodecVectors::get();
  const auto in = v.u16("half_decode/in");
  const auto bf16 = v.u32("bf16_decode/out");
  const auto f16 = v.u32("f16_decode/out");
  ASSERT_EQ(in.size(), bf16.size());
  ASSERT_EQ(in.size(), f16.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(bits_of(bf16_to_f32(in[i])), bf16[i]) << "bf16 " << hex(in[i]);
    const uint32_t got = bits_of(f16_to_f32(in[i]));
    if (f32_bits_are_nan(f16[i])) {
      EXPECT_TRUE(f32_bits_are_nan(got)) << "f16 " << hex(in[i]);
    } else {
      EXPECT_EQ(got, f16[i]) << "f16 " << hex(in[i]);
    }
  }
}

TEST(FloatFormats, F32ToE2m1MatchesModelOpt) {
  const auto& v = CodecVectors::get();
  const auto in = v.f32("f32_to_e2m1/in");
  const auto expected = v.u8("f32_to_e2m1/out");
  ASSERT_EQ(in.size(), expected.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(f32_to_e2m1(in[i]), expected[i]) << "y = " << std::setprecision(9) << in[i] << " ("
                                                << hex(bits_of(in[i])) << ")";
  }
}

// The tie / saturation / sign table published in nvfp4-format.md §1.4.
TEST(FloatFormats, E2m1PublishedRoundingTable) {
  struct Case {
    float y;
    uint8_t code;
  };
  const Case cases[] = {{0.25f, 0x0}, {0.2501f, 0x1}, {0.75f, 0x2}, {1.25f, 0x2}, {1.75f, 0x4},
                        {2.5f, 0x4},  {3.5f, 0x6},    {5.0f, 0x6},  {5.001f, 0x7}, {INFINITY, 0x7},
                        {-0.0f, 0x0}, {-0.1f, 0x8},   {-1.75f, 0xC}, {-6.5f, 0xF}, {-INFINITY, 0xF}};
  for (const auto& c : cases) EXPECT_EQ(f32_to_e2m1(c.y), c.code) << "y = " << c.y;
}

// E2M1 x E4M3 has at most 2 x 4 significant bits: every product of finite
// values is exact in FP32 and survives a round trip through BF16 (and FP16).
TEST(FloatFormats, E2m1TimesE4m3IsExactInBf16) {
  int checked = 0;
  for (int code = 0; code < 16; ++code) {
    for (int byte = 0; byte < 256; ++byte) {
      const float scale = e4m3_to_f32(static_cast<uint8_t>(byte));
      if (std::isnan(scale)) continue;
      const float product = e2m1_to_f32(static_cast<uint8_t>(code)) * scale;
      ASSERT_EQ(static_cast<double>(product),
                static_cast<double>(e2m1_to_f32(static_cast<uint8_t>(code))) * static_cast<double>(scale));
      ASSERT_EQ(bits_of(bf16_to_f32(f32_to_bf16(product))), bits_of(product)) << code << " x " << byte;
      ASSERT_EQ(bits_of(f16_to_f32(f32_to_f16(product))), bits_of(product)) << code << " x " << byte;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 16 * 254);
}

}  // namespace
}  // namespace megamoe
