// GPU sampler (kernels/sample/sm90_sample.cu) against megamoe::Sampler: for
// every row the device id must EQUAL Sampler::choose(logits, params, u01)
// with u01 = Sampler(params).next_uniform() -- the draw the CPU sampler would
// make -- for greedy, temperature, top-k, top-p and their mixes, several
// seeds, rows with many exact ties (and -0 / +0), the Flash vocabulary
// (129280) and small ones. No tolerance: the device does the CPU's double
// arithmetic in the CPU's order. (The only admissible difference, a
// last-bit exp() difference moving a draw across a boundary, has a chance of
// ~1e-16 per row.) Both sides see the same double temperature and top_p.
// Also: the three paths (greedy, radix select for keep <= 1024, full sort),
// a too-small workspace (rows needing the full sort give -1, the others are
// unaffected) and replay of the launch captured in a CUDA graph.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "gpu_test.hpp"
#include "kernels/sample/sample_params.hpp"
#include "runtime/sampler.hpp"

namespace {

using megamoe::Sampler;
using megamoe::SamplingParams;
using megamoe::cuda::DeviceBuffer;
using megamoe::cuda::Stream;
namespace kern = megamoe::cuda::kernels;

using megamoe::testing::from_device;
using megamoe::testing::to_device;

enum class Logits { kNormal, kQuantized, kAllEqual, kFewHigh };

struct RowSpec {
  float temperature;
  int top_k;
  float top_p;
  uint64_t seed;
  Logits kind = Logits::kNormal;
};

void fill_row(float* row, int vocab, Logits kind, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 3.0f);
  for (int i = 0; i < vocab; ++i) {
    switch (kind) {
      case Logits::kNormal: row[i] = d(rng); break;
      case Logits::kQuantized: row[i] = std::round(d(rng) * 0.5f) * 2.0f; break;  // ~10 distinct values, -0 among them
      case Logits::kAllEqual: row[i] = 1.5f; break;
      case Logits::kFewHigh: row[i] = (rng() % 97 == 0) ? 8.0f : -4.0f + 0.001f * static_cast<float>(i % 7); break;
    }
  }
}

struct Batch {
  int vocab = 0;
  std::vector<RowSpec> rows;
  std::vector<float> logits;
  std::vector<kern::SampleRow> params;
  std::vector<int32_t> expected;
};

Batch make_batch(int vocab, const std::vector<RowSpec>& rows, uint64_t seed) {
  Batch b;
  b.vocab = vocab;
  b.rows = rows;
  b.logits.resize(rows.size() * static_cast<size_t>(vocab));
  std::mt19937_64 rng(seed);
  for (size_t r = 0; r < rows.size(); ++r) {
    const RowSpec& spec = rows[r];
    float* row = b.logits.data() + r * vocab;
    fill_row(row, vocab, spec.kind, rng);
    // The CPU sampler with exactly the parameters the device sees.
    // The device takes any temperature <= 0 as greedy; the host sampler only 0.
    const SamplingParams sp{std::max(0.0, static_cast<double>(spec.temperature)), spec.top_k,
                            static_cast<double>(spec.top_p), spec.seed};
    Sampler sampler(sp);
    const double u01 = spec.temperature > 0.0f ? sampler.next_uniform() : 0.0;
    b.params.push_back(kern::SampleRow{spec.temperature, spec.top_k, spec.top_p, u01});
    b.expected.push_back(Sampler::choose(std::span<const float>(row, vocab), sp, u01));
  }
  return b;
}

struct Device {
  DeviceBuffer logits, params, ids, workspace;
};

Device upload(const Batch& b, size_t workspace_bytes) {
  Device d;
  d.logits = to_device(b.logits);
  d.params = to_device(b.params);
  d.ids = DeviceBuffer(b.rows.size() * sizeof(int32_t));
  d.workspace = DeviceBuffer(std::max<size_t>(workspace_bytes, 4));
  return d;
}

kern::SampleParams params_for(const Batch& b, const Device& d, size_t workspace_bytes) {
  kern::SampleParams p;
  p.rows = static_cast<int>(b.rows.size());
  p.vocab = b.vocab;
  p.logits = d.logits.as<float>();
  p.row_params = d.params.as<kern::SampleRow>();
  p.ids = d.ids.as<int32_t>();
  p.workspace = d.workspace.get();
  p.workspace_bytes = workspace_bytes;
  return p;
}

