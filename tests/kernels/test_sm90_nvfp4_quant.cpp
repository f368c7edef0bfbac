// GPU NVFP4 activation quantizer (src/backend/cuda/quant/nvfp4_quant.hpp)
// against the host ModelOpt-exact quantizer megamoe::quantize_nvfp4_activation
// (src/core/block_quant.hpp, itself bit-exact against ModelOpt vectors): the
// packed E2M1 bytes, the E4M3 block-scale bytes, the global scale and the amax
// must be identical BYTE FOR BYTE -- no tolerance. A few expectations also come
// straight from the format spec (nvfp4-format.md §1.3 worked example, §1.4
// tie table), independent of both implementations.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "backend/cuda/quant/nvfp4_quant.hpp"
#include "core/block_quant.hpp"
#include "core/error.hpp"
#include "core/float_formats.hpp"
#include "gpu_test.hpp"
#include "test_seed.hpp"

namespace {

using megamoe::Nvfp4Tensor;
using megamoe::cuda::ActDtype;
using megamoe::cuda::DeviceBuffer;
using megamoe::cuda::Nvfp4ActQuantArgs;
using megamoe::cuda::Nvfp4ScaleMode;
using megamoe::cuda::Stream;

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// A [rows, cols] activation: `values` are exactly what the device reads
// (bf16 inputs are rounded to bf16 first, so the host sees the same numbers).
struct Problem {
  int64_t rows = 0, cols = 0;
  ActDtype dtype = ActDtype::kBf16;
  std::vector<float> values;
  std::vector<uint16_t> bf16;
};

using Generator = std::function<float(int64_t row, int64_t col, std::mt19937_64& rng)>;

Problem make_problem(int64_t rows, int64_t cols, ActDtype dtype, uint64_t seed, const Generator& gen) {
  Problem p{rows, cols, dtype, {}, {}};
  std::mt19937_64 rng(seed);
  p.values.resize(static_cast<size_t>(rows * cols));
  if (dtype == ActDtype::kBf16) p.bf16.resize(p.values.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      float v = gen(r, c, rng);
      if (dtype == ActDtype::kBf16) {
        p.bf16[i] = megamoe::f32_to_bf16(v);
        v = megamoe::bf16_to_f32(p.bf16[i]);
      }
      p.values[i] = v;
    }
  }
  return p;
}

// N(0, 1) scaled per row by 2^U(-12, 12): rows of very different magnitude.
Generator normal_rows() {
  return [scale = 0.0f, row = int64_t{-1}](int64_t r, int64_t, std::mt19937_64& rng) mutable {
    if (r != row) {
      row = r;
      scale = std::ldexp(1.0f, std::uniform_int_distribution<int>(-12, 12)(rng));
    }
    return std::normal_distribution<float>(0.0f, 1.0f)(rng) * scale;
  };
}

// Every element an independent +-m * 2^e over a huge exponent range, with
// exact zeros, negative zeros and FP32 subnormals sprinkled in.
Generator huge_range(int min_exp, int max_exp) {
  return [=](int64_t, int64_t, std::mt19937_64& rng) {
    const int kind = std::uniform_int_distribution<int>(0, 19)(rng);
    if (kind == 0) return 0.0f;
    if (kind == 1) return -0.0f;
    if (kind == 2) return std::ldexp(1.0f, -140) * (rng() % 2 ? -3.0f : 5.0f);  // subnormal
    const float m = std::uniform_real_distribution<float>(1.0f, 2.0f)(rng);
    const int e = std::uniform_int_distribution<int>(min_exp, max_exp)(rng);
    return std::ldexp(rng() % 2 ? -m : m, e);
  };
}

struct DeviceResult {
  std::vector<uint8_t> packed, scales;
  float global_scale = 0.0f, amax = 0.0f;
  uint32_t status = 0;
};

// Device buffers of one problem shape; inputs can be replaced (graph test).
class DeviceQuant {
 public:
  DeviceQuant(const Problem& p, cudaStream_t stream)
      : rows_(p.rows),
        cols_(p.cols),
        dtype_(p.dtype),
        stream_(stream),
        x_(static_cast<size_t>(p.rows * p.cols) * (p.dtype == ActDtype::kBf16 ? 2 : 4)),
        packed_(static_cast<size_t>(p.rows * p.cols / 2)),
        scales_(static_cast<size_t>(p.rows * p.cols / 16)),
        workspace_(megamoe::cuda::nvfp4_act_quant_workspace_bytes()),
        input_scale_(static_cast<size_t>(p.rows) * 4),
        global_scale_(4),
        amax_(4),
        status_(4) {
    upload_x(p);
    clear_outputs();
  }

