// `megamoe tokenize` end to end: the binary against the tokenizers goldens.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "text_test_util.hpp"

namespace megamoe::text {
namespace {

using nlohmann::json;

// Runs the megamoe binary with `args`, feeding `input` on stdin; returns stdout
// and sets `status` to the exit code.
std::string run_cli(const std::string& args, const std::string& input, int& status) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string in_path = (dir / ("megamoe_cli_in_" + std::to_string(::getpid()))).string();
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

TEST(CliTokenize, EncodeAndDecodeMatchGoldens) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  (void)tok;
  const std::string flag = std::string("tokenize --tokenizer ") + testing::tokenizer_path();
  const json g = testing::load_golden("tokenizer_goldens.json");
  int checked = 0;
  for (const json& c : g["encode"]) {
    if (checked++ % 100) continue;  // a sample: each run loads the tokenizer
    int status = 0;
    const std::string out = run_cli(flag, c["text"].get<std::string>(), status);
    ASSERT_EQ(status, 0) << out;
    EXPECT_EQ(json::parse(out), c["ids"]) << c["text"];
    const std::string text = run_cli(flag + " --decode", c["ids"].dump(), status);
    ASSERT_EQ(status, 0) << text;
    EXPECT_EQ(text, c["text"].get<std::string>());
  }
}

TEST(CliTokenize, BadInputFailsWithAMessage) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  (void)tok;
  const std::string flag = std::string("tokenize --tokenizer ") + testing::tokenizer_path();
  int status = 0;
  std::string out = run_cli(flag, "bad \xFF byte", status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("not valid UTF-8"), std::string::npos) << out;
  out = run_cli(flag + " --decode", "[1, \"x\"]", status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("element 1"), std::string::npos) << out;
  out = run_cli(flag + " --max-bytes 4", "too long", status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("exceeds"), std::string::npos) << out;
  out = run_cli("tokenize --tokenizer /nonexistent.json", "x", status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("cannot open"), std::string::npos) << out;
}

}  // namespace
}  // namespace megamoe::text