std::vector<int32_t> run(const Batch& b, const Stream& s) {
  const size_t ws = kern::sample_workspace_bytes(static_cast<int>(b.rows.size()), b.vocab);
  Device d = upload(b, ws);
  kern::launch_sample(params_for(b, d, ws), s.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  return from_device<int32_t>(d.ids, b.rows.size(), s);
}

void expect_ids(const Batch& b, const std::vector<int32_t>& got) {
  for (size_t r = 0; r < b.rows.size(); ++r) {
    const RowSpec& spec = b.rows[r];
    EXPECT_EQ(got[r], b.expected[r]) << "V=" << b.vocab << " row " << r << " T=" << spec.temperature
                                     << " top_k=" << spec.top_k << " top_p=" << spec.top_p << " seed=" << spec.seed
                                     << " kind=" << static_cast<int>(spec.kind);
  }
}

// A mix of every kind of row; the same list runs at several vocabularies.
std::vector<RowSpec> mixed_rows(uint64_t seed0) {
  std::vector<RowSpec> rows;
  uint64_t seed = seed0;
  for (Logits kind : {Logits::kNormal, Logits::kQuantized, Logits::kAllEqual, Logits::kFewHigh}) {
    rows.push_back({0.0f, 0, 1.0f, seed++, kind});     // greedy
    rows.push_back({-1.0f, 50, 0.9f, seed++, kind});   // greedy (negative temperature)
    rows.push_back({1.0f, 1, 1.0f, seed++, kind});     // top-1 sampling = greedy
    rows.push_back({1.0f, 40, 1.0f, seed++, kind});    // top-k
    rows.push_back({0.75f, 40, 0.5f, seed++, kind});   // top-k + top-p
    rows.push_back({1.25f, 1024, 0.875f, seed++, kind});  // the largest keep of the select path
    rows.push_back({1.0f, 1025, 1.0f, seed++, kind});  // the smallest keep of the full sort
    rows.push_back({0.5f, 0, 0.75f, seed++, kind});    // top-p only
    rows.push_back({1.0f, 0, 1.0f, seed++, kind});     // plain temperature sampling over everything
    rows.push_back({2.0f, 5000, 0.9375f, seed++, kind});
  }
  for (int i = 0; i < 12; ++i) rows.push_back({1.0f, 20, 0.95f, seed++, Logits::kNormal});  // many seeds
  for (int i = 0; i < 6; ++i) rows.push_back({0.875f, 0, 0.9f, seed++, Logits::kNormal});
  return rows;
}

TEST(GpuSample, MatchesSamplerAtFlashVocab) {
  MEGAMOE_REQUIRE_GPU();
  Stream s;
  const Batch b = make_batch(129280, mixed_rows(1), 11);
  expect_ids(b, run(b, s));
}

TEST(GpuSample, MatchesSamplerAtSmallVocabs) {
  MEGAMOE_REQUIRE_GPU();
  Stream s;
  // 128: the tiny checkpoint; 1000 < 1024 <= keep handled by the select path
  // even for top_k = 0; 1024 / 1025 at the path boundary; 3001 odd.
  uint64_t seed = 100;
  for (int vocab : {1, 2, 128, 1000, 1024, 1025, 3001}) {
    SCOPED_TRACE(testing::Message() << "vocab " << vocab);
    const Batch b = make_batch(vocab, mixed_rows(seed), seed);
    expect_ids(b, run(b, s));
    seed += 1000;
  }
}

TEST(GpuSample, SameIdsAcrossManySeedsOnOneRow) {
  MEGAMOE_REQUIRE_GPU();
  Stream s;
  // One logit row, 256 draws: the uniform walks the whole cumulative range.
  std::vector<RowSpec> rows;
  for (uint64_t seed = 0; seed < 128; ++seed) rows.push_back({1.0f, 64, 0.96875f, seed, Logits::kNormal});
  for (uint64_t seed = 0; seed < 128; ++seed) rows.push_back({1.5f, 0, 0.99f, seed, Logits::kNormal});
  Batch b = make_batch(4096, rows, 7);
  for (size_t r = 1; r < rows.size(); ++r) std::copy_n(b.logits.begin(), 4096, b.logits.begin() + r * 4096);
  b.expected.clear();
  for (size_t r = 0; r < rows.size(); ++r) {
    const SamplingParams sp{std::max(0.0, static_cast<double>(rows[r].temperature)), rows[r].top_k,
                            static_cast<double>(rows[r].top_p), rows[r].seed};
    b.expected.push_back(Sampler::choose(std::span<const float>(b.logits.data() + r * 4096, 4096), sp, b.params[r].u01));
  }
  expect_ids(b, run(b, s));
}

TEST(GpuSample, TooSmallWorkspaceFailsOnlyTheFullSortRows) {
  MEGAMOE_REQUIRE_GPU();
  Stream s;
  const Batch b = make_batch(129280,
                             {{0.0f, 0, 1.0f, 1}, {1.0f, 40, 0.9f, 2}, {1.0f, 0, 0.9f, 3}, {1.0f, 2000, 1.0f, 4}}, 3);
  Device d = upload(b, 0);
  kern::launch_sample(params_for(b, d, 0), s.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<int32_t> got = from_device<int32_t>(d.ids, b.rows.size(), s);
  EXPECT_EQ(got[0], b.expected[0]);
  EXPECT_EQ(got[1], b.expected[1]);
  EXPECT_EQ(got[2], -1);
  EXPECT_EQ(got[3], -1);
}

TEST(GpuSample, CapturedInACudaGraph) {
  MEGAMOE_REQUIRE_GPU();
  Stream s;
  const Batch b = make_batch(129280, mixed_rows(500), 5);
  const size_t ws = kern::sample_workspace_bytes(static_cast<int>(b.rows.size()), b.vocab);
  Device d = upload(b, ws);
  const kern::SampleParams p = params_for(b, d, ws);
  kern::launch_sample(p, s.get());  // eager first (what a runtime does before capturing)
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  s.synchronize();
  MEGAMOE_CUDA_CHECK(cudaMemsetAsync(d.ids.get(), 0xFF, d.ids.size(), s.get()));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  MEGAMOE_CUDA_CHECK(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeGlobal));
  kern::launch_sample(p, s.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  MEGAMOE_CUDA_CHECK(cudaStreamEndCapture(s.get(), &graph));
  MEGAMOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    MEGAMOE_CUDA_CHECK(cudaMemsetAsync(d.ids.get(), 0xFF, d.ids.size(), s.get()));
    MEGAMOE_CUDA_CHECK(cudaGraphLaunch(exec, s.get()));
    expect_ids(b, from_device<int32_t>(d.ids, b.rows.size(), s));
  }
  MEGAMOE_CUDA_CHECK(cudaGraphExecDestroy(exec));
  MEGAMOE_CUDA_CHECK(cudaGraphDestroy(graph));
}

}  // namespace