  void upload_x(const Problem& p) {
    ASSERT_EQ(p.rows * p.cols, rows_ * cols_);
    if (dtype_ == ActDtype::kBf16)
      x_.upload(p.bf16.data(), p.bf16.size() * 2, stream_);
    else
      x_.upload(p.values.data(), p.values.size() * 4, stream_);
  }
  void upload_input_scales(const std::vector<float>& s) {
    input_scale_.upload(s.data(), s.size() * 4, stream_);
  }

  // Poisons the outputs so a byte the kernel fails to write cannot pass.
  void clear_outputs() {
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(packed_.get(), 0xA5, packed_.size(), stream_));
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(scales_.get(), 0xA5, scales_.size(), stream_));
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(workspace_.get(), 0xFF, workspace_.size(), stream_));
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(global_scale_.get(), 0xFF, 4, stream_));
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(amax_.get(), 0xFF, 4, stream_));
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(status_.get(), 0, 4, stream_));
  }

  Nvfp4ActQuantArgs args(Nvfp4ScaleMode mode) const {
    Nvfp4ActQuantArgs a;
    a.x = x_.get();
    a.dtype = dtype_;
    a.rows = rows_;
    a.cols = cols_;
    a.mode = mode;
    if (mode != Nvfp4ScaleMode::kDynamic) a.input_scale = input_scale_.as<float>();
    a.workspace = workspace_.get();
    a.workspace_bytes = workspace_.size();
    a.packed = packed_.as<uint8_t>();
    a.block_scales = scales_.as<uint8_t>();
    if (mode != Nvfp4ScaleMode::kPerRow) a.global_scale_out = global_scale_.as<float>();
    if (mode == Nvfp4ScaleMode::kDynamic) a.amax_out = amax_.as<float>();
    a.status = status_.as<uint32_t>();
    return a;
  }

  void run(Nvfp4ScaleMode mode) { megamoe::cuda::quantize_nvfp4_activation_cuda(args(mode), stream_); }

  DeviceResult result() const {
    DeviceResult r;
    r.packed.resize(packed_.size());
    r.scales.resize(scales_.size());
    packed_.download(r.packed.data(), r.packed.size(), stream_);
    scales_.download(r.scales.data(), r.scales.size(), stream_);
    global_scale_.download(&r.global_scale, 4, stream_);
    amax_.download(&r.amax, 4, stream_);
    status_.download(&r.status, 4, stream_);
    return r;
  }

 private:
  int64_t rows_, cols_;
  ActDtype dtype_;
  cudaStream_t stream_;
  DeviceBuffer x_, packed_, scales_, workspace_, input_scale_, global_scale_, amax_, status_;
};

// Byte-for-byte comparison that names the first difference.
void expect_same_bytes(const std::string& what, const std::vector<uint8_t>& got,
                       const std::vector<uint8_t>& want, int64_t bytes_per_row) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t mismatches = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++mismatches;
    }
  }
  if (mismatches == 0) return;
  ADD_FAILURE() << what << ": " << mismatches << " of " << got.size() << " bytes differ; first at row "
                << first / bytes_per_row << ", byte " << first % bytes_per_row << ": device 0x" << std::hex
                << int{got[static_cast<size_t>(first)]} << ", host 0x"
                << int{want[static_cast<size_t>(first)]};
}

void expect_matches_host(const std::string& what, const DeviceResult& dev, const Nvfp4Tensor& host) {
  expect_same_bytes(what + " packed", dev.packed, host.packed, host.cols / 2);
  expect_same_bytes(what + " block scales", dev.scales, host.block_scales, host.cols / 16);
  EXPECT_EQ(bits_of(dev.global_scale), bits_of(host.global_scale))
      << what << " global scale: device " << dev.global_scale << ", host " << host.global_scale;
  EXPECT_EQ(dev.status, 0u) << what;
}

float host_amax(const Problem& p) {
  float m = 0.0f;
  for (float v : p.values) m = std::max(m, std::fabs(v));
  return m;
}

