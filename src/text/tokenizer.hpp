// A Hugging Face tokenizer.json of the byte-level BPE family DeepSeek uses:
// added/special tokens split out first, the pre-tokenizer sequence (Split
// regexes + ByteLevel), BPE merges by rank, and the ByteLevel decoder. Encodes
// and decodes exactly as the `tokenizers` library does (tests/text goldens).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace megamoe::text {

using TokenId = std::int32_t;

// Byte range [begin, end) of a text.
struct TextRange {
  std::size_t begin = 0, end = 0;
};

struct AddedToken {
  TokenId id = 0;
  std::string content;
  bool special = false;     // dropped by decode(skip_special = true)
  bool normalized = false;  // matched after normalization (second pass)
};

class Tokenizer {
 public:
  // Default cap on the input of one encode() call; larger inputs are rejected.
  static constexpr std::size_t kDefaultMaxInputBytes = std::size_t{256} << 20;

  // Loads a tokenizer.json; throws megamoe::Error naming the file and field on
  // anything missing, malformed or unsupported.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json_text(std::string_view json_text, const std::string& origin = "<memory>");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of UTF-8 `text`. Added tokens (special ones included) in the
  // text are recognised; nothing is prepended or appended (no BOS). Throws on
  // invalid UTF-8 (naming the byte offset) and on inputs over max_input_bytes.
  // Working memory beyond the returned ids is bounded by an internal chunk of
  // 64 KiB (chunks end where the pre-tokenizer always splits, so the ids are
  // those of the whole text) and by the longest pre-tokenizer piece.
  std::vector<TokenId> encode(std::string_view text) const;
  // Like encode(text), except that added tokens are not recognised inside the
  // `plain` ranges (sorted, disjoint): their text is encoded as ordinary text, as
  // if it were split on its own from the surrounding text only where added tokens
  // are found outside the ranges. With no added-token text inside the ranges the
  // ids equal encode(text).
  std::vector<TokenId> encode(std::string_view text, std::span<const TextRange> plain) const;

  // Text of `ids` (invalid UTF-8 replaced by U+FFFD per maximal subpart).
  std::string decode(const std::vector<TokenId>& ids, bool skip_special = false) const;

  // The raw bytes one token stands for (may be a partial UTF-8 sequence).
  const std::string& token_bytes(TokenId id) const;

  // Id of an exact token string (vocabulary or added token), if any.
  std::optional<TokenId> token_to_id(std::string_view token) const;
  bool is_special(TokenId id) const;
  std::size_t vocab_size() const;  // one past the largest id
  const std::vector<AddedToken>& added_tokens() const;

  // The pre-tokenizer's pieces of `text` (without added-token splitting), as
  // raw UTF-8 strings; for tests proving equivalence with `tokenizers`.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  void set_max_input_bytes(std::size_t n);
  std::size_t max_input_bytes() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace megamoe::text
