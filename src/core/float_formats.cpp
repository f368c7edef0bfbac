#include "core/float_formats.hpp"

#include <bit>
#include <cmath>

namespace megamoe {
namespace {

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float float_of(uint32_t bits) { return std::bit_cast<float>(bits); }

// Round-to-nearest-even of a non-negative value v that is an exact FP32 and
// whose result fits in a uint32 (used for subnormal targets: v = |x| * 2^k).
uint32_t round_half_even(float v) {
  const float floor_v = std::floor(v);
  const float frac = v - floor_v;  // exact: v < 2^24 here
  uint32_t n = static_cast<uint32_t>(floor_v);
  if (frac > 0.5f || (frac == 0.5f && (n & 1u))) ++n;
  return n;
}

}  // namespace

float bf16_to_f32(uint16_t bits) { return float_of(static_cast<uint32_t>(bits) << 16); }

uint16_t f32_to_bf16(float x) {
  const uint32_t b = bits_of(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x0040u);
  // Adding 0x7FFF plus the lowest kept bit rounds half to even; a carry into
  // the exponent is the correct result (up to inf).
  const uint32_t rounded = b + 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu;
  const uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0x1F) return float_of(sign | 0x7F800000u | (mantissa << 13));
  if (exponent != 0) return float_of(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // Subnormal or zero: mantissa * 2^-24 is exact in FP32.
  const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  return sign ? -magnitude : magnitude;
}

uint16_t f32_to_f16(float x) {
  const uint32_t b = bits_of(x);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 (incl. inf)
  if (a >= 0x38800000u) {  // normal result (>= 2^-14)
    const uint32_t rounded = a + 0xFFFu + ((a >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
  }
  // Subnormal result: count of 2^-24 units, rounded half to even (1024 = min normal).
  return static_cast<uint16_t>(sign | round_half_even(std::ldexp(float_of(a), 24)));
}

float e4m3_to_f32(uint8_t bits) {
  const bool negative = bits & 0x80u;
  const uint32_t exponent = (bits >> 3) & 0xFu;
  const uint32_t mantissa = bits & 0x7u;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = float_of(0x7FC00000u);
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    magnitude = float_of(((exponent + 120u) << 23) | (mantissa << 20));
  }
  return negative ? -magnitude : magnitude;
}

uint8_t f32_to_e4m3(float x) {
  const uint32_t b = bits_of(x);
  const uint8_t sign = static_cast<uint8_t>((b >> 24) & 0x80u);
  const uint32_t a = b & 0x7FFFFFFFu;
  // PyTorch (c10::detail::fp8e4m3fn_from_fp32_value): anything >= 480 or NaN is
  // 0x7F; values in (464, 480) also reach 0x7F through ordinary rounding below.
  if (a >= 0x43F00000u) return static_cast<uint8_t>(sign | 0x7Fu);
  if (a < 0x3C800000u) {  // below 2^-6: subnormal grid of 2^-9 (8 = min normal 0x08)
    return static_cast<uint8_t>(sign | round_half_even(std::ldexp(float_of(a), 9)));
  }
  const uint32_t rounded = a + 0x7FFFFu + ((a >> 20) & 1u);
  return static_cast<uint8_t>(sign | ((rounded - (120u << 23)) >> 20));
}

float e8m0_to_f32(uint8_t bits) {
  if (bits == 0xFF) return float_of(0x7FC00000u);
  return std::ldexp(1.0f, static_cast<int>(bits) - 127);
}

float e2m1_to_f32(uint8_t code) {
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float magnitude = kMagnitude[code & 0x7u];
  return (code & 0x8u) ? -magnitude : magnitude;
}

uint8_t f32_to_e2m1(float y) {
  const uint8_t sign = y < 0.0f ? 0x8 : 0x0;
  const float a = std::fabs(y);
  uint8_t code;
  if (std::isnan(y)) code = 7;
  else if (a <= 0.25f) code = 0;  // ties (0.25, 1.25, 2.5, 5) go to the even code
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;
  else code = 7;  // saturation at 6
  return static_cast<uint8_t>(sign | code);
}

}  // namespace megamoe
