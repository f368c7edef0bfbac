#include "text/pre_tokenizer.hpp"

#include "core/error.hpp"
#include "text/unicode.hpp"

namespace megamoe::text {
namespace {

// The three patterns, as tokenizer.json spells them (after JSON unescaping).
constexpr std::string_view kNumbersRegex = "\\p{N}{1,3}";
constexpr std::string_view kCjkRegex = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+";
constexpr std::string_view kWordsRegex =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

// The text decoded once into code points with their class bits, so that every
// split step works on indices instead of re-decoding UTF-8.
struct Decoded {
  std::vector<char32_t> cps;
  std::vector<std::uint8_t> classes;
  std::vector<std::size_t> offsets;  // byte offset of each code point, plus the end
};

using Range = std::pair<std::size_t, std::size_t>;  // code-point indices

bool is_ascii_punct(char32_t c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}
bool is_ascii_letter(char32_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x3040 && c <= 0x309F) || (c >= 0x30A0 && c <= 0x30FF);
}
bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }

void emit(std::vector<Range>& out, std::size_t b, std::size_t e) {
  if (b < e) out.emplace_back(b, e);
}

void split_numbers(const Decoded& d, Range piece, std::vector<Range>& out) {
  std::size_t gap = piece.first, i = piece.first;
  while (i < piece.second) {
    if (!(d.classes[i] & kNumber)) {
      ++i;
      continue;
    }
    emit(out, gap, i);
    std::size_t j = i;
    while (j < piece.second && j - i < 3 && (d.classes[j] & kNumber)) ++j;
    out.emplace_back(i, j);
    i = gap = j;
  }
  emit(out, gap, piece.second);
}

void split_cjk(const Decoded& d, Range piece, std::vector<Range>& out) {
  std::size_t gap = piece.first, i = piece.first;
  while (i < piece.second) {
    if (!is_cjk(d.cps[i])) {
      ++i;
      continue;
    }
    emit(out, gap, i);
    std::size_t j = i;
    while (j < piece.second && is_cjk(d.cps[j])) ++j;
    out.emplace_back(i, j);
    i = gap = j;
  }
  emit(out, gap, piece.second);
}

// Length of the match of kWordsRegex at i (0 when none), taking the
// alternatives in order as Oniguruma's backtracking does:
//  a  [ASCII punct][A-Za-z]+
//  b  [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
//  c  ' '?[\p{P}\p{S}]+[\r\n]*
//  d  \s*[\r\n]+      -> whitespace up to and including the run's last CR/LF
//  e  \s+(?!\S)       -> the whole run at the end, else all but its last char
//  f  \s+
std::size_t match_words(const Decoded& d, std::size_t i, std::size_t end) {
  const char32_t c = d.cps[i];
  const std::uint8_t cls = d.classes[i];
  auto letter_or_mark = [&](std::size_t k) { return k < end && (d.classes[k] & (kLetter | kMark)); };
  auto punct_or_symbol = [&](std::size_t k) { return k < end && (d.classes[k] & (kPunctuation | kSymbol)); };

  if (is_ascii_punct(c) && i + 1 < end && is_ascii_letter(d.cps[i + 1])) {  // a
    std::size_t j = i + 1;
    while (j < end && is_ascii_letter(d.cps[j])) ++j;
    return j - i;
  }
  {  // b
    std::size_t start = i;
    if (!(cls & (kLetter | kPunctuation | kSymbol)) && !is_newline(c) && letter_or_mark(i + 1)) start = i + 1;
    if (start > i || letter_or_mark(i)) {
      std::size_t j = start;
      while (letter_or_mark(j)) ++j;
      return j - i;
    }
  }
  {  // c
    std::size_t j = i;
    if (c == ' ' && punct_or_symbol(i + 1)) ++j;
    if (punct_or_symbol(j)) {
      while (punct_or_symbol(j)) ++j;
      while (j < end && is_newline(d.cps[j])) ++j;
      return j - i;
    }
  }
  if (!(cls & kWhiteSpace)) return 0;
  std::size_t run_end = i;
  std::size_t last_newline = end;  // none
  while (run_end < end && (d.classes[run_end] & kWhiteSpace)) {
    if (is_newline(d.cps[run_end])) last_newline = run_end;
    ++run_end;
  }
  if (last_newline != end) return last_newline + 1 - i;  // d
  if (run_end == end) return run_end - i;                // e, at the end of the piece
  if (run_end - i >= 2) return run_end - i - 1;          // e, backtracked by one
  return run_end - i;                                    // f
}

void split_words(const Decoded& d, Range piece, std::vector<Range>& out) {
  std::size_t gap = piece.first, i = piece.first;
  while (i < piece.second) {
    const std::size_t n = match_words(d, i, piece.second);
    if (n == 0) {
      ++i;
      continue;
    }
    emit(out, gap, i);
    out.emplace_back(i, i + n);
    i = gap = i + n;
  }
  emit(out, gap, piece.second);
}

}  // namespace

SplitRule split_rule_from_regex(const std::string& pattern) {
  if (pattern == kNumbersRegex) return SplitRule::kNumbers;
  if (pattern == kCjkRegex) return SplitRule::kCjk;
  if (pattern == kWordsRegex) return SplitRule::kDeepSeekWords;
  MEGAMOE_THROW("unsupported Split pre-tokenizer regex '", pattern,
                "' (megamoe implements the DeepSeek byte-level BPE split patterns only)");
}

void PreTokenizer::split(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& pieces) const {
  thread_local Decoded d;
  thread_local std::vector<Range> current, next;
  d.cps.clear();
  d.classes.clear();
  d.offsets.clear();
  for (std::size_t pos = 0; pos < text.size();) {
    char32_t cp;
    const std::size_t n = decode_utf8(text, pos, cp);
    d.cps.push_back(cp);
    d.classes.push_back(char_class(cp));
    d.offsets.push_back(pos);
    pos += n;
  }
  d.offsets.push_back(text.size());

  current.clear();
  if (!d.cps.empty()) current.emplace_back(0, d.cps.size());
  for (const SplitRule rule : rules_) {
    next.clear();
    for (const Range& piece : current) {
      switch (rule) {
        case SplitRule::kNumbers: split_numbers(d, piece, next); break;
        case SplitRule::kCjk: split_cjk(d, piece, next); break;
        case SplitRule::kDeepSeekWords: split_words(d, piece, next); break;
      }
    }
    current.swap(next);
  }
  pieces.clear();
  for (const Range& r : current) pieces.emplace_back(d.offsets[r.first], d.offsets[r.second]);
}

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  split(text, ranges);
  std::vector<std::string> out;
  out.reserve(ranges.size());
  for (const auto& [b, e] : ranges) out.emplace_back(text.substr(b, e - b));
  return out;
}

}  // namespace megamoe::text
