// Issue 14 for text inputs: `tokenize --max-bytes` holds while stdin is read
// (an endless stdin ends in an error, not a hang), encode() works in bounded
// chunks (memory within a small factor of the input; ids equal to the
// unchunked pre-tokenization), and tokenizer.json goes through the bounded
// reader and strict JSON.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.hpp"
#include "text_test_util.hpp"

namespace megamoe::text {
namespace {

const std::string kTinyTokenizer = std::string(MEGAMOE_TEST_DATA_DIR) + "/tiny-tokenizer/tokenizer.json";

struct ShellRun {
  int status;
  std::string output;
};

ShellRun shell(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  ShellRun r{-1, ""};
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof(buf), pipe)) r.output.append(buf, n);
  const int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(TokenizeLimits, MaxBytesHoldsWhileReadingAnEndlessStdin) {
  // The old reader took all of stdin first: `yes` never ends, so it hung (timeout's 124).
  const ShellRun r = shell("timeout 60 sh -c 'yes | " + std::string(MEGAMOE_BINARY_PATH) + " tokenize --tokenizer " +
                      kTinyTokenizer + " --max-bytes 100000' 2>&1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(r.output, "megamoe tokenize: error: stdin: the input exceeds the limit of 100000 bytes (--max-bytes)\n");
}

// Mixed text: words, numbers, CJK, punctuation, runs of spaces and newlines.
std::string mixed_text(std::size_t bytes) {
  const char* parts[] = {"The quick brown fox ", "jumps over 12345 lazy dogs. ", "  indented   code(x) {return y;}\n",
                         "\u4e2d\u6587\u6587\u672c\u3002", "\n\n\n", "tab\tseparated\tvalues\r\n", "\u00e9t\u00e9 na\u00efve ",
                         "'quoted' \"double\" ", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ", "   ", "x y z w v u "};
  std::string text;
  std::uint32_t state = 7;
  while (text.size() < bytes) text += parts[(state = state * 1664525u + 1013904223u) >> 28 & 0x7 ? (state >> 8) % 11 : 10];
  return text;
}

void expect_chunked_equals_whole(const Tokenizer& tok) {
  const std::string text = mixed_text(600000);  // ~10 chunks of 64 KiB
  std::vector<TokenId> expected;
  for (const std::string& piece : tok.pre_tokenize(text)) {  // one pre-tokenization of the whole text
    const std::vector<TokenId> ids = tok.encode(piece);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(tok.encode(text), expected);
}

TEST(EncodeChunks, GiveTheIdsOfTheWholeText) {
  expect_chunked_equals_whole(Tokenizer::from_file(kTinyTokenizer));
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  expect_chunked_equals_whole(*tok);
}

std::size_t vm_bytes() {
  std::ifstream in("/proc/self/statm");
  std::size_t pages = 0;
  in >> pages;
  return pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

TEST(EncodeMemory, StaysWithinASmallFactorOfTheInput) {
  MEGAMOE_REQUIRE_TOKENIZER(tok);
  constexpr std::size_t kInput = std::size_t{48} << 20;
  const std::string text = mixed_text(kInput);
  (void)tok->encode("warm up");
  // In a child, with the address space capped at what it has now plus 6x the input
  // (the ids alone take ~1.3x): the old encoder (~65x) cannot finish.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const rlimit limit{vm_bytes() + 6 * kInput + (std::size_t{64} << 20), RLIM_INFINITY};
    ::setrlimit(RLIMIT_AS, &limit);
    try {
      const std::vector<TokenId> ids = tok->encode(text);
      ::_exit(ids.size() > kInput / 10 ? 0 : 2);
    } catch (const std::bad_alloc&) {
      ::_exit(3);
    } catch (...) {
      ::_exit(4);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: out of memory within 6x the input";
}

TEST(TokenizerFile, GoesThroughTheBoundedReader) {
  const auto dir = std::filesystem::temp_directory_path() / ("megamoe_tok_limits_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / "tokenizer.json").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    (void)Tokenizer::from_file(fifo);
    ADD_FAILURE() << "a FIFO was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fifo + ": not a regular file (a FIFO)"), std::string::npos) << e.what();
  }
  std::string text = testing::read_file(kTinyTokenizer);
  text.insert(text.find('{') + 1, "\"version\": \"2.0\",");  // a second "version"
  try {
    (void)Tokenizer::from_json_text(text, "dup.json");
    ADD_FAILURE() << "a duplicate key was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the key 'version' appears twice"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace megamoe::text
