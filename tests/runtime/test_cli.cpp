// `megamoe logits` and `megamoe generate` through the real binary
// (MEGAMOE_BINARY_PATH): the .npy they write matches the transformers golden,
// greedy output is deterministic, sampling reproduces by seed, and bad input
// fails with exit code 1 and a message naming the problem.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/npy.hpp"
#include "model/tiny_models.hpp"

namespace megamoe {
namespace {

struct Result {
  int code;
  std::string output;  // stdout + stderr
};

Result run(const std::string& args) {
  const std::string cmd = std::string(MEGAMOE_BINARY_PATH) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string out;
  std::array<char, 512> buf;
  while (fgets(buf.data(), buf.size(), pipe) != nullptr) out += buf.data();
  const int status = pclose(pipe);
  return {WEXITSTATUS(status), out};
}

std::string ids_arg(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

const std::string kTinyA = testing::tiny_model_dir("tiny-a").string();

TEST(Cli, LogitsWritesGoldenMatchingNpyInEveryMode) {
  const auto ids = testing::golden_ids("tiny-a");
  const NpyArray golden = testing::golden_logits("tiny-a");
  for (const std::string mode : {"prefill", "decode", "chunked:5"}) {
    const auto out = std::filesystem::temp_directory_path() / "megamoe-cpu-engine-cli.npy";
    const Result r = run("logits --model " + kTinyA + " --ids " + ids_arg(ids) + " --out " + out.string() +
                         " --mode " + mode);
    ASSERT_EQ(r.code, 0) << r.output;
    const NpyArray got = read_npy_f32(out);
    EXPECT_EQ(got.shape, golden.shape);
    EXPECT_LE(testing::max_abs_diff(got.data, golden.data), 1e-4f * std::max(1.f, testing::max_abs(golden.data)))
        << mode;
  }
}

TEST(Cli, LogitsDoNotDependOnTheThreadCount) {
  const auto ids = ids_arg(testing::golden_ids("tiny-b"));
  const std::string model = testing::tiny_model_dir("tiny-b").string();
  const auto one = std::filesystem::temp_directory_path() / "megamoe-cpu-engine-t1.npy";
  const auto many = std::filesystem::temp_directory_path() / "megamoe-cpu-engine-t3.npy";
  // MEGAMOE_THREADS is read by ThreadPool::global(); the prefix applies to the binary only.
  const std::string cmd = "env MEGAMOE_THREADS=3 " + std::string(MEGAMOE_BINARY_PATH) + " logits --model " + model +
                          " --ids " + ids + " --out " + many.string() + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const auto env1 = "env MEGAMOE_THREADS=1 " + std::string(MEGAMOE_BINARY_PATH) + " logits --model " + model +
                    " --ids " + ids + " --out " + one.string() + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(env1.c_str()), 0);
  EXPECT_EQ(read_npy_f32(one).data, read_npy_f32(many).data) << "bitwise equal for 1 and 3 threads";
}

TEST(Cli, LogitsDumpsActivations) {
  const auto dir = std::filesystem::temp_directory_path() / "megamoe-cpu-engine-dumps";
  std::filesystem::remove_all(dir);
  const Result r = run("logits --model " + kTinyA + " --ids 1,2,3,4,5 --out " + (dir / "l.npy").string() +
                       " --dump-dir " + dir.string());
  ASSERT_EQ(r.code, 0) << r.output;
  const NpyArray q = read_npy_f32(dir / "layers.1.attn.q.npy");
  EXPECT_EQ(q.shape, (Shape{5, 4, 32}));
  EXPECT_TRUE(std::filesystem::exists(dir / "layers.4.streams.npy"));
}

TEST(Cli, GenerateGreedyIsDeterministicAndSamplingFollowsTheSeed) {
  const std::string base = "generate --model " + kTinyA + " --ids 0,5,7 --max-new-tokens 16 --ignore-eos";
  const Result a = run(base), b = run(base);
  ASSERT_EQ(a.code, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_EQ(std::count(a.output.begin(), a.output.end(), ','), 15) << a.output;
  const std::string sampled = base + " --temperature 1.5 --top-k 50 --top-p 0.95";
  const Result s1 = run(sampled + " --seed 1"), s2 = run(sampled + " --seed 1"), s3 = run(sampled + " --seed 2");
  ASSERT_EQ(s1.code, 0) << s1.output;
  EXPECT_EQ(s1.output, s2.output);
  EXPECT_NE(s1.output, s3.output);
}

TEST(Cli, BadInputFailsWithAClearMessage) {
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"logits --model " + kTinyA + " --ids 3,500 --out /tmp/x.npy", "token id 500 at index 1 is outside"},
      {"logits --model " + kTinyA + " --ids '' --out /tmp/x.npy", "--ids"},
      {"logits --model " + kTinyA + " --ids 1,a --out /tmp/x.npy", "'a' is not a token id"},
      {"logits --model " + kTinyA + " --ids 1 --out /tmp/x.npy --mode chunked:0", "chunk size"},
      {"logits --model /nonexistent/dir --ids 1 --out /tmp/x.npy", "/nonexistent/dir"},
      {"generate --model " + kTinyA + " --ids 1,128", "outside the vocabulary"},
      {"generate --model " + kTinyA + " --ids 1 --top-p 0", "top_p"},
  };
  for (const Case& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace megamoe
