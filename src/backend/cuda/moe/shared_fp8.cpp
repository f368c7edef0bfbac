#include "backend/cuda/moe/shared_fp8.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/float_formats.hpp"

namespace megamoe::cuda {

std::vector<uint16_t> fp8_block128_to_bf16(const Fp8BlockMatrix& m, int rows, int cols, const std::string& name) {
  constexpr int kBlock = 128;
  MEGAMOE_CHECK(rows > 0 && cols > 0, "FP8 shared expert '", name, "': bad shape ", rows, "x", cols);
  const size_t n = static_cast<size_t>(rows) * cols;
  const size_t br = (rows + kBlock - 1) / kBlock, bc = (cols + kBlock - 1) / kBlock;
  MEGAMOE_CHECK(m.codes.size() == n, "FP8 shared expert '", name, "': ", m.codes.size(), " codes, expected ", rows,
                "x", cols);
  const bool e8m0 = !m.scales_e8m0.empty();
  MEGAMOE_CHECK(e8m0 != !m.scales_f32.empty(), "FP8 shared expert '", name,
                "': give exactly one of E8M0 or fp32 block scales");
  const size_t ns = e8m0 ? m.scales_e8m0.size() : m.scales_f32.size();
  MEGAMOE_CHECK(ns == br * bc, "FP8 shared expert '", name, "': ", ns, " block scales, expected ", br, "x", bc,
                " (one per 128x128 tile)");
  std::vector<float> scale(br * bc);
  for (size_t i = 0; i < scale.size(); ++i) {
    if (e8m0) {
      MEGAMOE_CHECK(m.scales_e8m0[i] != 0xff, "FP8 shared expert '", name, "': NaN E8M0 block scale at tile ", i);
      scale[i] = e8m0_to_f32(m.scales_e8m0[i]);
    } else {
      MEGAMOE_CHECK(std::isfinite(m.scales_f32[i]), "FP8 shared expert '", name, "': non-finite block scale at tile ", i);
      scale[i] = m.scales_f32[i];
    }
  }
  std::vector<uint16_t> out(n);
  for (int r = 0; r < rows; ++r) {
    const float* srow = scale.data() + (r / kBlock) * bc;
    for (int c = 0; c < cols; ++c) {
      const uint8_t q = m.codes[static_cast<size_t>(r) * cols + c];
      MEGAMOE_CHECK((q & 0x7f) != 0x7f, "FP8 shared expert '", name, "': NaN code at row ", r, " col ", c);
      out[static_cast<size_t>(r) * cols + c] = f32_to_bf16(e4m3_to_f32(q) * srow[c / kBlock]);
    }
  }
  return out;
}

}  // namespace megamoe::cuda
