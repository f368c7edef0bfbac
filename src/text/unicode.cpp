#include "text/unicode.hpp"

#include <vector>

namespace megamoe::text {
namespace {

bool is_white_space(char32_t cp) {
  // The White_Space property (PropList.txt); stable across Unicode versions.
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// One byte per code point (1.1 MB), built once: the tokenizer looks up every
// character, so a flat table beats a binary search over the ranges.
const std::vector<std::uint8_t>& class_table() {
  static const std::vector<std::uint8_t> table = [] {
    std::vector<std::uint8_t> t(0x110000, 0);
    for (std::size_t i = 0; i < detail::kCategoryRangeCount; ++i) {
      const auto& r = detail::kCategoryRanges[i];
      for (std::uint32_t cp = r.first; cp <= r.last; ++cp) t[cp] = r.bits;
    }
    for (char32_t cp = 0; cp < 0x3001; ++cp) {
      if (is_white_space(cp)) t[cp] |= kWhiteSpace;
    }
    return t;
  }();
  return table;
}

}  // namespace

std::uint8_t char_class(char32_t cp) {
  static const std::uint8_t* table = class_table().data();
  return cp < 0x110000 ? table[cp] : 0;
}

const char* unicode_version() { return detail::kUnicodeVersion; }

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::size_t utf8_sequence_length(std::string_view s, std::size_t pos, std::size_t& maximal_subpart,
                                 bool& truncated) {
  truncated = false;
  maximal_subpart = 1;
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return 1;
  std::size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;  // C0, C1, F5..FF and stray continuation bytes
  }
  for (std::size_t k = 1; k < need; ++k) {
    if (pos + k >= s.size()) {
      truncated = true;
      maximal_subpart = k;
      return 0;
    }
    const auto b = static_cast<unsigned char>(s[pos + k]);
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) {
      maximal_subpart = k;
      return 0;
    }
  }
  return need;
}

std::size_t first_invalid_utf8(std::string_view s) {
  std::size_t pos = 0, subpart = 0;
  bool truncated = false;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const std::size_t n = utf8_sequence_length(s, pos, subpart, truncated);
    if (n == 0) return pos;
    pos += n;
  }
  return s.size();
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t pos = 0, subpart = 0;
  bool truncated = false;
  while (pos < bytes.size()) {
    const std::size_t n = utf8_sequence_length(bytes, pos, subpart, truncated);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      pos += subpart;
    } else {
      out.append(bytes.substr(pos, n));
      pos += n;
    }
  }
  return out;
}

}  // namespace megamoe::text
