// `megamoe inspect` through the real binary: describes the shipped tiny
// checkpoints and checkpoints built here, and turns every kind of malformed
// input into exit code 1 with one line "megamoe inspect: error: <file>: <problem>".
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "core/tiny_checkpoint.hpp"

namespace megamoe {
namespace {

using testing::ExpertStorage;
using testing::kConfigDir;

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

RunResult run_inspect(const std::filesystem::path& dir) {
  const std::string command = std::string("'") + MEGAMOE_BINARY_PATH + "' inspect '" + dir.string() + "' 2>&1";
  RunResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

class InspectCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("megamoe_test_inspect_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    config_ = load_model_config(kConfigDir / "tiny-upstream.json");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void write_valid(int shards = 1) {
    testing::write_checkpoint(dir_, kConfigDir / "tiny-upstream.json",
                              testing::tiny_upstream_tensors(config_, ExpertStorage::kNvfp4), shards);
  }

  // Replaces model.safetensors by <8-byte LE length><header><data_size zero bytes>.
  void write_raw_file(const std::string& header, size_t data_size, std::optional<uint64_t> length = std::nullopt) {
    std::ofstream out(dir_ / "model.safetensors", std::ios::binary | std::ios::trunc);
    uint64_t n = length.value_or(header.size());
    for (int i = 0; i < 8; ++i, n >>= 8) out.put(static_cast<char>(n & 0xff));
    out << header << std::string(data_size, '\0');
  }

  // Exit code 1, exactly one line, prefixed, naming `file`, containing `problem`.
  void expect_one_line_error(const std::filesystem::path& file, const std::string& problem) {
    const RunResult result = run_inspect(dir_);
    EXPECT_EQ(result.exit_code, 1) << result.output;
    const std::string expected_start = "megamoe inspect: error: " + file.string() + ": ";
    EXPECT_EQ(result.output.rfind(expected_start, 0), 0u) << result.output;
    EXPECT_TRUE(contains(result.output, problem)) << "output: " << result.output << "\nexpected: " << problem;
    ASSERT_FALSE(result.output.empty());
    EXPECT_EQ(result.output.find('\n'), result.output.size() - 1) << "not one line: " << result.output;
  }

  std::filesystem::path dir_;
  ModelConfig config_;
};

TEST_F(InspectCliTest, DescribesShippedTinyCheckpoints) {
  const std::filesystem::path data(MEGAMOE_TEST_DATA_DIR);
  // The shipped §12 checkpoints (tools/make_tiny_models.py): dense transformers form and the two FP4 variants.
  const std::vector<std::pair<std::string, std::string>> shipped = {
      {"tiny-a", "routed experts: "}, {"tiny-a-nvfp4", "routed experts: nvfp4"}, {"tiny-a-mxfp4", "routed experts: mxfp4"}};
  for (const auto& [name, experts] : shipped) {
    ASSERT_TRUE(std::filesystem::exists(data / name / "config.json")) << name << " is not shipped";
    const RunResult result = run_inspect(data / name);
    EXPECT_EQ(result.exit_code, 0) << name << ": " << result.output;
    EXPECT_TRUE(contains(result.output, "layers 5 (+0 MTP), heads 4 x 32 (rope 8)")) << result.output;
    EXPECT_TRUE(contains(result.output, "  2     heavily_compressed_attention       8  moe\n")) << result.output;
    EXPECT_TRUE(contains(result.output, "  0     sliding_attention                  0  hash_moe\n")) << result.output;
    EXPECT_TRUE(contains(result.output, "totals: 1 sliding, 2 CSA, 2 HCA; 2 hash_moe, 3 moe\n")) << result.output;
    EXPECT_TRUE(contains(result.output, experts)) << result.output;
    EXPECT_TRUE(contains(result.output, "(all 5 x 8 x 3 expert weights resolved)")) << result.output;
  }
  EXPECT_TRUE(contains(run_inspect(data / "tiny-a").output, "tensors: 149\n"));
}

TEST_F(InspectCliTest, DescribesBuiltShardedNvfp4Checkpoint) {
  const auto tensors = testing::tiny_upstream_tensors(config_, ExpertStorage::kNvfp4);
  testing::write_checkpoint(dir_, kConfigDir / "tiny-upstream.json", tensors, 2);
  const RunResult result = run_inspect(dir_);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(contains(result.output, "files: 2 safetensors files")) << result.output;
  EXPECT_TRUE(contains(result.output, "tensors: " + std::to_string(tensors.size()) + "\n")) << result.output;
  // 5 layers x 8 experts x 3 weights, each with 4 tensors (weight, weight_scale, weight_scale_2, input_scale).
  size_t nvfp4_bytes = 0, fp8_tensors = 0;
  for (const auto& t : tensors) {
    if (t.name.find(".experts.") != std::string::npos) nvfp4_bytes += t.bytes.size();
    if (t.dtype == DType::F8_E4M3 && t.name.find(".experts.") == std::string::npos) ++fp8_tensors;
  }
  char line[128];
  std::snprintf(line, sizeof line, "  %-14s %8d %16zu", "nvfp4", 480, nvfp4_bytes);
  EXPECT_TRUE(contains(result.output, line)) << result.output << "\nexpected: " << line;
  std::snprintf(line, sizeof line, "  %-14s %8zu", "fp8-block", 2 * fp8_tensors);
  EXPECT_TRUE(contains(result.output, line)) << result.output << "\nexpected: " << line;
  EXPECT_TRUE(contains(result.output, "routed experts: nvfp4 x120")) << result.output;
  EXPECT_TRUE(contains(result.output, "other linear weights: bf16 (dense) x")) << result.output;
  EXPECT_TRUE(contains(result.output, "fp8-block x")) << result.output;
}

TEST_F(InspectCliTest, TruncatedFile) {
  write_valid();
  const auto file = dir_ / "model.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 3);
  expect_one_line_error(file, "end past the data section");
  std::filesystem::resize_file(file, 5);
  expect_one_line_error(file, "shorter than the 8-byte header length");
}

TEST_F(InspectCliTest, BadHeaderLength) {
  write_valid();
  const auto file = dir_ / "model.safetensors";
  {
    std::fstream patch(file, std::ios::binary | std::ios::in | std::ios::out);
    const char huge[8] = {0, 0, 0, 0, 0, 0, 0, 0x10};
    patch.write(huge, 8);
  }
  expect_one_line_error(file, "is implausible");
  write_raw_file("{}", 0, 1000);
  expect_one_line_error(file, "header length 1000 exceeds the 2 bytes after the length field");
}

TEST_F(InspectCliTest, OffsetsOutOfRange) {
  write_valid();
  write_raw_file(R"({"embed.weight":{"dtype":"BF16","shape":[128,64],"data_offsets":[0,16384]}})", 100);
  expect_one_line_error(dir_ / "model.safetensors",
                        "tensor 'embed.weight': data_offsets [0, 16384] end past the data section of 100 bytes");
}

TEST_F(InspectCliTest, UnknownDtype) {
  write_valid();
  write_raw_file(R"({"norm.weight":{"dtype":"F4_E2M1","shape":[64],"data_offsets":[0,32]}})", 32);
  expect_one_line_error(dir_ / "model.safetensors", "tensor 'norm.weight': unknown dtype 'F4_E2M1'");
}

TEST_F(InspectCliTest, ShapeSizeMismatch) {
  write_valid();
  write_raw_file(R"({"norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[0,128]}})", 128);
  expect_one_line_error(dir_ / "model.safetensors", "shape [64] x F32 needs 256 bytes but data_offsets give 128");
}

