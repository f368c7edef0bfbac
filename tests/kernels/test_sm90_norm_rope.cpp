// GPU row-wise kernels (kernels/norm/sm90_norm_rope.cu) against their CPU
// oracles: cpu::rms_norm_rows, dsv4::RopeTable::apply, the embedding copy of
// Model::forward (table row into each of the n_c streams) and
// megamoe::f32_to_bf16.
//
// Tolerances:
//  - rms_norm: |gpu - cpu| <= 1e-6 |cpu| (+1e-30). Both sum the squares in
//    double and then do the same two fp32 products, so the result is normally
//    bit-identical; a double sum in another order can move inv by one fp32
//    ulp near a rounding boundary (<= 2 ulp, 2.4e-7, in the output).
//  - rope: |gpu - cpu| <= 1e-6 (|a| + |b|) per rotated pair, exact elsewhere.
//    The angle is the same fp32 product and the rotation the same fp32 ops;
//    only CUDA's double cos/sin (<= 2 ulp in double) can round to another
//    float, one float ulp in c or s.
//  - embed, to_bf16: bit-exact (copies and a bit manipulation).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "core/float_formats.hpp"
#include "core/model_config.hpp"
#include "gpu_test.hpp"
#include "kernels/norm/norm_params.hpp"
#include "backend/cpu/dsv4/rope.hpp"

namespace {

using megamoe::cuda::DeviceBuffer;
using megamoe::cuda::Stream;
namespace kern = megamoe::cuda::kernels;

using megamoe::testing::from_device;
using megamoe::testing::to_device;

using megamoe::testing::normal;

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// ---- RMSNorm ---------------------------------------------------------------

struct NormCase {
  int rows, groups, width;
  bool weighted;
  float scale;  // magnitude of the rows
};

TEST(GpuNorm, RmsNormMatchesCpuRows) {
  MEGAMOE_REQUIRE_GPU();
  // Tiny widths, per-head norms (groups > 1: q heads of 512, indexer heads),
  // Flash's D = 4096 and q_lora 1024, an odd width, rows of large / small scale.
  const NormCase cases[] = {{5, 1, 32, true, 1.0f},     {3, 1, 48, true, 1.0f},    {4, 1, 64, false, 1.0f},
                            {3, 4, 32, true, 1.0f},     {2, 64, 512, true, 3.0f},  {3, 64, 512, false, 1.0f},
                            {4, 1, 4096, true, 1.0f},   {2, 1, 1024, true, 1e-3f}, {3, 1, 33, true, 1e3f},
                            {1, 8, 128, true, 1.0f},    {7, 1, 7168, true, 1.0f}};
  uint64_t seed = 1;
  for (const NormCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "rows=" << c.rows << " groups=" << c.groups << " width=" << c.width
                                    << " weighted=" << c.weighted);
    std::mt19937_64 rng(seed++);
    const size_t total = static_cast<size_t>(c.rows) * c.groups * c.width;
    const std::vector<float> x = normal(total, rng, 0.0f, c.scale);
    const std::vector<float> w = normal(c.width, rng, 1.0f, 0.2f);
    std::vector<float> ref = x;
    if (c.weighted) {
      megamoe::cpu::rms_norm_rows(ref, c.width, w, 1e-6f);
    } else {
      megamoe::cpu::rms_norm_rows(ref, c.width, 1e-6f);
    }
    Stream s;
    DeviceBuffer xb = to_device(x), wb = to_device(w);
    kern::RmsNormParams p;
    p.rows = c.rows;
    p.groups = c.groups;
    p.width = c.width;
    p.eps = 1e-6f;
    p.x = xb.as<float>();
    p.weight = c.weighted ? wb.as<float>() : nullptr;
    kern::launch_rms_norm(p, s.get());
    MEGAMOE_CUDA_CHECK(cudaGetLastError());
    const std::vector<float> got = from_device<float>(xb, total, s);
    size_t exact = 0;
    for (size_t i = 0; i < total; ++i) {
      ASSERT_LE(std::fabs(got[i] - ref[i]), 1e-6f * std::fabs(ref[i]) + 1e-30f) << "element " << i;
      exact += bits_of(got[i]) == bits_of(ref[i]);
    }
    std::printf("  rms_norm rows=%d groups=%d width=%d: %zu / %zu bit-identical\n", c.rows, c.groups, c.width, exact,
                total);
  }
}

// ---- RoPE ------------------------------------------------------------------

struct RopeCase {
  int rows, heads, dim, rope_dim;
  bool yarn, inverse;
};

megamoe::RopeParams rope_params(bool yarn) {
  megamoe::RopeParams p;
  if (yarn) {  // the compress table of Flash (dsv4-architecture.md §5.1)
    p.theta = 160000.0;
    p.yarn = true;
    p.factor = 16.0;
    p.original_max_position = 65536;
    p.beta_fast = 32.0;
    p.beta_slow = 1.0;
  } else {
    p.theta = 10000.0;
  }
  return p;
}

