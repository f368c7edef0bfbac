// Hand-coded equivalents of the split regexes in DeepSeek's tokenizer.json
// pre-tokenizer sequence (std::regex is far too slow and knows no \p{..}).
// Each step splits every current piece with "Isolated" behaviour: matches and
// the gaps between them both become pieces, exactly as Hugging Face
// `tokenizers` (Oniguruma find_iter) does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace megamoe::text {

enum class SplitRule {
  kNumbers,      // \p{N}{1,3}
  kCjk,          // [\x{4e00}-\x{9fa5}\x{3040}-\x{309f}\x{30a0}-\x{30ff}]+
  kDeepSeekWords,  // the word/punctuation/whitespace alternation (see .cpp)
};

// Maps a Split pre-tokenizer regex from tokenizer.json to its hand-coded rule;
// throws megamoe::Error naming the pattern when it is not one we implement.
SplitRule split_rule_from_regex(const std::string& pattern);

class PreTokenizer {
 public:
  PreTokenizer() = default;
  explicit PreTokenizer(std::vector<SplitRule> rules) : rules_(std::move(rules)) {}

  // Splits valid UTF-8 `text` into pieces, as [begin, end) byte ranges.
  void split(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& pieces) const;
  std::vector<std::string> split(std::string_view text) const;

  const std::vector<SplitRule>& rules() const { return rules_; }

 private:
  std::vector<SplitRule> rules_;
};

}  // namespace megamoe::text
