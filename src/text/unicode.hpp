// Unicode helpers for the tokenizer: UTF-8 decoding/validation, the lossy
// decoding Hugging Face `tokenizers` applies (String::from_utf8_lossy), and the
// general-category classes its split regexes use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace megamoe::text {

// Category classes, as bits (a code point is in at most one of L/M/N/P/S).
enum CharClass : std::uint8_t {
  kLetter = 1,       // \p{L}
  kMark = 2,         // \p{M}
  kNumber = 4,       // \p{N}
  kPunctuation = 8,  // \p{P}
  kSymbol = 16,      // \p{S}
  kWhiteSpace = 32,  // \s (the Unicode White_Space property, as Oniguruma uses)
};

// Class bits of a code point; 0 for anything outside the classes above.
std::uint8_t char_class(char32_t cp);

// The Unicode version the category tables were generated from.
const char* unicode_version();

// Decodes one UTF-8 scalar at s[pos]; returns its length (1..4) and sets cp.
// Input must be valid UTF-8 (see is_valid_utf8).
inline std::size_t decode_utf8(std::string_view s, std::size_t pos, char32_t& cp) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) { cp = b0; return 1; }
  if (b0 < 0xE0) {
    cp = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(s[pos + 1]) & 0x3Fu);
    return 2;
  }
  if (b0 < 0xF0) {
    cp = ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[pos + 1]) & 0x3Fu) << 6) |
         (static_cast<unsigned char>(s[pos + 2]) & 0x3Fu);
    return 3;
  }
  cp = ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(s[pos + 1]) & 0x3Fu) << 12) |
       ((static_cast<unsigned char>(s[pos + 2]) & 0x3Fu) << 6) | (static_cast<unsigned char>(s[pos + 3]) & 0x3Fu);
  return 4;
}

void append_utf8(std::string& out, char32_t cp);

// Length of the well-formed UTF-8 sequence at s[pos] (Unicode table 3-7), or 0
// when the bytes there are not a complete well-formed sequence. When 0,
// `maximal_subpart` receives the length of the maximal subpart to replace by
// one U+FFFD (>= 1), and `truncated` whether the sequence is a valid prefix cut
// off by the end of the input.
std::size_t utf8_sequence_length(std::string_view s, std::size_t pos, std::size_t& maximal_subpart,
                                 bool& truncated);

// Byte offset of the first ill-formed byte, or s.size() when s is valid UTF-8.
std::size_t first_invalid_utf8(std::string_view s);
inline bool is_valid_utf8(std::string_view s) { return first_invalid_utf8(s) == s.size(); }

// Replaces each maximal ill-formed subpart by U+FFFD, like Rust's
// String::from_utf8_lossy and Python's bytes.decode(errors="replace").
std::string utf8_lossy(std::string_view bytes);

namespace detail {
struct CategoryRange {
  std::uint32_t first;
  std::uint32_t last;
  std::uint8_t bits;
};
extern const CategoryRange kCategoryRanges[];
extern const std::size_t kCategoryRangeCount;
extern const char* const kUnicodeVersion;
}  // namespace detail

}  // namespace megamoe::text