TEST(GpuRope, MatchesRopeTableApply) {
  MEGAMOE_REQUIRE_GPU();
  // Tiny (4 heads of 32, d_r 8; the indexer's 8 x 16), Flash q (64 heads of
  // 512, d_r 64), the single KV head, both tables, both directions.
  const RopeCase cases[] = {{5, 4, 32, 8, false, false},   {5, 4, 32, 8, true, true},    {6, 8, 16, 8, true, false},
                            {3, 64, 512, 64, false, false}, {3, 64, 512, 64, true, false}, {4, 64, 512, 64, true, true},
                            {9, 1, 512, 64, false, true},   {2, 3, 10, 10, false, false}};
  uint64_t seed = 1;
  for (const RopeCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "rows=" << c.rows << " heads=" << c.heads << " dim=" << c.dim
                                    << " rope=" << c.rope_dim << " yarn=" << c.yarn << " inverse=" << c.inverse);
    std::mt19937_64 rng(seed++);
    const megamoe::dsv4::RopeTable table(rope_params(c.yarn), c.rope_dim);
    const size_t total = static_cast<size_t>(c.rows) * c.heads * c.dim;
    const std::vector<float> x = normal(total, rng, 0.0f, 1.0f);
    std::vector<int32_t> pos(c.rows);
    for (int r = 0; r < c.rows; ++r) pos[r] = std::uniform_int_distribution<int32_t>(0, 1 << 20)(rng);
    pos[0] = 0;
    if (c.rows > 1) pos[1] = 1048575;  // the largest position of the real models
    if (c.rows > 2) pos[2] = 7;

    std::vector<float> ref = x;
    for (int r = 0; r < c.rows; ++r)
      for (int h = 0; h < c.heads; ++h)
        table.apply(ref.data() + (static_cast<size_t>(r) * c.heads + h) * c.dim, c.dim, pos[r], c.inverse);

    Stream s;
    DeviceBuffer xb = to_device(x), omega = to_device(table.frequencies()), pb = to_device(pos);
    kern::RopeParams p;
    p.rows = c.rows;
    p.heads = c.heads;
    p.dim = c.dim;
    p.rope_dim = c.rope_dim;
    p.inverse = c.inverse;
    p.x = xb.as<float>();
    p.omega = omega.as<float>();
    p.row_pos = pb.as<int32_t>();
    kern::launch_rope(p, s.get());
    MEGAMOE_CUDA_CHECK(cudaGetLastError());
    const std::vector<float> got = from_device<float>(xb, total, s);
    size_t exact = 0;
    for (size_t v = 0; v < total / c.dim; ++v) {
      const float* g = got.data() + v * c.dim;
      const float* e = ref.data() + v * c.dim;
      for (int i = 0; i < c.dim - c.rope_dim; ++i) ASSERT_EQ(bits_of(g[i]), bits_of(e[i])) << "vector " << v << " ch " << i;
      for (int i = c.dim - c.rope_dim; i < c.dim; i += 2) {
        const float tol = 1e-6f * (std::fabs(e[i]) + std::fabs(e[i + 1]));
        ASSERT_NEAR(g[i], e[i], tol) << "vector " << v << " ch " << i;
        ASSERT_NEAR(g[i + 1], e[i + 1], tol) << "vector " << v << " ch " << i + 1;
        exact += (bits_of(g[i]) == bits_of(e[i])) + (bits_of(g[i + 1]) == bits_of(e[i + 1]));
      }
    }
    std::printf("  rope rows=%d heads=%d dim=%d d_r=%d: %zu / %zu rotated values bit-identical\n", c.rows, c.heads,
                c.dim, c.rope_dim, exact, total / c.dim * c.rope_dim);
  }
}

// ---- embedding ---------------------------------------------------------------

