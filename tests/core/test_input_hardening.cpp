// Issue 14: every input bounded and checked before work. The bounded reader
// (regular files only, size limit before and while reading, NUL bytes kept),
// strict JSON (duplicate keys, NUL bytes, nesting), config ranges and required
// fields, and the shared checkpoint validation (shapes, NaN/Inf) that both the
// model loader and `megamoe inspect` run.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/checkpoint.hpp"
#include "core/checkpoint_validation.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/json_file.hpp"
#include "core/model_config.hpp"
#include "core/safetensors.hpp"

namespace megamoe {
namespace {

namespace fs = std::filesystem;
const fs::path kData = fs::path(MEGAMOE_TEST_DATA_DIR);

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("megamoe_hardening_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
  }
  fs::path dir_;
};

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// ---- the bounded reader ----

using BoundedReader = TempDir;

TEST_F(BoundedReader, RefusesAFifoWithoutWaitingForAWriter) {
  const fs::path fifo = dir_ / "config.json";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string message = error_of([&] { load_model_config(fifo); });  // used to block forever
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_TRUE(contains(message, fifo.string() + ": not a regular file (a FIFO)")) << message;
}

TEST_F(BoundedReader, RefusesDevicesAndDirectoriesNamingThePath) {
  EXPECT_TRUE(contains(error_of([] { read_json_file("/dev/zero", kMaxConfigBytes); }),
                       "/dev/zero: not a regular file (a character device)"));
  const std::string message = error_of([&] { load_model_config(dir_); });
  EXPECT_TRUE(contains(message, dir_.string() + ": not a regular file (a directory)")) << message;
  EXPECT_FALSE(contains(message, "unexpected end of input")) << message;
}

TEST_F(BoundedReader, ChecksTheSizeBeforeReading) {
  // A 2 GB sparse config.json: refused from its size, before a byte is read.
  const fs::path big = dir_ / "config.json";
  write(big, "{}");
  fs::resize_file(big, uint64_t{2} << 30);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string message = error_of([&] { load_model_config(big); });
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  EXPECT_TRUE(contains(message, big.string() + ": the file has 2147483648 bytes, over the limit of " +
                                    std::to_string(kMaxConfigBytes) + " bytes"))
      << message;
  EXPECT_TRUE(contains(error_of([&] { read_input_file(big, 100, "--max-bytes"); }), "(--max-bytes)"));
}

TEST_F(BoundedReader, StopsAStreamAtTheLimit) {
  FILE* zeros = std::fopen("/dev/zero", "rb");  // endless: only a limit checked while reading ends it
  ASSERT_NE(zeros, nullptr);
  const std::string message = error_of([&] { read_input_stream(zeros, "stdin", 1 << 20, "--max-bytes"); });
  std::fclose(zeros);
  EXPECT_EQ(message, "stdin: the input exceeds the limit of 1048576 bytes (--max-bytes)");
}

TEST_F(BoundedReader, KeepsNulBytesAndReadsExactly) {
  const std::string text = std::string("a\0b\0", 4) + std::string(100000, 'x');
  write(dir_ / "t.txt", text);
  EXPECT_EQ(read_input_file(dir_ / "t.txt", text.size()), text);
  EXPECT_TRUE(contains(error_of([&] { read_input_file(dir_ / "t.txt", text.size() - 1); }), "over the limit"));
  EXPECT_TRUE(contains(error_of([&] { read_input_file(dir_ / "absent.txt", 10); }), "absent.txt: cannot open the file"));
}

// ---- strict JSON ----

using StrictJson = TempDir;

TEST_F(StrictJson, RefusesNulBytesInsteadOfIgnoringTheRest) {
  nlohmann::json config = nlohmann::json::parse(std::ifstream(kData / "configs/tiny-upstream.json"));
  // Valid JSON, then a NUL and garbage: nlohmann stops at the NUL and accepts it.
  write(dir_ / "config.json", config.dump() + std::string("\0", 1) + "{garbage");
  const std::string message = error_of([&] { load_model_config(dir_ / "config.json"); });
  EXPECT_TRUE(contains(message, "config.json: not valid JSON (a NUL byte at offset " +
                                    std::to_string(config.dump().size()) + ")"))
      << message;
}

TEST_F(StrictJson, RefusesDuplicateKeysNamingThem) {
  std::string text;
  {
    std::ifstream in(kData / "configs/tiny-upstream.json");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const size_t brace = text.rfind('}');
  write(dir_ / "config.json", text.substr(0, brace) + ", \"hidden_size\": 65536}");
  std::string message = error_of([&] { load_model_config(dir_ / "config.json"); });
  EXPECT_TRUE(contains(message, "the key 'hidden_size' appears twice in the top-level object")) << message;
  message = error_of([] { parse_json_text(R"({"a": {"b": [{"c": 1, "c": 2}]}})", "x.json"); });
  EXPECT_TRUE(contains(message, "x.json: not valid JSON for megamoe (the key 'c' appears twice in object 'a.b')"))
      << message;
  EXPECT_NO_THROW(parse_json_text(R"([{"c": 1}, {"c": 2}])", "x.json"));  // same key in sibling objects
}

TEST_F(StrictJson, BoundsNestingAndMessageLength) {
  EXPECT_TRUE(contains(error_of([] { parse_json_text(std::string(100000, '['), "deep.json"); }),
                       "nesting deeper than 64"));
  EXPECT_NO_THROW(parse_json_text(std::string(60, '[') + std::string(60, ']'), "ok.json"));
  const std::string message = error_of([] { parse_json_text("\"" + std::string(1 << 20, 'a'), "long.json"); });
  EXPECT_LT(message.size(), 400u) << message.substr(0, 400);
}

// ---- config ranges and required fields ----

nlohmann::json tiny_config() { return nlohmann::json::parse(std::ifstream(kData / "configs/tiny-upstream.json")); }

std::string config_error(const nlohmann::json& config) {
  return error_of([&] { parse_model_config(config, "cfg.json"); });
}

TEST(ConfigRanges, FieldsThatDriveComputeAreBounded) {
  struct Case {
    const char* field;
    nlohmann::json value;
    const char* expected;
  };
  const Case cases[] = {
      {"hc_sinkhorn_iters", int64_t{1} << 31, "field 'hc_sinkhorn_iters' is 2147483648, outside the allowed range [1, 1000]"},
      {"sliding_window", INT64_MAX, "field 'sliding_window' is 9223372036854775807, outside the allowed range [1, 1048576]"},
      {"index_topk", INT64_MAX, "field 'index_topk' is 9223372036854775807, outside the allowed range [1, 1048576]"},
      {"routed_scaling_factor", -1.0, "field 'routed_scaling_factor' is -1, outside the allowed range (0, 1000000]"},
      {"routed_scaling_factor", 0.0, "field 'routed_scaling_factor' is 0, outside the allowed range (0, 1000000]"},
      {"vocab_size", int64_t{1} << 40, "field 'vocab_size' is 1099511627776, outside the allowed range [1, 16777216]"},
      {"hidden_size", 1 << 20, "field 'hidden_size' is 1048576, outside the allowed range [1, 65536]"},
      {"num_hidden_layers", 100000, "field 'num_hidden_layers' is 100000, outside the allowed range [1, 1024]"},
      {"hc_mult", 1000, "field 'hc_mult' is 1000, outside the allowed range [1, 64]"},
      {"max_position_embeddings", int64_t{1} << 40, "field 'max_position_embeddings' is 1099511627776"},
      {"n_routed_experts", 1 << 20, "field 'n_routed_experts' is 1048576, outside the allowed range [1, 65536]"},
      {"hc_eps", 10.0, "field 'hc_eps' is 10, outside the allowed range (0, 1]"},
      {"swiglu_limit", -1.0, "field 'swiglu_limit' is -1"},
      {"rope_theta", -5.0, "field 'rope_theta' is -5"},
  };
  for (const Case& c : cases) {
    nlohmann::json config = tiny_config();
    ASSERT_TRUE(config.contains(c.field)) << c.field;
    config[c.field] = c.value;
    const std::string message = config_error(config);
    EXPECT_TRUE(contains(message, std::string("cfg.json: ") + c.expected)) << message;
  }
  nlohmann::json config = tiny_config();
  config["rope_scaling"]["factor"] = 1e300;
  config["rope_scaling"].erase("original_max_position_embeddings");
  EXPECT_TRUE(contains(config_error(config), "field 'rope_scaling.factor' is 1e+300, outside the allowed range [1, 1000000]"))
      << config_error(config);
}

TEST(ConfigRanges, MessagesNeverCarryHundredsOfDigits) {
  nlohmann::json config = tiny_config();
  config["partial_rotary_factor"] = 1e300;
  config.erase("qk_rope_head_dim");
  const std::string message = config_error(config);
  EXPECT_FALSE(std::regex_search(message, std::regex("[0-9]{40}"))) << message;
  config = tiny_config();
  config["vocab_size"] = std::string(100000, '9');
  EXPECT_LT(config_error(config).size(), 300u);
}

TEST(ConfigRequired, TransformersFieldsMustBePresent) {
  for (const char* field : {"model_type", "num_key_value_heads", "rope_theta", "compress_rope_theta"}) {
    nlohmann::json config = tiny_config();
    ASSERT_TRUE(config.contains(field)) << field;
    config.erase(field);
    EXPECT_TRUE(contains(config_error(config), std::string("field '") + field + "' is missing")) << config_error(config);
  }
  // Every shipped config still loads.
  for (const auto& entry : fs::directory_iterator(kData / "configs")) {
    if (entry.path().filename().string().find("saved-keys") != std::string::npos ||
        entry.path().filename().string().find("state-dict") != std::string::npos)
      continue;
    EXPECT_NO_THROW(load_model_config(entry.path())) << entry.path();
  }
}

// ---- checkpoint validation: NaN/Inf and every problem ----

using CheckpointValidation = TempDir;

// Copies tests/data/<name> into dir and overwrites one element of a tensor with `bits`.
void copy_checkpoint(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& entry : fs::directory_iterator(from)) fs::copy_file(entry.path(), to / entry.path().filename());
}

void poke(const fs::path& file, const std::string& tensor, int64_t element, const void* bytes, size_t size) {
  const auto st = SafetensorsFile::open(file);
  const TensorView& view = st->tensors().at(tensor);
  uint64_t header = 0;
  {
    std::ifstream in(file, std::ios::binary);
    unsigned char len[8];
    in.read(reinterpret_cast<char*>(len), 8);
    for (int i = 7; i >= 0; --i) header = (header << 8) | len[i];
  }
  std::fstream out(file, std::ios::binary | std::ios::in | std::ios::out);
  out.seekp(static_cast<std::streamoff>(8 + header + view.data_offset + element * size));
  out.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(size));
}

