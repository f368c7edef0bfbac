#include "text/byte_level.hpp"

#include <array>

#include "text/unicode.hpp"

namespace megamoe::text {
namespace {

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<std::int16_t, 512> to_byte{};  // every alphabet code point is < 0x144
};

const Tables& tables() {
  static const Tables t = [] {
    Tables x;
    x.to_byte.fill(-1);
    // Printable bytes stand for themselves; the others are shifted to 256+n in
    // byte order, so the alphabet is all printable.
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
      x.to_char[b] = c;
      x.to_byte[c] = static_cast<std::int16_t>(b);
    }
    return x;
  }();
  return t;
}

}  // namespace

char32_t byte_to_char(std::uint8_t b) { return tables().to_char[b]; }

bool byte_level_to_bytes(std::string_view token, std::string& out) {
  const Tables& t = tables();
  for (std::size_t pos = 0; pos < token.size();) {
    char32_t cp;
    pos += decode_utf8(token, pos, cp);
    if (cp >= t.to_byte.size() || t.to_byte[cp] < 0) return false;
    out.push_back(static_cast<char>(t.to_byte[cp]));
  }
  return true;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) append_utf8(out, byte_to_char(static_cast<std::uint8_t>(c)));
  return out;
}

}  // namespace megamoe::text