std::string name_of(const Problem& p, const char* mode) {
  return megamoe::str_cat(p.dtype == ActDtype::kBf16 ? "bf16" : "fp32", " [", p.rows, ", ", p.cols, "] ",
                          mode);
}

// Dynamic (amax from the tensor) and given-scale runs of one problem vs host.
void check_problem(const Problem& p, cudaStream_t stream) {
  DeviceQuant dq(p, stream);
  dq.run(Nvfp4ScaleMode::kDynamic);
  const DeviceResult dyn = dq.result();
  const Nvfp4Tensor host_dyn = megamoe::quantize_nvfp4_activation(p.values.data(), p.rows, p.cols);
  expect_matches_host(name_of(p, "dynamic"), dyn, host_dyn);
  EXPECT_EQ(bits_of(dyn.amax), bits_of(host_amax(p))) << name_of(p, "dynamic amax");

  // A given scale 4x below the dynamic one: the largest blocks saturate at
  // scale 448 and codes +-6 (the clamp path).
  const float given = host_dyn.global_scale / 4.0f;
  dq.upload_input_scales({given});
  dq.clear_outputs();
  dq.run(Nvfp4ScaleMode::kTensor);
  const Nvfp4Tensor host_given = megamoe::quantize_nvfp4_activation(p.values.data(), p.rows, p.cols, given);
  expect_matches_host(name_of(p, "given scale"), dq.result(), host_given);
}

TEST(GpuNvfp4ActQuant, RandomShapesBf16MatchHostBytes) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  const int64_t shapes[][2] = {{1, 16},    {1, 4096},  {3, 48},   {7, 7168},   {5, 2048},
                               {64, 4096}, {33, 3072}, {257, 16}, {1000, 112}, {129, 7168}};
  MEGAMOE_SEED_TRACE();  // byte-exact for any input, so MEGAMOE_TEST_SEED may vary them
  uint64_t seed = ::megamoe::testing::seeded(1);
  for (const auto& s : shapes)
    check_problem(make_problem(s[0], s[1], ActDtype::kBf16, seed++, normal_rows()), stream.get());
}

TEST(GpuNvfp4ActQuant, RandomShapesFp32MatchHostBytes) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  const int64_t shapes[][2] = {{1, 16}, {1, 7168}, {3, 48}, {17, 2048}, {64, 4096}, {255, 160}};
  MEGAMOE_SEED_TRACE();  // byte-exact for any input, so MEGAMOE_TEST_SEED may vary them
  uint64_t seed = ::megamoe::testing::seeded(100);
  for (const auto& s : shapes)
    check_problem(make_problem(s[0], s[1], ActDtype::kF32, seed++, normal_rows()), stream.get());
}

TEST(GpuNvfp4ActQuant, LargeTensorsMatchHostBytes) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  // V4-Pro prefill activation (4096 x 7168 bf16, 58.7 MB > the 50 MB L2) and a
  // large fp32 one: many CTAs of both passes, grid-stride loops taken.
  check_problem(make_problem(4096, 7168, ActDtype::kBf16, 7, normal_rows()), stream.get());
  check_problem(make_problem(1024, 7168, ActDtype::kF32, 8, normal_rows()), stream.get());
}

TEST(GpuNvfp4ActQuant, HugeDynamicRangeAndSubnormals) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  // Exponents 2^-60..2^60 in one tensor: most blocks clamp at scale 2^-9 and
  // flush to code 0 / 0x8; fp32 subnormal elements included.
  check_problem(make_problem(37, 1024, ActDtype::kF32, 11, huge_range(-60, 60)), stream.get());
  check_problem(make_problem(37, 1024, ActDtype::kBf16, 12, huge_range(-60, 60)), stream.get());
  // Near FLT_MAX: c = 6 * s2 is huge, all arithmetic near overflow.
  check_problem(make_problem(9, 256, ActDtype::kF32, 13, huge_range(100, 127)), stream.get());
  // amax ~ 2^-118: s2 = amax / 2688 is an FP32 subnormal, so every division by
  // c and d works on subnormals (a flush-to-zero kernel would differ).
  check_problem(make_problem(9, 256, ActDtype::kF32, 14, huge_range(-140, -118)), stream.get());
  check_problem(make_problem(9, 256, ActDtype::kBf16, 15, huge_range(-133, -118)), stream.get());
}

