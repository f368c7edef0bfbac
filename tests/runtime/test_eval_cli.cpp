// `megamoe eval` through the real binary (MEGAMOE_BINARY_PATH): a run on the
// demo model's golden windows reproduces transformers' perplexity and writes
// every number to --json; --text goes through the tokenizer; bad inputs end
// with exit code 1 and one line naming the problem. Also `--w4a4` on a
// checkpoint whose experts are not NVFP4, for eval, logits and generate.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_run.hpp"
#include "model/tiny_models.hpp"

namespace megamoe {
namespace {

namespace fs = std::filesystem;

using Result = testing::CliRun;  // stdout and stderr merged in `out`
Result run(const std::string& args) { return testing::run_megamoe_merged(args); }

const std::string kDemo = (fs::path(MEGAMOE_TEST_DATA_DIR) / ".." / ".." / "models" / "demo").string();
const std::string kTinyA = testing::tiny_model_dir("tiny-a").string();
const std::string kTinyText = testing::tiny_model_dir("tiny-text").string();
const std::string kTinyTokenizer = (testing::tiny_model_dir("tiny-tokenizer") / "tokenizer.json").string();

fs::path temp_file(const std::string& name, const std::string& content) {
  const fs::path p = fs::temp_directory_path() / ("megamoe-eval-cli-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

TEST(EvalCli, GoldenWindowsGiveTransformersPerplexity) {
  std::ifstream in(fs::path(MEGAMOE_TEST_DATA_DIR) / "demo" / "eval_golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  // The stream the first two windows came from: each window without its BOS,
  // plus one id (the protocol never starts a window at the stream's last id).
  std::string ids;
  for (int j = 0; j < 2; ++j) {
    const auto w = golden["window_ids"][j].get<std::vector<int32_t>>();
    for (size_t t = 1; t < w.size(); ++t) ids += std::to_string(w[t]) + " ";
  }
  ids += "1";
  const fs::path ids_file = temp_file("ids.txt", ids), json = temp_file("out.json", "");
  const Result r = run("eval --model " + kDemo + " --ids-file " + ids_file.string() + " --device cpu --batch 2 " +
                       "--reference " + kDemo + " --json " + json.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("ppl"), std::string::npos) << r.out;
  const nlohmann::json j = read_json(json);
  EXPECT_EQ(j["windows"], 2);
  EXPECT_EQ(j["tokens_scored"], 2 * 255);
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_EQ(j["moe_activations"], "w4a16");
  const auto sums = golden["window_nll_sums"].get<std::vector<double>>();
  const double expected_ppl = std::exp((sums[0] + sums[1]) / (2 * 255));
  // As test_demo_eval.cpp (NLL sums within 2e-5 relative of transformers'): the ppl of two windows within 1e-4.
  EXPECT_NEAR(j["ppl"].get<double>(), expected_ppl, 1e-4 * expected_ppl);
  EXPECT_EQ(j["kl"], 0.0);  // the model against itself
  EXPECT_EQ(j["top1_agreement"], 1.0);
  EXPECT_EQ(j["reference_scores"]["ppl"], j["ppl"]);
}

TEST(EvalCli, TextIsTokenizedIntoDocuments) {
  const fs::path text = temp_file("text.txt", "Once upon a time there was a model.\n\nIt read a book.\n\n");
  const fs::path json = temp_file("text.json", "");
  const Result r = run("eval --model " + kTinyText + " --tokenizer " + kTinyTokenizer + " --text " + text.string() +
                       " --window 4 --max-windows 2 --device cpu --json " + json.string());
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = read_json(json);
  EXPECT_EQ(j["windows"], 2);
  EXPECT_EQ(j["tokens_scored"], 2 * 3);
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  EXPECT_EQ(j["window_nll_sums"].size(), 2u);
}

struct BadCase {
  std::string args, needle;
};

TEST(EvalCli, BadInputsAreNamed) {
  const std::string text = temp_file("ok.txt", "Some words of text.\n").string();
  const std::string empty = temp_file("empty.txt", "").string();
  const std::string blank = temp_file("blank.txt", "\n\n  \n\n").string();
  const std::string ids = temp_file("ids.txt", "0 5 6 7 8 9 10").string();
  const std::string bad_ids = temp_file("bad-ids.txt", "0 5 6 999 8").string();
  const std::string demo_tok = kDemo + "/tokenizer.json";
  const std::string m = "eval --device cpu --model ";
  const BadCase cases[] = {
      {m + kTinyA, "give the evaluation text as --text or --ids-file"},
      {m + kTinyA + " --ids-file " + ids + " --text " + text, "one of them"},
      {m + kTinyA + " --text " + text, "--text needs --tokenizer"},
      {m + kTinyA + " --ids-file " + ids + " --tokenizer " + kTinyTokenizer, "--tokenizer is used only with --text"},
      {m + kTinyText + " --tokenizer " + kTinyTokenizer + " --text /nonexistent/held-out.txt", "/nonexistent/held-out.txt"},
      {m + kTinyText + " --tokenizer " + kTinyTokenizer + " --text " + empty, "the file is empty"},
      {m + kTinyText + " --tokenizer " + kTinyTokenizer + " --text " + blank, "no document"},
      {m + kTinyText + " --tokenizer " + kTinyTokenizer + " --text " + text + " --window 256",
       "holds no whole evaluation window"},
      {m + kTinyA + " --tokenizer " + demo_tok + " --text " + text, "more than the model's vocab_size"},
      {m + kTinyA + " --ids-file " + ids + " --window 1", "--window must be an integer in [2,"},
      {m + kDemo + " --ids-file " + ids + " --window 1024", "max_position_embeddings = 1024"},
      {m + kTinyA + " --ids-file " + ids + " --batch 0", "--batch must be an integer in [1,"},
      {m + kTinyA + " --ids-file " + bad_ids + " --window 2", "token id 999 at index 3"},
      {m + kTinyA + " --ids-file " + ids + " --window 2 --reference " + testing::tiny_model_dir("tiny-b").string(),
       "vocab_size"},
      {m + "/nonexistent/model --ids-file " + ids, "/nonexistent/model"},
      {m + kTinyA + " --ids-file " + ids + " --window 2 --w4a4", "W4A4 needs NVFP4 routed experts"},
  };
  for (const BadCase& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find("megamoe eval: error: "), std::string::npos) << r.out;
  }
}

TEST(W4a4Cli, NonNvfp4ExpertsAreRefused) {
  const std::string mxfp4 = testing::tiny_model_dir("tiny-a-mxfp4").string();
  const std::string out = temp_file("w4a4.npy", "").string();
  for (const std::string& args : {"logits --device cpu --w4a4 --model " + mxfp4 + " --ids 1,2,3 --out " + out,
                                  "generate --device cpu --w4a4 --model " + kTinyA + " --ids 1,2,3"}) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find("W4A4 needs NVFP4 routed experts"), std::string::npos) << r.out;
  }
  const Result ok = run("logits --device cpu --w4a4 --model " + testing::tiny_model_dir("tiny-a-nvfp4").string() +
                        " --ids 1,2,3 --out " + out);
  EXPECT_EQ(ok.code, 0) << ok.out;
}

}  // namespace
}  // namespace megamoe
