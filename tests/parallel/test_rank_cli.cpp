// `megamoe generate` over ranks (--ranks on the CPU, --devices for GPUs):
// the printed ids equal one rank's, and bad values end with one clear line
// and exit code 1.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "cli_run.hpp"
#include "model/tiny_models.hpp"

namespace megamoe {
namespace {

struct Result {
  int code;
  std::string stdout_text;  // stderr goes to its own string: progress lines stay out of the ids
  std::string stderr_text;
};

Result run(const std::string& args) {
  const testing::CliRun r = testing::run_megamoe(args);
  return {r.code, r.out, r.err};
}

std::string generate(const char* model, const std::string& extra) {
  return "generate --model " + testing::tiny_model_dir(model).string() +
         " --ids 3,17,42,7 --max-new-tokens 32 --ignore-eos --device cpu " + extra;
}

TEST(RankCli, GenerateOnTwoAndThreeCpuRanksPrintsOneRanksIds) {
  for (const auto& [model, ranks] : {std::pair{"tiny-a", "2"}, std::pair{"tiny-b-fp8", "3"}}) {
    const Result one = run(generate(model, ""));
    const Result many = run(generate(model, std::string("--ranks ") + ranks));
    ASSERT_EQ(one.code, 0) << one.stderr_text;
    ASSERT_EQ(many.code, 0) << many.stderr_text;
    EXPECT_FALSE(one.stdout_text.empty());
    EXPECT_EQ(many.stdout_text, one.stdout_text) << model << " on " << ranks << " ranks";
  }
}

TEST(RankCli, BadRankValuesAreOneLineErrors) {
  const auto expect_error = [](const std::string& args, const std::string& words) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 1) << args;
    EXPECT_NE(r.stderr_text.find(words), std::string::npos) << args << ": " << r.stderr_text;
  };
  expect_error(generate("tiny-c", "--ranks 2"), "o_groups = 1 is not a multiple of 2");
  expect_error(generate("tiny-a", "--ranks 0"), "--ranks must be an integer in [1, 64]");
  expect_error(generate("tiny-a", "--ranks two"), "--ranks must be an integer");
  expect_error(generate("tiny-a", "--devices 2"), "--devices lists CUDA devices; use --ranks N");
  expect_error("generate --model " + testing::tiny_model_dir("tiny-a").string() +
                   " --ids 1,2 --device cuda --devices 0,0",
               "--devices lists device 0 twice");
}

}  // namespace
}  // namespace megamoe