TEST_F(InspectCliTest, OverlappingTensors) {
  write_valid();
  write_raw_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
                 16);
  expect_one_line_error(dir_ / "model.safetensors", "overlap");
}

TEST_F(InspectCliTest, MissingShard) {
  write_valid(2);
  std::filesystem::remove(dir_ / "model-00001-of-00002.safetensors");
  expect_one_line_error(dir_ / "model.safetensors.index.json",
                        "shard 'model-00001-of-00002.safetensors' (listed for tensor '");
}

TEST_F(InspectCliTest, BrokenConfig) {
  write_valid();
  std::ofstream(dir_ / "config.json", std::ios::trunc) << "{\"vocab_size\": 128,";
  expect_one_line_error(dir_ / "config.json", "not valid JSON");
  auto config = testing::read_json_file(kConfigDir / "tiny-upstream.json");
  config.erase("hidden_size");
  std::ofstream(dir_ / "config.json", std::ios::trunc) << config.dump();
  expect_one_line_error(dir_ / "config.json", "field 'hidden_size' is missing");
}

TEST_F(InspectCliTest, WrongCompanionShape) {
  auto tensors = testing::tiny_upstream_tensors(config_, ExpertStorage::kNvfp4);
  const std::string name = "layers.3.ffn.experts.5.w2.weight_scale";
  *testing::find_tensor(tensors, name) = testing::make_tensor(name, DType::F8_E4M3, {64, 4});
  testing::write_checkpoint(dir_, kConfigDir / "tiny-upstream.json", tensors);
  expect_one_line_error(dir_ / "model.safetensors", "tensor '" + name + "': NVFP4 block scale of a [64, 16] packed "
                                                    "weight must have shape [64, 2], found [64, 4]");
}

TEST_F(InspectCliTest, MissingDirectoryAndUsage) {
  expect_one_line_error(dir_, "not a directory");
  const std::string command = std::string("'") + MEGAMOE_BINARY_PATH + "' inspect >/dev/null 2>&1";
  const int status = std::system(command.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "inspect without DIR must fail";
}

}  // namespace
}  // namespace megamoe
