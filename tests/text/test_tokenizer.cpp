// The tokenizer against goldens from Hugging Face `tokenizers`
// (tools/make_tokenizer_goldens.py) on the real DeepSeek-V4 tokenizer.json.
#include <map>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "text/unicode.hpp"
#include "text_test_util.hpp"

namespace megamoe::text {
namespace {

using nlohmann::json;
using testing::load_golden;

const json& goldens() {
  static const json g = load_golden("tokenizer_goldens.json");
  return g;
}

TEST(Tokenizer, GoldenFileCoversTheIssueCategories) {
  std::map<std::string, int> per_category;
  for (const json& c : goldens()["encode"]) per_category[c["category"]]++;
  EXPECT_GE(goldens()["encode"].size(), 500u);
  for (const char* category : {"english", "code", "whitespace", "numbers", "cjk", "korean", "cyrillic", "greek", "emoji",
                               "combining", "special_tokens", "long_words"}) {
    EXPECT_GT(per_category[category], 0) << category;
  }
}

TEST(Tokenizer, EncodeMatchesTokenizersTokenForToken) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  int failures = 0, checked = 0;
  for (const json& c : goldens()["encode"]) {
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<TokenId>>();
    const auto actual = tok->encode(text);
    ++checked;
    if (actual != expected && ++failures <= 10) {
      ADD_FAILURE() << "category " << c["category"] << " text " << json(text).dump() << "\n expected "
                    << json(expected).dump() << "\n actual   " << json(actual).dump();
    }
  }
  EXPECT_EQ(failures, 0) << "of " << checked;
}

TEST(Tokenizer, PreTokenizerEquivalentToTheSplitRegexes) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  int failures = 0, checked = 0;
  for (const json& c : goldens()["encode"]) {
    if (!c.contains("pieces")) continue;
    const std::string text = c["text"];
    const auto expected = c["pieces"].get<std::vector<std::string>>();
    const auto actual = tok->pre_tokenize(text);
    ++checked;
    if (actual != expected && ++failures <= 10) {
      ADD_FAILURE() << "text " << json(text).dump() << "\n expected " << json(expected).dump() << "\n actual   "
                    << json(actual).dump();
    }
  }
  EXPECT_GE(checked, 500);
  EXPECT_EQ(failures, 0);
}

TEST(Tokenizer, DecodeRoundTripsEveryGoldenText) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  for (const json& c : goldens()["encode"]) {
    EXPECT_EQ(tok->decode(c["ids"].get<std::vector<TokenId>>()), c["text"].get<std::string>());
  }
}

TEST(Tokenizer, DecodeMatchesTokenizersOnInvalidUtf8AndSpecialTokens) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  int with_replacement = 0;
  for (const json& c : goldens()["decode"]) {
    const auto ids = c["ids"].get<std::vector<TokenId>>();
    const std::string expected = c["text"];
    EXPECT_EQ(tok->decode(ids), expected) << json(ids).dump();
    EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), c["text_skip_special"].get<std::string>()) << json(ids).dump();
    with_replacement += expected.find("\xEF\xBF\xBD") != std::string::npos;
  }
  EXPECT_GE(with_replacement, 20) << "the decode goldens must exercise invalid UTF-8";
}

TEST(Tokenizer, SpecialTokenIdsAndFlags) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  EXPECT_EQ(tok->token_to_id("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(tok->token_to_id("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tok->token_to_id("<think>"), 128821);
  EXPECT_TRUE(tok->is_special(0));
  EXPECT_FALSE(tok->is_special(128803));  // <｜User｜> is an added, non-special token
  EXPECT_EQ(tok->vocab_size(), 129280u);
}

TEST(Tokenizer, RejectsInvalidUtf8Input) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  try {
    tok->encode("abc\xC3(def");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("offset 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok->encode("\xED\xA0\x80"), Error);  // an encoded surrogate
  EXPECT_THROW(tok->encode("\xF4\x90\x80\x80"), Error);  // beyond U+10FFFF
  EXPECT_THROW(tok->encode("\xC0\xAF"), Error);  // overlong
}

TEST(Tokenizer, RejectsOversizedInput) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  Tokenizer& t = const_cast<Tokenizer&>(*tok);
  const std::size_t saved = t.max_input_bytes();
  t.set_max_input_bytes(100);
  try {
    t.encode(std::string(101, 'a'));
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the limit"), std::string::npos) << e.what();
  }
  EXPECT_EQ(t.encode(std::string(100, 'a')).empty(), false);
  t.set_max_input_bytes(saved);
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  EXPECT_THROW(tok->decode({5, -1}), Error);
  EXPECT_THROW(tok->decode({static_cast<TokenId>(tok->vocab_size())}), Error);
}

TEST(Utf8, LossyReplacesMaximalSubparts) {
  // Expected values from Python: bytes.decode("utf-8", errors="replace").
  EXPECT_EQ(utf8_lossy("a\x80z"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(utf8_lossy("\xE4\xB8"), "\xEF\xBF\xBD");              // truncated: one replacement
  EXPECT_EQ(utf8_lossy("\xE4\xB8x"), "\xEF\xBF\xBDx");
  EXPECT_EQ(utf8_lossy("\xF0\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // F0 80 is never valid
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(utf8_lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

}  // namespace
}  // namespace megamoe::text
