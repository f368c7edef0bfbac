#include "backend/cuda/moe/moe_repack.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

#include "core/error.hpp"
#include "core/float_formats.hpp"

namespace megamoe::cuda {
namespace {

// Runs f(e) for e in [0, n) on all hardware threads; rethrows the first error.
template <typename F>
void parallel_for(int n, F f) {
  const int threads = std::max(1, std::min<int>(n, static_cast<int>(std::thread::hardware_concurrency())));
  std::atomic<int> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  std::vector<std::thread> pool;
  for (int w = 0; w < threads; ++w)
    pool.emplace_back([&] {
      for (int e = next++; e < n && !failed; e = next++) {
        try {
          f(e);
        } catch (...) {
          if (!failed.exchange(true)) error = std::current_exception();
        }
      }
    });
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

// A block scale as sign, power-of-two exponent q and 3-bit mantissa: v = (-1)^neg 2^q (1 + m/8).
struct ScaleParts {
  bool zero = false, neg = false;
  int q = 0, m = 0;
};

ScaleParts split_scale(uint8_t byte, kernels::ExpertFormat format) {
  ScaleParts p;
  const float v = format == kernels::ExpertFormat::kMxfp4 ? e8m0_to_f32(byte) : e4m3_to_f32(byte);
  if (v == 0.0f) {
    p.zero = true;
    return p;
  }
  p.neg = v < 0.0f;
  int exp = 0;
  const double frac = std::frexp(std::fabs(double(v)), &exp);  // |v| = frac * 2^exp, frac in [0.5, 1)
  p.q = exp - 1;
  p.m = static_cast<int>(std::lround((frac * 2.0 - 1.0) * 8.0));  // exact: E4M3/E8M0 have <= 3 mantissa bits
  return p;
}

}  // namespace

RepackedMatrix repack_fp4_matrix(std::span<const uint8_t> q, std::span<const uint8_t> s, std::span<const float> global,
                                 int experts, int rows, int cols, kernels::ExpertFormat format,
                                 const std::string& name) {
  const int G = format == kernels::ExpertFormat::kMxfp4 ? 32 : 16;
  MEGAMOE_CHECK(rows % 16 == 0 && cols % 64 == 0, "repack ", name, ": shape ", rows, "x", cols,
                " must be a multiple of 16x64");
  const size_t row_bytes = cols / 2, row_scales = cols / G;
  const int NT = rows / 16, KC = cols / 64;
  const size_t per_expert_words = size_t(NT) * KC * 32 * 4, per_expert_scales = size_t(NT) * KC * 32;
  RepackedMatrix out;
  out.codes.resize(per_expert_words * experts);
  out.scales.resize(per_expert_scales * experts);
  out.epilogue.resize(experts);
  parallel_for(experts, [&](int e) {
    const uint8_t* qe = q.data() + size_t(e) * rows * row_bytes;
    const uint8_t* se = s.data() + size_t(e) * rows * row_scales;
    // Exponent window of this expert matrix.
    int q_min = 1 << 30, q_max = -(1 << 30);
    for (size_t i = 0; i < size_t(rows) * row_scales; ++i) {
      const uint8_t b = se[i];
      const bool nan = format == kernels::ExpertFormat::kMxfp4 ? b == 0xff : (b & 0x7f) == 0x7f;
      MEGAMOE_CHECK(!nan, "MoeLayer: ", name, " expert ", e, " has a NaN block scale (row ", i / row_scales, ")");
      const ScaleParts p = split_scale(b, format);
      if (p.zero) continue;
      q_min = std::min(q_min, p.q), q_max = std::max(q_max, p.q);
    }
    if (q_max < q_min) q_min = q_max = 0;  // all scales zero
    MEGAMOE_CHECK(q_max - q_min <= 30, "MoeLayer: ", name, " expert ", e, " block scales span 2^", q_max - q_min,
                  " (more than 2^30 is not supported by the repacked layout)");
    const int bias = 30 - q_max;  // exponent byte E' = q + bias in [0, 30]
    const float g = global.empty() ? 1.0f : global[e];
    out.epilogue[e] = g * std::ldexp(1.0f, q_max - 1);
    uint32_t* ce = out.codes.data() + size_t(e) * per_expert_words;
    uint16_t* sc = out.scales.data() + size_t(e) * per_expert_scales;
    auto nibble = [&](int r, int k, const ScaleParts& p) -> uint32_t {
      if (p.zero) return 0;
      const uint32_t code = (qe[size_t(r) * row_bytes + k / 2] >> ((k & 1) * 4)) & 15u;
      return p.neg ? code ^ 8u : code;
    };
    auto parts = [&](int r, int k) { return split_scale(se[size_t(r) * row_scales + k / G], format); };
    for (int rt = 0; rt < NT; ++rt)
      for (int c = 0; c < KC; ++c)
        for (int lane = 0; lane < 32; ++lane) {
          const int g8 = lane >> 2, t = lane & 3;
          const int r0 = rt * 16 + g8, r1 = r0 + 8, kg = c * 64 + 16 * t;
          const ScaleParts p0 = parts(r0, kg), p1 = parts(r1, kg);
          const size_t base = (size_t(rt) * KC + c) * 32 + lane;
          auto byte = [&](const ScaleParts& p) { return p.zero ? 0u : uint32_t((p.q + bias) << 3 | p.m); };
          sc[base] = static_cast<uint16_t>(byte(p0) | byte(p1) << 8);
          for (int j = 0; j < 4; ++j) {
            const int k0 = kg + 4 * j;
            // nibble i = low half of fragment register a_i, nibble i+4 = its high half.
            const uint32_t n[8] = {nibble(r0, k0, p0),     nibble(r1, k0, p1),     nibble(r0, k0 + 2, p0),
                                   nibble(r1, k0 + 2, p1), nibble(r0, k0 + 1, p0), nibble(r1, k0 + 1, p1),
                                   nibble(r0, k0 + 3, p0), nibble(r1, k0 + 3, p1)};
            uint32_t word = 0;
            for (int i = 0; i < 8; ++i) word |= n[i] << (4 * i);
            ce[base * 4 + j] = word;
          }
        }
  });
  return out;
}

std::vector<uint32_t> repack_bf16_matrix(std::span<const uint16_t> w, int rows, int cols) {
  MEGAMOE_CHECK(rows % 16 == 0 && cols % 64 == 0, "repack: bf16 shape ", rows, "x", cols,
                " must be a multiple of 16x64");
  const int NT = rows / 16, KC = cols / 64;
  std::vector<uint32_t> out(size_t(rows) * cols / 2);
  parallel_for(NT, [&](int rt) {
    for (int c = 0; c < KC; ++c)
      for (int j = 0; j < 4; ++j)
        for (int lane = 0; lane < 32; ++lane) {
          const int g8 = lane >> 2, t = lane & 3;
          const size_t r0 = rt * 16 + g8, r1 = r0 + 8, k0 = c * 64 + 16 * t + 4 * j;
          auto pair = [&](size_t r, size_t k) { return uint32_t(w[r * cols + k]) | uint32_t(w[r * cols + k + 1]) << 16; };
          uint32_t* dst = out.data() + ((((size_t(rt) * KC + c) * 4 + j) * 32 + lane) * 4);
          dst[0] = pair(r0, k0), dst[1] = pair(r1, k0), dst[2] = pair(r0, k0 + 2), dst[3] = pair(r1, k0 + 2);
        }
  });
  return out;
}

}  // namespace megamoe::cuda