TEST(GpuNvfp4ActQuant, NegativeZerosAndZeroRows) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  // Row 0 has the amax; rows 1, 4 all zero (+0 / -0); rows 2, 3 mix -0.0 with
  // tiny negatives that round to zero (code 0x8) and tiny positives (0x0).
  const Generator gen = [](int64_t r, int64_t c, std::mt19937_64& rng) {
    if (r == 0) return c == 5 ? 300.0f : std::normal_distribution<float>(0.0f, 1.0f)(rng);
    if (r == 1) return 0.0f;
    if (r == 4) return -0.0f;
    if (c % 16 == 0) return 96.0f;  // block amax: scale 1/ (6 * s2) units
    const int k = static_cast<int>(c % 4);
    return k == 0 ? -0.0f : k == 1 ? -1e-3f : k == 2 ? 1e-3f : -3.0f;
  };
  for (ActDtype dtype : {ActDtype::kBf16, ActDtype::kF32}) {
    const Problem p = make_problem(6, 64, dtype, 21, gen);
    check_problem(p, stream.get());
    // Spec (nvfp4-format.md §1.4): -0.0 -> code 0x0, a negative that rounds to
    // zero -> 0x8; an all-zero block gets scale 1.0 = 0x38.
    DeviceQuant dq(p, stream.get());
    dq.run(Nvfp4ScaleMode::kDynamic);
    const DeviceResult r = dq.result();
    for (int64_t b = 0; b < 64 / 16; ++b) {
      EXPECT_EQ(r.scales[static_cast<size_t>(1 * 4 + b)], 0x38) << "zero row 1, block " << b;
      EXPECT_EQ(r.scales[static_cast<size_t>(4 * 4 + b)], 0x38) << "-0 row 4, block " << b;
    }
    for (int64_t j = 0; j < 32; ++j) {
      EXPECT_EQ(r.packed[static_cast<size_t>(1 * 32 + j)], 0x00);
      EXPECT_EQ(r.packed[static_cast<size_t>(4 * 32 + j)], 0x00) << "-0.0 must give code 0x0";
    }
    // Row 2, element 4 is -0.0 (low nibble of byte 2), element 5 is -1e-3 (high nibble).
    EXPECT_EQ(r.packed[static_cast<size_t>(2 * 32 + 2)], 0x80);
  }
}

TEST(GpuNvfp4ActQuant, ExactTiesFollowTheSpecTable) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  // One element 2688 makes s2 = 2688 / 2688 = 1 exactly; every other block has
  // amax 6 * S for an E4M3 value S, so its scale is S and y = x / S is exact:
  // the elements sit exactly on the E2M1 rounding ties.
  const float kTies[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 0.125f, 5.5f, 0.5f};
  // Expected magnitude codes from the §1.4 table (RNE, ties to even codes).
  const uint8_t kTieCodes[] = {0, 2, 2, 4, 4, 6, 6, 0, 7, 1};
  const float kScales[] = {1.0f, 0.5f, 0.0625f, 448.0f, 1.5f, 0x1p-9f * 3.0f, 14.0f};
  const int64_t cols = 16 * 7;
  const Generator gen = [&](int64_t r, int64_t c, std::mt19937_64&) {
    if (r == 0 && c == 0) return 2688.0f;
    const float s = kScales[(c / 16) % 7];
    const int64_t i = c % 16;
    if (i == 15) return 6.0f * s;  // block amax -> scale byte = e4m3(s)
    const float tie = kTies[i % 10];
    return ((i + r) % 2 ? -tie : tie) * s;
  };
  for (ActDtype dtype : {ActDtype::kBf16, ActDtype::kF32}) {
    const Problem p = make_problem(5, cols, dtype, 0, gen);
    check_problem(p, stream.get());
    DeviceQuant dq(p, stream.get());
    dq.run(Nvfp4ScaleMode::kDynamic);
    const DeviceResult r = dq.result();
    EXPECT_EQ(r.global_scale, 1.0f);
    for (int64_t row = 1; row < 5; ++row) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = c % 16;
        const uint8_t byte = r.packed[static_cast<size_t>((row * cols + c) / 2)];
        const uint8_t code = c % 2 ? byte >> 4 : byte & 0xF;
        const uint8_t want = i == 15 ? 7 : kTieCodes[i % 10];
        // A negative that rounds to zero keeps its sign bit: code 0x8 (§1.4).
        const bool negative = i != 15 && (i + row) % 2;
        EXPECT_EQ(code, want | (negative ? 0x8 : 0x0)) << "row " << row << " col " << c;
      }
    }
  }
}