TEST(GpuEmbed, CopiesRowsIntoEveryStreamAndFlagsBadIds) {
  MEGAMOE_REQUIRE_GPU();
  struct Case {
    int tokens, streams, hidden, vocab;
    bool bf16, bad_id;
  };
  const Case cases[] = {{9, 4, 64, 128, false, false}, {5, 3, 48, 100, true, false}, {6, 4, 32, 128, false, true},
                        {4, 4, 4096, 1000, true, true},  {3, 4, 4096, 1000, false, false}};
  uint64_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "T=" << c.tokens << " n_c=" << c.streams << " D=" << c.hidden
                                    << " bf16=" << c.bf16 << " bad_id=" << c.bad_id);
    std::mt19937_64 rng(seed++);
    const std::vector<float> table_f = normal(static_cast<size_t>(c.vocab) * c.hidden, rng, 0.0f, 1.0f);
    std::vector<uint16_t> table_b(table_f.size());
    std::vector<float> table_values = table_f;  // what the device reads, as fp32
    for (size_t i = 0; i < table_f.size(); ++i) {
      table_b[i] = megamoe::f32_to_bf16(table_f[i]);
      if (c.bf16) table_values[i] = megamoe::bf16_to_f32(table_b[i]);
    }
    std::vector<int32_t> ids(c.tokens);
    for (int32_t& id : ids) id = std::uniform_int_distribution<int32_t>(0, c.vocab - 1)(rng);
    ids[0] = c.vocab - 1;
    const int bad = c.bad_id ? c.tokens / 2 : -1;
    if (c.bad_id) ids[bad] = (bad % 2 == 0) ? c.vocab : -3;

    // The copy of Model::forward, rows of the bad id left zero.
    std::vector<float> ref(static_cast<size_t>(c.tokens) * c.streams * c.hidden, 0.0f);
    for (int t = 0; t < c.tokens; ++t) {
      if (t == bad) continue;
      for (int j = 0; j < c.streams; ++j)
        std::memcpy(&ref[(static_cast<size_t>(t) * c.streams + j) * c.hidden],
                    table_values.data() + static_cast<size_t>(ids[t]) * c.hidden, c.hidden * sizeof(float));
    }

    Stream s;
    DeviceBuffer table = c.bf16 ? to_device(table_b) : to_device(table_f);
    DeviceBuffer idb = to_device(ids), out(ref.size() * 4), flag = to_device(std::vector<int32_t>{0});
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(out.get(), 0x7F, ref.size() * 4, s.get()));  // garbage to overwrite
    kern::EmbedParams p;
    p.tokens = c.tokens;
    p.streams = c.streams;
    p.hidden = c.hidden;
    p.vocab = c.vocab;
    p.table_bf16 = c.bf16;
    p.table = table.get();
    p.ids = idb.as<int32_t>();
    p.x = out.as<float>();
    p.error_flag = flag.as<int32_t>();
    kern::launch_embed(p, s.get());
    MEGAMOE_CUDA_CHECK(cudaGetLastError());
    const std::vector<float> got = from_device<float>(out, ref.size(), s);
    const std::vector<int32_t> f = from_device<int32_t>(flag, 1, s);
    EXPECT_EQ(f[0], c.bad_id ? 1 : 0);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(bits_of(got[i]), bits_of(ref[i])) << "element " << i;
  }
}

// ---- fp32 -> bf16 ------------------------------------------------------------

TEST(GpuToBf16, BitExactAgainstHostCodec) {
  MEGAMOE_REQUIRE_GPU();
  std::mt19937_64 rng(5);
  std::vector<float> x;
  // Special values: zeros, infinities, NaNs with payloads, the largest finite
  // values (which round to inf), subnormals, and exact ties to even / odd.
  for (uint32_t b : {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F800001u,
                     0xFF812345u, 0x7FBFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F7F8000u, 0x00000001u, 0x807FFFFFu,
                     0x3F808000u, 0x3F818000u, 0x3F808001u, 0x3F807FFFu, 0xBF808000u, 0xBF818000u})
    x.push_back(float_of(b));
  for (int i = 0; i < 4096; ++i) x.push_back(float_of(static_cast<uint32_t>(rng())));  // every bit pattern class
  const std::vector<float> n = normal(100003, rng, 0.0f, 3.0f);  // odd length: a scalar tail
  x.insert(x.end(), n.begin(), n.end());

  Stream s;
  DeviceBuffer xb = to_device(x), yb(x.size() * 2 + 16);
  // Aligned (vectorised) and offset by one element (scalar path), whole and odd lengths.
  for (int offset : {0, 1}) {
    for (int64_t len : {static_cast<int64_t>(x.size()) - offset, int64_t{7}, int64_t{1}}) {
      SCOPED_TRACE(testing::Message() << "offset=" << offset << " n=" << len);
      MEGAMOE_CUDA_CHECK(cudaMemsetAsync(yb.get(), 0, yb.size(), s.get()));
      kern::ToBf16Params p;
      p.n = len;
      p.x = xb.as<float>() + offset;
      p.y = yb.as<uint16_t>() + offset;
      kern::launch_to_bf16(p, s.get());
      MEGAMOE_CUDA_CHECK(cudaGetLastError());
      const std::vector<uint16_t> got = from_device<uint16_t>(yb, x.size() + 1, s);
      for (int64_t i = 0; i < len; ++i)
        ASSERT_EQ(got[offset + i], megamoe::f32_to_bf16(x[offset + i])) << "element " << i << " bits 0x" << std::hex
                                                                         << bits_of(x[offset + i]);
      EXPECT_EQ(got[offset + len], 0) << "wrote past n";
    }
  }
}

}  // namespace
