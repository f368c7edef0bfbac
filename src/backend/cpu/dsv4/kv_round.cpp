#include "backend/cpu/dsv4/kv_round.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/moe.hpp"
#include "core/float_formats.hpp"

namespace megamoe::dsv4 {
namespace {

// Smallest power of two >= s (s a positive normal float), by its bits.
float pow2_ceil(float s) {
  uint32_t bits;
  std::memcpy(&bits, &s, 4);
  uint32_t out = bits & 0x7f800000u;
  if ((bits & 0x007fffffu) != 0) out += 0x00800000u;
  float r;
  std::memcpy(&r, &out, 4);
  return r;
}

}  // namespace

void round_kv_row(float* row, int64_t dim, int64_t rope_dim) {
  const int64_t nope = dim - rope_dim;
  for (int64_t b0 = 0; b0 < nope; b0 += 64) {
    const int64_t n = std::min<int64_t>(64, nope - b0);
    float amax = 0.f;
    for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(row[b0 + i]));
    const float scale = pow2_ceil(std::max(amax, 1e-4f) / 448.f);
    for (int64_t i = 0; i < n; ++i) row[b0 + i] = e4m3_to_f32(f32_to_e4m3(row[b0 + i] / scale)) * scale;
  }
  for (int64_t i = nope; i < dim; ++i) row[i] = cpu::round_to_bf16(row[i]);
}

}  // namespace megamoe::dsv4