// The stored (not canonical) name of a canonical tensor.
std::string stored_name(const fs::path& dir, const std::string& canonical) {
  const auto ckpt = Checkpoint::open(dir);
  return ckpt->get(canonical).name;
}

TEST_F(CheckpointValidation, ShippedTinyCheckpointsAreValid) {
  for (const char* name : {"tiny-a", "tiny-a-mxfp4", "tiny-a-nvfp4", "tiny-b", "tiny-b-fp8", "tiny-c", "tiny-text"}) {
    const auto ckpt = Checkpoint::open(kData / name);
    const CheckpointReport report = validate_checkpoint(*ckpt);
    EXPECT_TRUE(report.problems.empty()) << name << ": " << (report.problems.empty() ? "" : report.problems[0]);
    EXPECT_GT(report.finite_tensors, 0);
    std::printf("%s: NaN/Inf scan of %lld tensors, %.2f MB in %.3f ms (%.2f GB/s)\n", name,
                (long long)report.finite_tensors, report.finite_bytes / 1e6, report.finite_seconds * 1e3,
                report.finite_bytes / 1e9 / std::max(report.finite_seconds, 1e-9));
  }
}

TEST_F(CheckpointValidation, NamesANonFiniteNonExpertTensorAndScale) {
  copy_checkpoint(kData / "tiny-a-nvfp4", dir_);
  const fs::path file = dir_ / "model.safetensors";
  const std::string norm = stored_name(dir_, "model.layers.1.input_layernorm.weight");
  const std::string global = stored_name(dir_, "model.layers.0.mlp.experts.1.up_proj.weight_scale_2");
  const auto st = SafetensorsFile::open(file);
  const DType norm_dtype = st->tensors().at(norm).dtype;
  if (norm_dtype == DType::F32) {
    const float nan = std::nanf("");
    poke(file, norm, 3, &nan, 4);
  } else {
    const uint16_t nan = 0x7FC0;  // BF16 (and an F16 Inf-or-NaN pattern)
    poke(file, norm, 3, &nan, 2);
  }
  const float inf = INFINITY;
  poke(file, global, 0, &inf, 4);
  const auto ckpt = Checkpoint::open(dir_);
  const CheckpointReport report = validate_checkpoint(*ckpt);
  ASSERT_EQ(report.problems.size(), 2u);
  std::string all = report.problems[0] + "\n" + report.problems[1];
  EXPECT_TRUE(contains(all, "tensor '" + norm + "': non-finite value (NaN or Inf) at element 3")) << all;
  EXPECT_TRUE(contains(all, "tensor '" + global + "': non-finite value (NaN or Inf) at element 0")) << all;
  const std::string message = error_of([&] { require_valid_checkpoint(*ckpt); });
  EXPECT_TRUE(contains(message, "and 1 more problem")) << message;
}