TEST(GpuNvfp4ActQuant, WorkedExampleFromModelOpt) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  // nvfp4-format.md §1.3: amax 7 -> s2 = fp32(7/2688), block scale 0x7E, and
  // 0.875 / fp32(448 * s2) = 0.74999994 rounds to 0.5 (code 1), not 1.0.
  for (ActDtype dtype : {ActDtype::kBf16, ActDtype::kF32}) {
    const Problem p = make_problem(1, 16, dtype, 0, [](int64_t, int64_t c, std::mt19937_64&) {
      return c == 0 ? 7.0f : c == 1 ? 0.875f : 0.0f;
    });
    check_problem(p, stream.get());
    DeviceQuant dq(p, stream.get());
    dq.run(Nvfp4ScaleMode::kDynamic);
    const DeviceResult r = dq.result();
    EXPECT_EQ(bits_of(r.global_scale), 0x3B2AAAABu);
    EXPECT_EQ(r.scales[0], 0x7E);
    EXPECT_EQ(r.packed[0], 0x17);  // element 0: 6.0 (code 7) low, element 1: 0.5 (code 1) high
  }
}

TEST(GpuNvfp4ActQuant, PerRowScalesMatchHostRowByRow) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  const Problem p = make_problem(23, 512, ActDtype::kBf16, 31, normal_rows());
  std::vector<float> scales(23);
  std::mt19937_64 rng(5);
  for (float& s : scales)
    s = std::ldexp(std::uniform_real_distribution<float>(1.0f, 2.0f)(rng),
                   -std::uniform_int_distribution<int>(2, 14)(rng));
  scales[7] = -1.0f;  // an unusable scale: that row becomes zeros, the status says so
  DeviceQuant dq(p, stream.get());
  dq.upload_input_scales(scales);
  dq.run(Nvfp4ScaleMode::kPerRow);
  const DeviceResult r = dq.result();
  EXPECT_EQ(r.status, megamoe::cuda::kNvfp4StatusBadGlobalScale);
  for (int64_t row = 0; row < p.rows; ++row) {
    const std::vector<uint8_t> packed(r.packed.begin() + row * 256, r.packed.begin() + (row + 1) * 256);
    const std::vector<uint8_t> blocks(r.scales.begin() + row * 32, r.scales.begin() + (row + 1) * 32);
    if (row == 7) {
      EXPECT_EQ(packed, std::vector<uint8_t>(256, 0));
      EXPECT_EQ(blocks, std::vector<uint8_t>(32, 0));
      EXPECT_THROW(megamoe::quantize_nvfp4_activation(p.values.data() + row * 512, 1, 512, scales[7]),
                   megamoe::Error);
      continue;
    }
    const Nvfp4Tensor host = megamoe::quantize_nvfp4_activation(p.values.data() + row * 512, 1, 512,
                                                                scales[static_cast<size_t>(row)]);
    expect_same_bytes(megamoe::str_cat("row ", row, " packed"), packed, host.packed, 256);
    expect_same_bytes(megamoe::str_cat("row ", row, " scales"), blocks, host.block_scales, 32);
  }
}

