// The whole DeepSeek-V4 forward on the CUDA backend against the CPU backend
// (the fp32 oracle) on every tiny checkpoint of tests/data, and against
// transformers' fp64 goldens.
//
// Tolerances. The tiny checkpoints' widths (D 32-64, I 16-32) are below what
// the FP4 MoE op takes (multiples of 64), so their MoE runs on the dense fp32
// fallback and every op on the GPU is fp32 like the CPU: the only differences
// are summation order and libm ulps. Stated: relative L2 of the logits
// <= 1e-4 against the CPU (the bar is 1e-2; a wrong index, scale or
// state bug gives O(1)), max |diff| to the fp64 goldens <= 2e-4 x
// max(1, max|logit|) (the CPU holds 1e-4), greedy tokens identical.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "gpu_test.hpp"
#include "model/deepseek_v4/model.hpp"
#include "model/tiny_models.hpp"
#include "runtime/session.hpp"

namespace megamoe {
namespace {

using testing::golden_ids;
using testing::golden_logits;
using testing::max_abs;
using testing::max_abs_diff;
using testing::tiny_model_dir;

using testing::relative_l2;

std::unique_ptr<dsv4::Model> load(const std::string& name, DeviceKind device, int64_t max_sequences = 4,
                                  int64_t max_context = 4096, bool kv_fp8 = false, int64_t max_step_rows = 0) {
  dsv4::ModelOptions options;
  options.device = device;
  options.backend.kv_fp8 = kv_fp8;
  options.backend.max_step_rows = max_step_rows;
  options.backend.max_sequences = max_sequences;
  options.backend.max_context = max_context;
  return dsv4::Model::load(tiny_model_dir(name), options);
}

void load_dir(const std::filesystem::path& dir) {
  dsv4::ModelOptions options;
  options.device = DeviceKind::kCuda;
  dsv4::Model::load(dir, options);
}

class CudaModel : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaModel, LogitsMatchCpuInEveryMode) {
  MEGAMOE_REQUIRE_GPU();
  const auto gpu = load(GetParam(), DeviceKind::kCuda), cpu = load(GetParam(), DeviceKind::kCpu);
  const std::vector<int32_t> ids = golden_ids(GetParam());
  const std::vector<float> ref = compute_logits(*cpu, ids, LogitsMode{LogitsMode::kPrefill, 0});
  for (const char* mode : {"prefill", "chunked:3", "chunked:7", "chunked:16", "decode"}) {
    const std::vector<float> got = compute_logits(*gpu, ids, LogitsMode::parse(mode));
    EXPECT_LE(relative_l2(got, ref), 1e-4) << GetParam() << " " << mode;
  }
}

TEST_P(CudaModel, MatchesTransformersGoldens) {
  MEGAMOE_REQUIRE_GPU();
  const auto gpu = load(GetParam(), DeviceKind::kCuda);
  const std::vector<int32_t> ids = golden_ids(GetParam());
  const NpyArray golden = golden_logits(GetParam());
  const std::vector<float> got = compute_logits(*gpu, ids, LogitsMode{LogitsMode::kPrefill, 0});
  EXPECT_LE(max_abs_diff(got, golden.data), 2e-4f * std::max(1.f, max_abs(golden.data))) << GetParam();
}

TEST_P(CudaModel, GreedyGenerationEqualsCpu) {
  MEGAMOE_REQUIRE_GPU();
  const auto gpu = load(GetParam(), DeviceKind::kCuda), cpu = load(GetParam(), DeviceKind::kCpu);
  std::vector<int32_t> prompt = golden_ids(GetParam());
  prompt.resize(std::min<size_t>(prompt.size(), 9));
  GenerateOptions options;
  options.max_new_tokens = 32;
  options.stop_at_eos = false;
  EXPECT_EQ(generate(*gpu, prompt, options), generate(*cpu, prompt, options)) << GetParam();
}

TEST_P(CudaModel, BatchedStepEqualsCpuSequencesAlone) {
  MEGAMOE_REQUIRE_GPU();
  const auto gpu = load(GetParam(), DeviceKind::kCuda), cpu = load(GetParam(), DeviceKind::kCpu);
  const int64_t v = gpu->config().vocab_size;
  const std::vector<std::vector<int64_t>> chunks = {{7, 1, 1, 5}, {1, 9, 3, 1}, {13, 1, 1, 6}};
  std::vector<std::vector<int32_t>> ids;
  std::mt19937 rng(7);
  for (const auto& c : chunks) {
    std::vector<int32_t> s;
    for (int64_t n : c)
      for (int64_t i = 0; i < n; ++i) s.push_back(static_cast<int32_t>(rng() % v));
    ids.push_back(s);
  }
  std::vector<dsv4::SequenceState> g, c;
  for (size_t s = 0; s < chunks.size(); ++s) g.push_back(gpu->new_sequence()), c.push_back(cpu->new_sequence());
  std::vector<int64_t> offset(chunks.size(), 0);
  for (size_t step = 0; step < chunks[0].size(); ++step) {
    std::vector<dsv4::SequenceInput> inputs;
    for (size_t s = 0; s < chunks.size(); ++s)
      inputs.push_back({std::span<const int32_t>(ids[s]).subspan(offset[s], chunks[s][step]), &g[s]});
    const auto out = gpu->forward_batch(inputs);
    for (size_t s = 0; s < chunks.size(); ++s) {
      const std::vector<float> ref = cpu->forward(inputs[s].ids, c[s]);
      EXPECT_LE(relative_l2(out[s], ref), 1e-4) << GetParam() << " step " << step << " sequence " << s;
      offset[s] += chunks[s][step];
    }
  }
}

// FP8 KV storage rounding on both backends. A value whose fp32 result differs
// in the last bits between the two summation orders can round to the
// neighbouring E4M3 code (1/16 relative apart) when it sits on a boundary; such
// flips are rare and bounded, so the stated tolerance is relative L2 <= 2e-3.
TEST_P(CudaModel, KvFp8RoundingMatchesCpuEmulation) {
  MEGAMOE_REQUIRE_GPU();
  const auto gpu = load(GetParam(), DeviceKind::kCuda, 4, 4096, true);
  const auto cpu = load(GetParam(), DeviceKind::kCpu, 4, 4096, true);
  const auto exact = load(GetParam(), DeviceKind::kCpu);
  const std::vector<int32_t> ids = golden_ids(GetParam());
  const std::vector<float> ref = compute_logits(*cpu, ids, LogitsMode{LogitsMode::kPrefill, 0});
  const std::vector<float> got = compute_logits(*gpu, ids, LogitsMode{LogitsMode::kChunked, 5});
  EXPECT_LE(relative_l2(got, ref), 2e-3) << GetParam();
  // The rounding is really applied: the logits move away from the full-precision ones.
  EXPECT_GT(relative_l2(ref, compute_logits(*exact, ids, LogitsMode{LogitsMode::kPrefill, 0})), 1e-5) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(TinyCheckpoints, CudaModel,
                         ::testing::Values("tiny-a", "tiny-b", "tiny-c", "tiny-a-nvfp4", "tiny-a-mxfp4", "tiny-b-fp8",
                                           "tiny-text"));

// 16K tokens prefilled whole and in chunks, then 64 decode steps: finite, and chunked equals whole.
TEST(CudaModelLong, SixteenKPromptWholeEqualsChunked) {
  MEGAMOE_REQUIRE_GPU();
  const int64_t n = 16384;
  const auto gpu = load("tiny-a", DeviceKind::kCuda, 2, n + 64, false, /*max_step_rows=*/n);  // whole is one step
  const int64_t v = gpu->config().vocab_size;
  std::mt19937 rng(11);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % v);
  dsv4::ForwardOptions last;
  last.last_logits_only = true;
  dsv4::SequenceState whole = gpu->new_sequence(), chunked = gpu->new_sequence();
  std::vector<float> a = gpu->forward(ids, whole, last), b;
  for (int64_t begin = 0; begin < n; begin += 1000) {
    const int64_t count = std::min<int64_t>(1000, n - begin);
    b = gpu->forward(std::span<const int32_t>(ids).subspan(begin, count), chunked, last);
  }
  EXPECT_LE(relative_l2(b, a), 1e-4);
  for (int step = 0; step < 64; ++step) {
    const int32_t next = static_cast<int32_t>(std::max_element(a.begin(), a.end()) - a.begin());
    a = gpu->forward(std::span<const int32_t>(&next, 1), whole, last);
    b = gpu->forward(std::span<const int32_t>(&next, 1), chunked, last);
    for (float x : a) ASSERT_TRUE(std::isfinite(x)) << "step " << step;
    ASSERT_LE(relative_l2(b, a), 1e-4) << "step " << step;
  }
}

TEST(CudaModelErrors, BadInputIsAClearErrorNotADeviceFault) {
  MEGAMOE_REQUIRE_GPU();
  const auto gpu = load("tiny-a", DeviceKind::kCuda, 1, 64);
  dsv4::SequenceState s = gpu->new_sequence();
  const std::vector<int32_t> bad_id = {1, 2, 100000};
  EXPECT_THROW(gpu->forward(bad_id, s), Error);
  const std::vector<int32_t> too_long(65, 3);
  EXPECT_THROW(gpu->forward(too_long, s), Error);  // past max_context
  EXPECT_EQ(s.position, 0);
  EXPECT_THROW(gpu->new_sequence(), Error);  // the one slot is taken
  const std::vector<int32_t> ok = {1, 2, 3};
  EXPECT_NO_THROW(gpu->forward(ok, s));  // the backend still works after the rejections
  EXPECT_EQ(s.position, 3);
}

// A checkpoint larger than the free device memory is refused before anything
// is copied, naming both sizes: a sparse 200 GB tensor file (no disk used).
TEST(CudaModelErrors, CheckpointTooLargeForTheDeviceIsAClearError) {
  MEGAMOE_REQUIRE_GPU();
  // A valid tiny-a (shard 1) plus a sparse 200 GB tensor the forward never reads (shard 2), so the
  // checkpoint passes validation and only the device's memory is too small.
  const auto dir = std::filesystem::temp_directory_path() / "megamoe-too-large";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto tiny = tiny_model_dir("tiny-a");
  std::filesystem::copy_file(tiny / "config.json", dir / "config.json");
  const char* shard1 = "model-00001-of-00002.safetensors";
  const char* shard2 = "model-00002-of-00002.safetensors";
  std::filesystem::copy_file(tiny / "model.safetensors", dir / shard1);
  nlohmann::json weight_map = {{"padding", shard2}};
  const auto tiny_file = SafetensorsFile::open(tiny / "model.safetensors");  // named: a range-for over a temporary's map dangles
  for (const auto& [name, view] : tiny_file->tensors()) weight_map[name] = shard1;
  std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"metadata", nlohmann::json::object()},
                                                                         {"weight_map", weight_map}}.dump();
  const uint64_t bytes = 200ull << 30;
  std::string header = "{\"padding\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(bytes) +
                       "],\"data_offsets\":[0," + std::to_string(bytes) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  {
    std::ofstream out(dir / shard2, std::ios::binary | std::ios::trunc);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), static_cast<std::streamsize>(n));
  }
  std::filesystem::resize_file(dir / shard2, 8 + header.size() + bytes);
  try {
    load_dir(dir);
    ADD_FAILURE() << "a 200 GB checkpoint was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("GB of GPU memory"), std::string::npos) << what;
    EXPECT_NE(what.find("free"), std::string::npos) << what;
  }
  std::filesystem::remove_all(dir);
}

TEST(CudaModelErrors, CudaDeviceIsRequestedExplicitly) {
  MEGAMOE_REQUIRE_GPU();
  EXPECT_EQ(parse_device_kind("auto"), DeviceKind::kCuda);
  EXPECT_THROW(parse_device_kind("tpu"), Error);
}

}  // namespace
}  // namespace megamoe
