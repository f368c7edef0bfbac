// The demo tokenizer (models/demo/tokenizer.json, trained by tools/train_demo_tokenizer.py) against goldens
// from Hugging Face `tokenizers`: the whole held-out split of the demo corpus through `megamoe tokenize`, and
// paragraphs and special cases through the in-process tokenizer. Needs no fetched file.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "text_test_util.hpp"

namespace megamoe::text {
namespace {

using nlohmann::json;

const std::string kDemoTokenizer = std::string(MEGAMOE_TEST_DATA_DIR) + "/../../models/demo/tokenizer.json";

const json& goldens() {
  static const json g = testing::load_golden("demo_tokenizer_goldens.json");
  return g;
}

std::string run_cli(const std::string& args, const std::string& input, int& status) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string in_path = (dir / ("megamoe_demo_tok_in_" + std::to_string(::getpid()))).string();
  std::ofstream(in_path, std::ios::binary) << input;
  const std::string cmd = std::string(MEGAMOE_BINARY_PATH) + " " + args + " < " + in_path + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  status = WEXITSTATUS(::pclose(pipe));
  std::filesystem::remove(in_path);
  return out;
}

TEST(DemoTokenizer, HasTheDeepSeekSpecialTokens) {
  const Tokenizer tok = Tokenizer::from_file(kDemoTokenizer);
  EXPECT_EQ(tok.vocab_size(), goldens()["vocab_size"].get<std::size_t>());
  EXPECT_EQ(tok.encode("<｜begin▁of▁sentence｜>"), std::vector<TokenId>{0});
  EXPECT_EQ(tok.encode("<｜end▁of▁sentence｜>"), std::vector<TokenId>{1});
  for (const char* t : {"<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜", "<｜latest_reminder｜>"}) {
    EXPECT_EQ(tok.encode(t).size(), 1u) << t;
  }
}

TEST(DemoTokenizer, EncodeMatchesTokenizers) {
  const Tokenizer tok = Tokenizer::from_file(kDemoTokenizer);
  int failures = 0;
  for (const json& c : goldens()["encode"]) {
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<TokenId>>();
    const auto actual = tok.encode(text);
    if (actual != expected && ++failures <= 5) {
      ADD_FAILURE() << "text " << json(text).dump() << "\n expected " << json(expected).dump() << "\n actual   "
                    << json(actual).dump();
    }
    EXPECT_EQ(tok.decode(expected, /*skip_special=*/false), text);
  }
  EXPECT_EQ(failures, 0);
}

TEST(DemoTokenizer, CliEncodesTheHeldOutSplitLikeTokenizers) {
  const json& h = goldens()["heldout"];
  const std::string flag = "tokenize --tokenizer " + kDemoTokenizer;
  int status = 0;
  const std::string out = run_cli(flag, h["text"].get<std::string>(), status);
  ASSERT_EQ(status, 0) << out.substr(0, 2000);
  const auto actual = json::parse(out).get<std::vector<TokenId>>();
  const auto expected = h["ids"].get<std::vector<TokenId>>();
  ASSERT_EQ(actual.size(), expected.size());
  std::size_t first_diff = 0;
  while (first_diff < actual.size() && actual[first_diff] == expected[first_diff]) ++first_diff;
  EXPECT_EQ(first_diff, expected.size()) << "first differing token at " << first_diff;
  const std::string text = run_cli(flag + " --decode", h["ids"].dump(), status);
  ASSERT_EQ(status, 0) << text.substr(0, 2000);
  EXPECT_EQ(text, h["text"].get<std::string>());
}

}  // namespace
}  // namespace megamoe::text