TEST(GpuNvfp4ActQuant, BadGlobalScaleAndNonFiniteInputSetStatus) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  // All-zero tensor: amax 0, the host throws; the device flags it and emits zeros.
  const Problem zeros =
      make_problem(3, 64, ActDtype::kBf16, 0, [](int64_t, int64_t, std::mt19937_64&) { return -0.0f; });
  EXPECT_THROW(megamoe::quantize_nvfp4_activation(zeros.values.data(), 3, 64), megamoe::Error);
  DeviceQuant dz(zeros, stream.get());
  dz.run(Nvfp4ScaleMode::kDynamic);
  DeviceResult r = dz.result();
  EXPECT_EQ(r.status, megamoe::cuda::kNvfp4StatusBadGlobalScale);
  EXPECT_EQ(r.packed, std::vector<uint8_t>(r.packed.size(), 0));
  EXPECT_EQ(r.scales, std::vector<uint8_t>(r.scales.size(), 0));
  EXPECT_EQ(bits_of(r.amax), 0u);
  EXPECT_EQ(bits_of(r.global_scale), 0u);

  // amax = the smallest subnormal: amax / 2688 underflows to 0 (host throws too).
  const Problem tiny = make_problem(1, 16, ActDtype::kF32, 0, [](int64_t, int64_t c, std::mt19937_64&) {
    return c == 3 ? std::numeric_limits<float>::denorm_min() : 0.0f;
  });
  EXPECT_THROW(megamoe::quantize_nvfp4_activation(tiny.values.data(), 1, 16), megamoe::Error);
  DeviceQuant dt(tiny, stream.get());
  dt.run(Nvfp4ScaleMode::kDynamic);
  EXPECT_EQ(dt.result().status, megamoe::cuda::kNvfp4StatusBadGlobalScale);

  // A given scale of 0 / NaN.
  const Problem normal = make_problem(2, 32, ActDtype::kF32, 3, normal_rows());
  for (float bad : {0.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    DeviceQuant dg(normal, stream.get());
    dg.upload_input_scales({bad});
    dg.run(Nvfp4ScaleMode::kTensor);
    r = dg.result();
    EXPECT_EQ(r.status, megamoe::cuda::kNvfp4StatusBadGlobalScale) << bad;
    EXPECT_EQ(r.scales, std::vector<uint8_t>(r.scales.size(), 0)) << bad;
  }

  // inf / NaN elements: dynamic -> both bits (the amax is not finite either);
  // given scale -> the non-finite bit only.
  for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::quiet_NaN()}) {
    for (ActDtype dtype : {ActDtype::kBf16, ActDtype::kF32}) {
      const Problem p = make_problem(4, 48, dtype, 4, [bad](int64_t r2, int64_t c, std::mt19937_64& rng) {
        return r2 == 2 && c == 17 ? bad : std::normal_distribution<float>(0.0f, 1.0f)(rng);
      });
      EXPECT_THROW(megamoe::quantize_nvfp4_activation(p.values.data(), 4, 48), megamoe::Error);
      DeviceQuant dn(p, stream.get());
      dn.run(Nvfp4ScaleMode::kDynamic);
      EXPECT_EQ(dn.result().status,
                megamoe::cuda::kNvfp4StatusNonFiniteInput | megamoe::cuda::kNvfp4StatusBadGlobalScale);
      dn.clear_outputs();
      dn.upload_input_scales({0.01f});
      dn.run(Nvfp4ScaleMode::kTensor);
      EXPECT_EQ(dn.result().status, megamoe::cuda::kNvfp4StatusNonFiniteInput);
    }
  }
}

TEST(GpuNvfp4ActQuant, AmaxIsDeterministicAcrossRuns) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  // The reduction is an integer max of |x| bits: identical on every run and
  // equal to the host max; the max element sits in a different CTA each time.
  for (int trial = 0; trial < 3; ++trial) {
    Problem p = make_problem(2048, 4096, ActDtype::kF32, 40 + trial, normal_rows());
    const size_t spike = (static_cast<size_t>(trial) * 2654435761u) % p.values.size();
    p.values[spike] = trial % 2 ? -1e6f : 1e6f;
    DeviceQuant dq(p, stream.get());
    const uint32_t want = bits_of(host_amax(p));
    for (int run = 0; run < 10; ++run) {
      dq.run(Nvfp4ScaleMode::kDynamic);
      const DeviceResult r = dq.result();
      ASSERT_EQ(bits_of(r.amax), want) << "trial " << trial << " run " << run;
      ASSERT_EQ(bits_of(r.global_scale), bits_of(1e6f / 2688.0f)) << "trial " << trial << " run " << run;
    }
  }
}

