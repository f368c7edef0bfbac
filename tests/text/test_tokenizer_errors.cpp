// Malformed tokenizer.json files are rejected with errors naming the field.
#include <functional>
#include <random>
#include <string>

#include "core/error.hpp"
#include "text/byte_level.hpp"
#include "text_test_util.hpp"
#include "test_seed.hpp"

namespace megamoe::text {
namespace {

using nlohmann::json;

// A tiny valid byte-level BPE: the 256 byte symbols, then "ab" and "abc".
json tiny_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bytes_to_byte_level(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  return json{
      {"version", "1.0"},
      {"added_tokens", json::array({json{{"id", 258}, {"content", "<|x|>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", json{{"type", "Sequence"},
                             {"pretokenizers", json::array({json{{"type", "ByteLevel"}, {"add_prefix_space", false},
                                                                 {"use_regex", false}}})}}},
      {"decoder", json{{"type", "ByteLevel"}}},
      {"model", json{{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b", "ab c"})}}}};
}

std::string load_error(const json& j) {
  try {
    Tokenizer::from_json_text(j.dump(), "tiny.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerErrors, TinyTokenizerWorks) {
  const Tokenizer t = Tokenizer::from_json_text(tiny_tokenizer().dump(), "tiny.json");
  EXPECT_EQ(t.encode("abcab<|x|>a"), (std::vector<TokenId>{257, 256, 258, 'a'}));
  EXPECT_EQ(t.decode({257, 258}), "abc<|x|>");
  EXPECT_EQ(t.decode({257, 258}, true), "abc");
}

TEST(TokenizerErrors, NamesTheProblem) {
  struct Case {
    const char* expect;
    std::function<void(json&)> mutate;
  };
  const std::vector<Case> cases = {
      {"model: missing", [](json& j) { j.erase("model"); }},
      {"unsupported model type 'WordPiece'", [](json& j) { j["model"]["type"] = "WordPiece"; }},
      {"model.vocab: missing", [](json& j) { j["model"].erase("vocab"); }},
      {"model.merges: missing", [](json& j) { j["model"].erase("merges"); }},
      {"model.merges[1]: expected \"left right\"", [](json& j) { j["model"]["merges"][1] = "abc"; }},
      {"model.merges[0]: token of", [](json& j) { j["model"]["merges"][0] = "q\xC3\xA9 zz"; }},
      {"merged token 'ca' not in the vocabulary", [](json& j) { j["model"]["merges"].push_back("c a"); }},
      {"model.merges[2]: expected a string or a pair", [](json& j) { j["model"]["merges"].push_back(5); }},
      {"used twice", [](json& j) { j["model"]["vocab"]["zz"] = 3; }},
      {"id is not an integer", [](json& j) { j["model"]["vocab"]["zz"] = "x"; }},
      {"model.byte_fallback", [](json& j) { j["model"]["byte_fallback"] = true; }},
      {"unsupported normalizer", [](json& j) { j["normalizer"] = json{{"type", "NFC"}}; }},
      {"unsupported Split pre-tokenizer regex", [](json& j) {
         j["pre_tokenizer"]["pretokenizers"].insert(j["pre_tokenizer"]["pretokenizers"].begin(),
             json{{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}, {"invert", false}});
       }},
      {"unsupported pre-tokenizer", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["type"] = "Whitespace"; }},
      {"use_regex=true", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["use_regex"] = true; }},
      {"unsupported decoder", [](json& j) { j["decoder"] = json{{"type", "WordPiece"}}; }},
      {"added_tokens[0].content: missing", [](json& j) { j["added_tokens"][0].erase("content"); }},
      {"added_tokens[0].id", [](json& j) { j["added_tokens"][0]["id"] = -4; }},
      {"added_tokens[0].lstrip", [](json& j) { j["added_tokens"][0]["lstrip"] = true; }},
  };
  for (const Case& c : cases) {
    json j = tiny_tokenizer();
    c.mutate(j);
    const std::string error = load_error(j);
    EXPECT_NE(error.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in '" << error << "'";
    EXPECT_NE(error.find("tiny.json"), std::string::npos) << error;
  }
}

TEST(TokenizerErrors, NotJsonAndMissingFile) {
  EXPECT_THROW(Tokenizer::from_json_text("{\"model\": ", "cut.json"), Error);
  EXPECT_THROW(Tokenizer::from_json_text("[1, 2]", "list.json"), Error);
  try {
    Tokenizer::from_file("/nonexistent/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.json: cannot open"), std::string::npos);
  }
}

// Randomly corrupted files either load or throw megamoe::Error; never crash.
TEST(TokenizerErrors, RandomCorruptionIsRejectedCleanly) {
  MEGAMOE_SEED_TRACE();
  const std::string good = tiny_tokenizer().dump();
  std::mt19937 rng(::megamoe::testing::seeded(7));
  int rejected = 0;
  for (int i = 0; i < 300; ++i) {
    std::string s = good;
    for (int k = 0; k < 3; ++k) s[rng() % s.size()] = static_cast<char>(rng() % 128);
    try {
      const Tokenizer t = Tokenizer::from_json_text(s, "fuzz.json");
      (void)t.encode("abc abc");
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace megamoe::text
