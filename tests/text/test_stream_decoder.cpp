// Streaming detokenization: deltas never split a UTF-8 character, add up to
// Tokenizer::decode (whose goldens come from `tokenizers`), stop strings and
// EOS end the stream cleanly.
#include <string>
#include <vector>

#include "text/stream_decoder.hpp"
#include "text/unicode.hpp"
#include "text_test_util.hpp"

namespace megamoe::text {
namespace {

using nlohmann::json;

TEST(StreamDecoder, DeltasAreWholeCharactersAndAddUpToDecode) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  const json g = testing::load_golden("tokenizer_goldens.json");
  int checked = 0;
  for (const json* list : {&g["encode"], &g["decode"]}) {
    for (const json& c : *list) {
      const auto ids = c["ids"].get<std::vector<TokenId>>();
      StreamDecoder stream(*tok, {});
      std::string all;
      for (const TokenId id : ids) {
        const std::string delta = stream.push(id);
        EXPECT_TRUE(is_valid_utf8(delta)) << json(ids).dump();
        all += delta;
      }
      all += stream.finish();
      EXPECT_EQ(all, tok->decode(ids)) << json(ids).dump();
      ++checked;
    }
  }
  EXPECT_GT(checked, 600);
}

TEST(StreamDecoder, HoldsAnIncompleteCharacterUntilItCompletes) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  // Byte-level tokens of CJK text often end inside a character.
  const auto ids = tok->encode("中中");
  StreamDecoder stream(*tok, {});
  std::string out;
  for (const TokenId id : ids) out += stream.push(id);
  out += stream.finish();
  EXPECT_EQ(out, "中中");
}

TEST(StreamDecoder, StopStringEndsTheStreamWithoutPrintingIt) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  const auto ids = tok->encode("Hello world. STOP here, not shown.");
  StreamOptions opt;
  opt.stop_strings = {"STOP"};
  StreamDecoder stream(*tok, opt);
  std::string out;
  for (const TokenId id : ids) {
    const std::string d = stream.push(id);
    EXPECT_EQ(d.find('S'), std::string::npos) << "a prefix of the stop string leaked: " << d;
    out += d;
  }
  out += stream.finish();
  EXPECT_EQ(out, "Hello world. ");
  EXPECT_EQ(stream.status(), StreamStatus::kStoppedByString);
  EXPECT_EQ(stream.matched_stop(), "STOP");
}

TEST(StreamDecoder, HeldBackPrefixIsReleasedWhenItIsNotAStop) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  StreamOptions opt;
  opt.stop_strings = {"\n\nUser:"};
  StreamDecoder stream(*tok, opt);
  std::string out;
  for (const TokenId id : tok->encode("a\n\nb")) out += stream.push(id);
  out += stream.finish();
  EXPECT_EQ(out, "a\n\nb");
  EXPECT_EQ(stream.status(), StreamStatus::kStoppedByEos);
}

TEST(StreamDecoder, EosEndsCleanlyAndFlushesAPartialCharacter) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  const TokenId eos = *tok->token_to_id("<｜end▁of▁sentence｜>");
  StreamOptions opt;
  opt.eos_ids = {eos};
  StreamDecoder stream(*tok, opt);
  std::string out;
  for (const TokenId id : tok->encode("ok")) out += stream.push(id);
  // The first byte of "中" alone (a byte-level token), then EOS.
  const auto e4 = tok->token_to_id("\xC3\xA4");  // 'ä' is the byte-level symbol of 0xE4
  ASSERT_TRUE(e4.has_value());
  out += stream.push(*e4);
  EXPECT_EQ(out, "ok");  // held back: could still become a character
  out += stream.push(eos);
  EXPECT_EQ(out, "ok\xEF\xBF\xBD");
  EXPECT_TRUE(stream.stopped());
  EXPECT_EQ(stream.push(*tok->token_to_id("a")), "");  // ignored after the end
}

TEST(StreamDecoder, SkipsSpecialTokensWhenAsked) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  StreamOptions opt;
  opt.skip_special = true;
  StreamDecoder stream(*tok, opt);
  std::string out = stream.push(0);  // BOS
  for (const TokenId id : tok->encode("hi")) out += stream.push(id);
  out += stream.finish();
  EXPECT_EQ(out, "hi");
}

}  // namespace
}  // namespace megamoe::text