TEST(GpuNvfp4ActQuant, GraphCaptureReplaysWithNewInputs) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  const int64_t rows = 37, cols = 2048;
  Problem p = make_problem(rows, cols, ActDtype::kBf16, 50, normal_rows());
  DeviceQuant dq(p, stream.get());
  // Eager warm-up, as the engine does before capturing (it also caches the
  // launcher's occupancy query outside the capture).
  dq.run(Nvfp4ScaleMode::kDynamic);
  const DeviceResult eager = dq.result();
  expect_matches_host("eager", eager, megamoe::quantize_nvfp4_activation(p.values.data(), rows, cols));
  dq.clear_outputs();
  MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream.get()));

  cudaGraph_t graph = nullptr;
  MEGAMOE_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal));
  dq.run(Nvfp4ScaleMode::kDynamic);  // the launcher must neither sync nor allocate
  MEGAMOE_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  cudaGraphExec_t exec = nullptr;
  MEGAMOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));

  // Replay on the warm-up input: identical to the eager bytes.
  MEGAMOE_CUDA_CHECK(cudaGraphLaunch(exec, stream.get()));
  const DeviceResult first = dq.result();
  EXPECT_EQ(first.packed, eager.packed);
  EXPECT_EQ(first.scales, eager.scales);
  EXPECT_EQ(bits_of(first.global_scale), bits_of(eager.global_scale));
  EXPECT_EQ(bits_of(first.amax), bits_of(eager.amax));
  for (int replay = 0; replay < 4; ++replay) {
    p = make_problem(rows, cols, ActDtype::kBf16, 60 + replay, normal_rows());
    dq.upload_x(p);
    dq.clear_outputs();
    MEGAMOE_CUDA_CHECK(cudaGraphLaunch(exec, stream.get()));
    const DeviceResult r = dq.result();
    expect_matches_host(megamoe::str_cat("graph replay ", replay), r,
                        megamoe::quantize_nvfp4_activation(p.values.data(), rows, cols));
    EXPECT_EQ(bits_of(r.amax), bits_of(host_amax(p)));
  }
  MEGAMOE_CUDA_CHECK(cudaGraphExecDestroy(exec));
  MEGAMOE_CUDA_CHECK(cudaGraphDestroy(graph));
}

TEST(GpuNvfp4ActQuant, InvalidArgumentsThrowNamingTheField) {
  MEGAMOE_REQUIRE_GPU();
  Stream stream;  // created only once a device is known to exist
  const Problem p = make_problem(2, 32, ActDtype::kBf16, 1, normal_rows());
  DeviceQuant dq(p, stream.get());
  const auto expect_error = [&](Nvfp4ActQuantArgs a, const std::string& needle) {
    try {
      megamoe::cuda::quantize_nvfp4_activation_cuda(a, stream.get());
      ADD_FAILURE() << "no error for " << needle;
    } catch (const megamoe::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Nvfp4ActQuantArgs a = dq.args(Nvfp4ScaleMode::kDynamic);
  a.cols = 24;
  expect_error(a, "multiple of 16");
  a = dq.args(Nvfp4ScaleMode::kDynamic);
  a.x = nullptr;
  expect_error(a, "x is null");
  a = dq.args(Nvfp4ScaleMode::kDynamic);
  a.x = static_cast<const uint8_t*>(a.x) + 2;
  expect_error(a, "16-byte aligned");
  a = dq.args(Nvfp4ScaleMode::kDynamic);
  a.workspace_bytes = 16;
  expect_error(a, "workspace");
  a = dq.args(Nvfp4ScaleMode::kDynamic);
  a.packed = nullptr;
  expect_error(a, "packed is null");
  a = dq.args(Nvfp4ScaleMode::kTensor);
  a.input_scale = nullptr;
  expect_error(a, "input_scale is null");
  // rows == 0 is a no-op, not an error.
  a = dq.args(Nvfp4ScaleMode::kDynamic);
  a.rows = 0;
  EXPECT_NO_THROW(megamoe::cuda::quantize_nvfp4_activation_cuda(a, stream.get()));
  // The plan is printable.
  const auto launch = megamoe::cuda::plan_nvfp4_act_quant(dq.args(Nvfp4ScaleMode::kDynamic), 132, 8, 6);
  EXPECT_EQ(megamoe::cuda::describe_nvfp4_act_quant(dq.args(Nvfp4ScaleMode::kDynamic), launch),
            "nvfp4 act quant: bf16 [2, 32] dynamic -> amax grid 1 + quantize grid 1 x 256 threads");
  // Large shapes: one resident wave per kernel, partials capped at the workspace.
  a = dq.args(Nvfp4ScaleMode::kDynamic);
  a.rows = 4096;
  a.cols = 7168;
  const auto big = megamoe::cuda::plan_nvfp4_act_quant(a, 132, 8, 6);
  EXPECT_EQ(big.amax_grid, 1024);
  EXPECT_EQ(big.quantize_grid, 132 * 6);
}

}  // namespace
