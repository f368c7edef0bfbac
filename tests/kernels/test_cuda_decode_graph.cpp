// Recorded decode (one CUDA graph per batch bucket, Model::decode) against
// the same padded step run eagerly: ids and logits must be bit-identical
// (memcmp), and both must agree with the CPU engine (relative L2 <= 1e-4 on
// the tiny checkpoints, as test_cuda_model.cpp states). Batches that change
// size and membership between steps exercise bucket switches and the
// in-place plan rewrite; temperature sampling checks the device choice inside
// the graph against the host sampler on the graph's own logits.
//
// The V4-Flash-width case runs on the checkpoint named by
// MEGAMOE_FLASH_CHECKPOINT (scripts/gpu_model.sh makes it); without it the
// test says it was skipped and why.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "gpu_test.hpp"
#include "model/deepseek_v4/model.hpp"
#include "model/tiny_models.hpp"
#include "runtime/sampler.hpp"

namespace megamoe {
namespace {

using testing::relative_l2;
using testing::tiny_model_dir;

std::unique_ptr<dsv4::Model> load(const std::filesystem::path& dir, DeviceKind device, int64_t max_sequences) {
  dsv4::ModelOptions options;
  options.device = device;
  options.backend.max_sequences = max_sequences;
  options.backend.max_context = 1024;
  return dsv4::Model::load(dir, options);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Sequences decoded side by side: `graph` replays recordings, `eager` runs the
// same padded steps, `cpu` is the oracle. All start from the same prompts.
struct Trio {
  std::vector<dsv4::SequenceState> graph, eager, cpu;
};

Trio prefill(const dsv4::Model& gpu, const dsv4::Model& cpu, const std::vector<std::vector<int32_t>>& prompts) {
  Trio t;
  dsv4::ForwardOptions last;
  last.last_logits_only = true;
  for (const auto& p : prompts) {
    t.graph.push_back(gpu.new_sequence());
    t.eager.push_back(gpu.new_sequence());
    t.cpu.push_back(cpu.new_sequence());
    gpu.forward(p, t.graph.back(), last);
    gpu.forward(p, t.eager.back(), last);
    cpu.forward(p, t.cpu.back(), last);
  }
  return t;
}

// One decode step of the sequences `which` (indices into the trio) with ids
// `ids`; checks graph == eager bit for bit and both near the CPU.
std::vector<int32_t> step(const dsv4::Model& gpu, const dsv4::Model& cpu, Trio& t, const std::vector<size_t>& which,
                          const std::vector<int32_t>& ids, const std::string& where) {
  std::vector<dsv4::DecodeInput> g, e;
  std::vector<dsv4::SequenceInput> c;
  for (size_t i = 0; i < which.size(); ++i) {
    g.push_back({ids[i], &t.graph[which[i]], {}});
    e.push_back({ids[i], &t.eager[which[i]], {}});
    c.push_back({std::span<const int32_t>(&ids[i], 1), &t.cpu[which[i]]});
  }
  std::vector<std::vector<float>> gl, el;
  dsv4::DecodeOptions graph_options, eager_options;
  graph_options.logits = &gl;
  eager_options.graph = false;
  eager_options.logits = &el;
  const std::vector<int32_t> gi = gpu.decode(g, graph_options), ei = gpu.decode(e, eager_options);
  dsv4::ForwardOptions last;
  last.last_logits_only = true;
  const auto cl = cpu.forward_batch(c, last);
  EXPECT_EQ(gi, ei) << where;
  for (size_t i = 0; i < which.size(); ++i) {
    EXPECT_TRUE(same_bits(gl[i], el[i])) << where << " sequence " << which[i] << ": graph and eager logits differ";
    EXPECT_LE(relative_l2(gl[i], cl[i]), 1e-4) << where << " sequence " << which[i];
    EXPECT_LE(relative_l2(el[i], cl[i]), 1e-4) << where << " sequence " << which[i] << " (eager)";
    EXPECT_EQ(gi[i], Sampler::choose(gl[i], {}, 0.0)) << where << ": the device's greedy choice";
  }
  return gi;
}

class DecodeGraph : public ::testing::TestWithParam<const char*> {};

// Batches 3 (bucket 4, one padding row), then 2, then 1, then 4 (no padding),
// with one sequence leaving and coming back; 40 steps cross the compressors'
// windows (rates 4 and the tiny HCA rates) several times.
TEST_P(DecodeGraph, ReplayIsBitIdenticalToEagerAndMatchesCpu) {
  MEGAMOE_REQUIRE_GPU();
  const auto dir = tiny_model_dir(GetParam());
  const auto gpu = load(dir, DeviceKind::kCuda, 8), cpu = load(dir, DeviceKind::kCpu, 8);
  const int64_t v = gpu->config().vocab_size;
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> prompts;
  for (size_t n : {5u, 11u, 2u, 8u}) {
    std::vector<int32_t> p(n);
    for (int32_t& id : p) id = static_cast<int32_t>(rng() % v);
    prompts.push_back(p);
  }
  Trio t = prefill(*gpu, *cpu, prompts);
  std::vector<int32_t> next(prompts.size(), 1);
  for (int s = 0; s < 40; ++s) {
    std::vector<size_t> which;
    if (s < 10) which = {0, 1, 2};
    else if (s < 20) which = {0, 2};
    else if (s < 25) which = {1};
    else which = {0, 1, 2, 3};
    std::vector<int32_t> ids;
    for (size_t i : which) ids.push_back(next[i]);
    const std::vector<int32_t> out = step(*gpu, *cpu, t, which, ids, std::string(GetParam()) + " step " + std::to_string(s));
    for (size_t i = 0; i < which.size(); ++i) next[which[i]] = out[i];
    if (::testing::Test::HasFailure()) break;
  }
}

// Temperature / top-k / top-p rows inside the graph: the device picks what the
// host sampler picks from the graph's own logits and the same draw.
TEST_P(DecodeGraph, SampledRowsChooseLikeTheHostSampler) {
  MEGAMOE_REQUIRE_GPU();
  const auto dir = tiny_model_dir(GetParam());
  const auto gpu = load(dir, DeviceKind::kCuda, 4);
  std::vector<dsv4::SequenceState> states;
  for (int s = 0; s < 3; ++s) {
    states.push_back(gpu->new_sequence());
    const std::vector<int32_t> prompt = {static_cast<int32_t>(s + 1), 3, 7};
    gpu->forward(prompt, states.back());
  }
  const SamplingParams params[3] = {{0.8, 0, 1.0, 0}, {1.0, 5, 1.0, 0}, {0.7, 0, 0.9, 0}};
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int32_t> ids = {1, 2, 3};
  for (int s = 0; s < 12; ++s) {
    std::vector<dsv4::DecodeInput> in;
    std::vector<double> draws;
    for (int i = 0; i < 3; ++i) {
      draws.push_back(u(rng));
      in.push_back({ids[i], &states[i], {params[i].temperature, params[i].top_k, params[i].top_p, draws.back()}});
    }
    std::vector<std::vector<float>> logits;
    dsv4::DecodeOptions options;
    options.logits = &logits;
    ids = gpu->decode(in, options);
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(ids[i], Sampler::choose(logits[i], params[i], draws[i])) << GetParam() << " step " << s << " row " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(TinyCheckpoints, DecodeGraph,
                         ::testing::Values("tiny-a", "tiny-b", "tiny-c", "tiny-a-nvfp4", "tiny-b-fp8", "tiny-text"));

// At V4-Flash widths (FP4 MoE op, FP8 linears): a batch of 3 (bucket 4) and of
// 1, graph against eager bit for bit over steps that close compressor windows.
TEST(DecodeGraphFlash, FlashWidthReplayIsBitIdenticalToEager) {
  MEGAMOE_REQUIRE_GPU();
  const char* dir = std::getenv("MEGAMOE_FLASH_CHECKPOINT");
  if (dir == nullptr || !std::filesystem::exists(std::filesystem::path(dir) / "config.json"))
    GTEST_SKIP() << "skipped: MEGAMOE_FLASH_CHECKPOINT names no checkpoint (scripts/gpu_model.sh makes one with "
                    "`megamoe make-synthetic --preset flash --layers 2`)";
  const auto gpu = load(dir, DeviceKind::kCuda, 6);
  std::vector<dsv4::SequenceState> g, e;
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42}, {7, 99, 3, 1250, 11}, {64000, 8}};
  for (const auto& p : prompts) {
    g.push_back(gpu->new_sequence()), e.push_back(gpu->new_sequence());
    gpu->forward(p, g.back()), gpu->forward(p, e.back());
  }
  std::vector<int32_t> ids = {1, 2, 3};
  for (int s = 0; s < 10; ++s) {
    const size_t n = s < 6 ? 3 : 1;
    std::vector<dsv4::DecodeInput> gi, ei;
    for (size_t i = 0; i < n; ++i) gi.push_back({ids[i], &g[i], {}}), ei.push_back({ids[i], &e[i], {}});
    std::vector<std::vector<float>> gl, el;
    dsv4::DecodeOptions go, eo;
    go.logits = &gl;
    eo.graph = false;
    eo.logits = &el;
    const std::vector<int32_t> a = gpu->decode(gi, go), b = gpu->decode(ei, eo);
    ASSERT_EQ(a, b) << "step " << s;
    for (size_t i = 0; i < n; ++i) ASSERT_TRUE(same_bits(gl[i], el[i])) << "step " << s << " sequence " << i;
    for (size_t i = 0; i < n; ++i) ids[i] = a[i];
  }
}

}  // namespace
}  // namespace megamoe
