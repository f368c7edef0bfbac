// Our dequantizers against an independent implementation (issue 16, item 4):
// tests/data/independent/dequant_transformers.json holds, for every FP8
// block-128 and MXFP4 weight of the tiny checkpoints and every MXFP4 / FP8
// codec case, a hash of the fp32 values that transformers' own dequantizers
// produce (Fp8Dequantize._dequantize_one and convert_moe_packed_tensors, see
// tools/check_fixtures_independent.py). The loader path (Checkpoint::weight +
// cpu::dequantize_weight) and the codec functions must give the same bits.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cpu/load.hpp"
#include "core/block_quant.hpp"
#include "core/checkpoint.hpp"
#include "core/codec_vectors.hpp"

namespace megamoe {
namespace {

// Same as mixhash() in tools/check_fixtures_independent.py.
std::string mixhash(const float* v, size_t n, double* sum) {
  uint64_t h = 0;
  *sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t bits = std::isnan(v[i]) ? 0x7fc00000u : std::bit_cast<uint32_t>(v[i]);
    uint64_t z = (static_cast<uint64_t>(bits) | (static_cast<uint64_t>(i) << 32)) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    h += z ^ (z >> 31);
    if (!std::isnan(v[i]) && !std::isinf(v[i])) *sum += v[i];
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

const nlohmann::json& golden() {
  static const nlohmann::json doc = [] {
    std::ifstream in(std::string(MEGAMOE_TEST_DATA_DIR) + "/independent/dequant_transformers.json");
    return nlohmann::json::parse(in);
  }();
  return doc;
}

TEST(IndependentDequant, CheckpointWeightsMatchTransformersBitExactly) {
  int checked = 0, mxfp4 = 0;
  for (const auto& [name, entries] : golden().at("checkpoints").items()) {
    const auto ckpt = Checkpoint::open(std::filesystem::path(MEGAMOE_TEST_DATA_DIR) / name);
    for (const auto& e : entries) {
      const std::string stored = e.at("name");
      SCOPED_TRACE(name + ": " + stored);
      std::string prefix = Checkpoint::canonical_name(stored);
      ASSERT_TRUE(prefix.ends_with(".weight")) << prefix;
      prefix.resize(prefix.size() - 7);
      const WeightRef ref = ckpt->weight(prefix);
      EXPECT_EQ(ref.format, e.at("format") == "mxfp4" ? WeightFormat::kMxfp4 : WeightFormat::kFp8Block);
      const Tensor t = cpu::dequantize_weight(ref);
      ASSERT_EQ(t.shape(), e.at("shape").get<Shape>());
      double sum = 0;
      EXPECT_EQ(mixhash(t.data<float>(), static_cast<size_t>(t.numel()), &sum), e.at("hash").get<std::string>())
          << "sum ours " << sum << " transformers " << e.at("sum").get<double>();
      ++checked;
      mxfp4 += e.at("format") == "mxfp4";
    }
  }
  EXPECT_GE(checked, 300);  // tiny-a-mxfp4 (160) and tiny-b-fp8 (156)
  EXPECT_GE(mxfp4, 100);
}

TEST(IndependentDequant, CodecCasesMatchTransformersBitExactly) {
  const auto& v = testing::CodecVectors::get();
  std::map<std::string, nlohmann::json> want;
  for (const auto& e : golden().at("codecs")) want[e.at("name")] = e;
  int checked = 0;
  for (const auto& c : v.doc().at("mxfp4")) {
    const std::string name = "mxfp4/" + c.at("name").get<std::string>();
    SCOPED_TRACE(name);
    const int64_t rows = c.at("rows"), cols = c.at("cols");
    const auto packed = v.u8(c.at("packed"));
    const auto scales = v.u8(c.at("scales"));
    std::vector<float> out(static_cast<size_t>(rows * cols));
    dequantize_mxfp4(packed.data(), scales.data(), rows, cols, out.data());
    double sum = 0;
    ASSERT_TRUE(want.count(name));
    EXPECT_EQ(mixhash(out.data(), out.size(), &sum), want[name].at("hash").get<std::string>());
    ++checked;
  }
  for (const auto& c : v.doc().at("fp8_block")) {
    const std::string name = "fp8_block/" + c.at("name").get<std::string>();
    SCOPED_TRACE(name);
    const int64_t rows = c.at("rows"), cols = c.at("cols");
    const auto values = v.u8(c.at("values"));
    std::vector<float> out(static_cast<size_t>(rows * cols));
    if (c.at("scale_encoding") == "f32") {
      const auto scales = v.u32(c.at("scales"));
      dequantize_fp8_block(values.data(), scales.data(), ScaleEncoding::kF32, rows, cols, out.data());
    } else {
      const auto scales = v.u8(c.at("scales"));
      dequantize_fp8_block(values.data(), scales.data(), ScaleEncoding::kE8M0, rows, cols, out.data());
    }
    double sum = 0;
    ASSERT_TRUE(want.count(name));
    EXPECT_EQ(mixhash(out.data(), out.size(), &sum), want[name].at("hash").get<std::string>());
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

}  // namespace
}  // namespace megamoe
