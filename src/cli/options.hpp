// Strict parsing of numeric command-line values (CLI11 alone takes 0x10, wraps
// -1 into an unsigned seed and prints 300-digit bounds in its messages). Each
// value is a plain decimal literal, fully consumed and range-checked; an error
// names the option, the allowed range and the value (cut short).
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace megamoe::cli {

inline std::string option_value_for_message(const std::string& text) { return "'" + quote_for_message(text, 24) + "'"; }

inline bool is_decimal_integer(const std::string& text) {
  size_t i = text.size() > 1 && text[0] == '-' ? 1 : 0;
  if (i == text.size()) return false;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  return true;
}

inline int64_t parse_int_option(const std::string& option, const std::string& text, int64_t lo, int64_t hi) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  MEGAMOE_CHECK(is_decimal_integer(text) && ec == std::errc() && end == text.data() + text.size() && value >= lo &&
                    value <= hi,
                option, " must be an integer in [", lo, ", ", hi, "], got ", option_value_for_message(text));
  return value;
}

inline uint64_t parse_uint64_option(const std::string& option, const std::string& text) {
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  MEGAMOE_CHECK(is_decimal_integer(text) && text[0] != '-' && ec == std::errc() && end == text.data() + text.size(),
                option, " must be an integer in [0, ", UINT64_MAX, "], got ", option_value_for_message(text));
  return value;
}

// A finite decimal number in [lo, hi] ((lo, hi] when lo_open).
inline double parse_double_option(const std::string& option, const std::string& text, double lo, double hi,
                                  bool lo_open = false) {
  double value = 0.0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::general);
  const bool parsed = !text.empty() && ec == std::errc() && end == text.data() + text.size() && std::isfinite(value);
  char range[96];
  std::snprintf(range, sizeof range, "%s%g, %g]", lo_open ? "(" : "[", lo, hi);
  MEGAMOE_CHECK(parsed && value >= lo && value <= hi && !(lo_open && value == lo), option,
                " must be a finite number in ", range, ", got ", option_value_for_message(text));
  return value;
}

// --w4a4 (generate, logits, eval): the routed experts' activation format.
inline constexpr const char* kW4a4Help =
    "MoE W4A4: NVFP4 activations with the checkpoint's static input_scale (dynamic where it has none); NVFP4 "
    "experts only (default W4A16)";

}  // namespace megamoe::cli