TEST_F(CheckpointValidation, ReportsEveryMissingTensorAndShape) {
  copy_checkpoint(kData / "tiny-a", dir_);
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir_ / "config.json"));
  config["q_lora_rank"] = config["q_lora_rank"].get<int64_t>() + 1;  // contradicts every q_a/q_b shape
  std::ofstream(dir_ / "config.json") << config.dump();
  const auto ckpt = Checkpoint::open(dir_);
  const CheckpointReport report = validate_checkpoint(*ckpt);
  const auto layers = ckpt->config().num_layers;
  EXPECT_GE(report.problems.size(), static_cast<size_t>(3 * layers)) << "q_a_proj, q_a_norm, q_b_proj per layer";
  EXPECT_TRUE(contains(report.problems[0], "expected")) << report.problems[0];
}

TEST(NonFinite, DetectsEveryFloatEncoding) {
  auto check = [](DType dtype, std::vector<unsigned char> bytes, int64_t expected) {
    TensorView view;
    view.dtype = dtype;
    view.shape = {static_cast<int64_t>(bytes.size() / dtype_size(dtype))};
    view.data = reinterpret_cast<const std::byte*>(bytes.data());
    view.nbytes = bytes.size();
    EXPECT_EQ(first_non_finite(view), expected) << dtype_name(dtype);
  };
  check(DType::BF16, {0x80, 0x3f, 0x80, 0x7f}, 1);       // 1.0, +Inf
  check(DType::BF16, {0x80, 0x3f, 0x7f, 0x7f}, -1);      // 1.0, max finite
  check(DType::F16, {0x00, 0x3c, 0x01, 0xfc}, 1);        // 1.0, NaN
  check(DType::F32, {0, 0, 0x80, 0x3f, 0, 0, 0xc0, 0xff}, 1);
  check(DType::F8_E4M3, {0x7e, 0xfe, 0xff}, 2);          // 448, -448, NaN
  check(DType::F8_E8M0, {0x7f, 0xfe, 0xff}, 2);
  check(DType::U8, {0xff, 0xff}, -1);                    // packed FP4: no NaN exists
}

}  // namespace
}  // namespace megamoe
