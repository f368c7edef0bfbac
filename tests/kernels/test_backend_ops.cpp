// The op registry (in the spirit of llama.cpp's test-backend-ops): every op of
// src/backend/backend.hpp runs on the CUDA backend and on the CPU backend on
// the same random inputs, over the weights of each tiny checkpoint (every
// weight format: F32, BF16 via tiny-text's ..., FP8 block-128 with F32 and E8M0
// scales, NVFP4 and MXFP4 experts), at several row counts, and the outputs are
// compared. A new op is not done until it has a case here.
// Tolerance: both sides compute in fp32 (the tiny widths run the MoE on the
// dense fallback), so relative L2 <= 1e-5 for elementwise/norm/mHC/RoPE ops and
// <= 1e-4 for reductions over many terms (linear, attention, MoE); indexer
// selections and sampled ids must be identical.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "backend/backend.hpp"
#include "core/checkpoint.hpp"
#include "gpu_test.hpp"
#include "model/tiny_models.hpp"

namespace megamoe {
namespace {

using testing::relative_l2;

struct Pair {
  std::unique_ptr<Checkpoint> ckpt;
  std::unique_ptr<Backend> cpu, gpu;
  const ModelConfig& cfg() const { return cpu->config(); }
};

Pair open_pair(const std::string& name, bool kv_fp8 = false) {
  Pair p;
  p.ckpt = Checkpoint::open(testing::tiny_model_dir(name));
  BackendOptions o;
  o.kv_fp8 = kv_fp8;
  o.max_sequences = 4;
  o.max_context = 512;
  p.cpu = make_backend(DeviceKind::kCpu, *p.ckpt, o);
  p.gpu = make_backend(DeviceKind::kCuda, *p.ckpt, o);
  return p;
}

std::vector<float> random_values(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// One step's layout on both backends: sequences with (pos0 is reached by
// earlier steps of the same layout in the stateful cases) given token counts.
struct Steps {
  std::vector<std::unique_ptr<SequenceCache>> cpu_caches, gpu_caches;
  std::vector<int64_t> position;
};

using OpFn = std::function<DeviceTensor(Backend&, const StepPlan&, int64_t rows, uint32_t seed)>;

struct OpCase {
  const char* name;
  double tolerance;
  bool stateful;  // runs over several steps continuing caches
  OpFn run;
};

int64_t first_layer_of(const ModelConfig& c, AttentionType t) {
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (c.layer_types[l] == t) return l;
  return -1;
}

std::vector<OpCase> op_cases(const ModelConfig& c) {
  const int64_t d = c.hidden_size, nc = c.hc_mult, dh = c.head_dim, h = c.num_heads;
  const int64_t csa = first_layer_of(c, AttentionType::kCompressedSparse);
  const int64_t hca = first_layer_of(c, AttentionType::kHeavilyCompressed);
  const int64_t swa = first_layer_of(c, AttentionType::kSliding);
  std::vector<OpCase> cases;
  cases.push_back({"embed", 0.0, false, [=](Backend& b, const StepPlan& s, int64_t rows, uint32_t seed) {
                     std::vector<int32_t> ids(static_cast<size_t>(rows));
                     for (int64_t i = 0; i < rows; ++i) ids[i] = static_cast<int32_t>((seed * 31 + i * 17) % c.vocab_size);
                     DeviceTensor x = b.empty(DType::F32, {rows, nc, d});
                     b.embed(b.upload_ids(ids), x);
                     return x;
                   }});
  for (HcSite site : {HcSite::kAttention, HcSite::kFfn}) {
    cases.push_back({"hc_pre", 1e-5, false, [=](Backend& b, const StepPlan&, int64_t rows, uint32_t seed) {
                       const DeviceTensor x = b.upload(random_values(rows * nc * d, seed), {rows, nc, d});
                       DeviceTensor u = b.empty(DType::F32, {rows, d}), mix = b.empty(DType::F32, {rows, (2 + nc) * nc});
                       b.hc_pre(c.num_layers - 1, site, x, u, mix);
                       // u and mix both matter: hc_post consumes the mix.
                       DeviceTensor x2 = b.upload(random_values(rows * nc * d, seed), {rows, nc, d});
                       b.hc_post(x2, u, mix);
                       return x2;
                     }});
  }
  cases.push_back({"hc_head", 1e-5, false, [=](Backend& b, const StepPlan&, int64_t rows, uint32_t seed) {
                     const DeviceTensor x = b.upload(random_values(rows * nc * d, seed), {rows, nc, d});
                     std::vector<int64_t> pick;
                     for (int64_t r = rows - 1; r >= 0; r -= 2) pick.push_back(r);
                     DeviceTensor hh = b.empty(DType::F32, {static_cast<int64_t>(pick.size()), d});
                     b.hc_head(x, pick, hh);
                     b.rms_norm(hh, d, {0, NormRole::kFinal});
                     return hh;
                   }});
  struct Lin { int64_t layer; LinearRole role; int64_t in, out; };
  std::vector<Lin> lins = {{0, LinearRole::kLmHead, d, c.vocab_size}};
  for (int64_t l : {csa, hca, swa}) {
    if (l < 0) continue;
    lins.push_back({l, LinearRole::kQa, d, c.q_lora_rank});
    lins.push_back({l, LinearRole::kQb, c.q_lora_rank, h * dh});
    lins.push_back({l, LinearRole::kKv, d, dh});
    lins.push_back({l, LinearRole::kOa, h * dh, c.o_groups * c.o_lora_rank});
    lins.push_back({l, LinearRole::kOb, c.o_groups * c.o_lora_rank, d});
  }
  if (csa >= 0) {
    lins.push_back({csa, LinearRole::kCompressorKv, d, 2 * dh});
    lins.push_back({csa, LinearRole::kIndexerQb, c.q_lora_rank, c.index_n_heads * c.index_head_dim});
    lins.push_back({csa, LinearRole::kIndexerWeights, d, c.index_n_heads});
  }
  for (const Lin& lin : lins) {
    cases.push_back({"linear", 1e-5, false, [=](Backend& b, const StepPlan&, int64_t rows, uint32_t seed) {
                       const DeviceTensor x = b.upload(random_values(rows * lin.in, seed), {rows, lin.in});
                       DeviceTensor y = b.empty(DType::F32, {rows, lin.out});
                       b.linear({lin.layer, lin.role}, x, y);
                       return y;
                     }});
  }
  cases.push_back({"rms_norm+rope", 1e-5, false, [=](Backend& b, const StepPlan& s, int64_t rows, uint32_t seed) {
                     DeviceTensor q = b.upload(random_values(rows * h * dh, seed), {rows, h, dh});
                     b.rms_norm(q, dh, {0, NormRole::kNone});
                     b.rope(s, q, h, RopeTableKind::kMain, false);
                     b.rope(s, q, h, RopeTableKind::kCompress, true);
                     DeviceTensor kv = b.upload(random_values(rows * dh, seed + 5), {rows, dh});
                     b.rms_norm(kv, dh, {0, NormRole::kKv});
                     return q;
                   }});
  cases.push_back({"round_kv (kv_fp8 backends only)", 1e-6, false,
                   [=](Backend& b, const StepPlan&, int64_t rows, uint32_t seed) {
                     DeviceTensor kv = b.upload(random_values(rows * dh, seed, 2.f), {rows, dh});
                     b.round_kv(kv);
                     return kv;
                   }});
  // Stateful: compressor (+ indexer) then attention, continuing caches over steps.
  for (int64_t l : {csa, hca, swa}) {
    if (l < 0) continue;
    const AttentionType type = c.layer_types[l];
    cases.push_back({"compressor+indexer+attention", 1e-4, true,
                     [=](Backend& b, const StepPlan& s, int64_t rows, uint32_t seed) {
                       const DeviceTensor q = b.upload(random_values(rows * h * dh, seed, 0.5f), {rows, h, dh});
                       const DeviceTensor kv = b.upload(random_values(rows * dh, seed + 1), {rows, dh});
                       DeviceTensor selected;
                       if (type != AttentionType::kSliding) {
                         const int64_t w = (type == AttentionType::kCompressedSparse ? 2 : 1) * dh;
                         b.compressor(s, l, CompressorKind::kMain, b.upload(random_values(rows * w, seed + 2), {rows, w}),
                                      b.upload(random_values(rows * w, seed + 3), {rows, w}));
                       }
                       if (type == AttentionType::kCompressedSparse) {
                         const int64_t hi = c.index_n_heads, di = c.index_head_dim;
                         b.compressor(s, l, CompressorKind::kIndexer,
                                      b.upload(random_values(rows * 2 * di, seed + 4), {rows, 2 * di}),
                                      b.upload(random_values(rows * 2 * di, seed + 5), {rows, 2 * di}));
                         selected = b.empty(DType::I32, {rows, c.index_topk});
                         b.indexer_topk(s, l, b.upload(random_values(rows * hi * di, seed + 6), {rows, hi, di}),
                                        b.upload(random_values(rows * hi, seed + 7), {rows, hi}), selected);
                       }
                       DeviceTensor o = b.empty(DType::F32, {rows, h, dh});
                       b.attention(s, l, q, kv, selected, o);
                       if (!selected.empty()) {  // append the selection so the comparison covers it exactly
                         const std::vector<int32_t> sel = b.download_ids(selected);
                         std::vector<float> all = b.download(o);
                         for (int32_t v : sel) all.push_back(static_cast<float>(v) * 1e3f);
                         return b.upload(all, {static_cast<int64_t>(all.size())});
                       }
                       return o;
                     }});
  }
  for (int64_t l = 0; l < std::min<int64_t>(c.num_layers, 3); ++l) {  // hash and learned layers
    cases.push_back({"moe", 1e-4, false, [=](Backend& b, const StepPlan&, int64_t rows, uint32_t seed) {
                       std::vector<int32_t> ids(static_cast<size_t>(rows));
                       for (int64_t i = 0; i < rows; ++i) ids[i] = static_cast<int32_t>((seed + i * 7) % c.vocab_size);
                       const DeviceTensor x = b.upload(random_values(rows * d, seed), {rows, d});
                       DeviceTensor y = b.empty(DType::F32, {rows, d});
                       b.moe(l, x, b.upload_ids(ids), y);
                       return y;
                     }});
  }
  return cases;
}

class BackendOps : public ::testing::TestWithParam<const char*> {};

void run_registry(const char* name, bool kv_fp8) {
  Pair p = open_pair(name, kv_fp8);
  const std::vector<OpCase> cases = op_cases(p.cfg());
  // Steps: (tokens per sequence) for 1..3 sequences; stateful cases run them in order.
  const std::vector<std::vector<int64_t>> steps = {{5}, {1}, {3, 9}, {1, 1}, {17, 1, 6}};
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const OpCase& op = cases[ci];
    std::vector<std::unique_ptr<SequenceCache>> cc, gc;
    std::vector<int64_t> pos;
    for (size_t si = 0; si < steps.size(); ++si) {
      const std::vector<int64_t>& step = steps[si];
      if (!op.stateful || si == 0 || step.size() != cc.size()) {  // new layout: fresh caches
        cc.clear(), gc.clear(), pos.assign(step.size(), 0);
        for (size_t s = 0; s < step.size(); ++s) cc.push_back(p.cpu->new_cache()), gc.push_back(p.gpu->new_cache());
      }
      std::vector<StepSequence> cs, gs;
      int64_t rows = 0;
      for (size_t s = 0; s < step.size(); ++s) {
        cs.push_back({cc[s].get(), pos[s], step[s]});
        gs.push_back({gc[s].get(), pos[s], step[s]});
        rows += step[s];
      }
      const auto cplan = p.cpu->plan(cs), gplan = p.gpu->plan(gs);
      const uint32_t seed = static_cast<uint32_t>(1000 * ci + si);
      const std::vector<float> ref = p.cpu->download(op.run(*p.cpu, *cplan, rows, seed));
      const std::vector<float> got = p.gpu->download(op.run(*p.gpu, *gplan, rows, seed));
      // With FP8 KV, an entry pooled in another fp32 order can round to the
      // neighbouring E4M3 code (1/16 apart) on a boundary: rare (~1e-6 per
      // value) but then visible, so stateful cases get 50x the tolerance.
      const double tolerance = kv_fp8 && op.stateful ? 50 * op.tolerance : op.tolerance;
      EXPECT_LE(relative_l2(got, ref), tolerance) << name << (kv_fp8 ? " kv_fp8" : "") << " case " << ci << " ("
                                                     << op.name << ") step " << si;
      for (size_t s = 0; s < step.size(); ++s) pos[s] += step[s];
    }
  }
}

TEST_P(BackendOps, EveryOpMatchesTheCpuBackend) {
  MEGAMOE_REQUIRE_GPU();
  run_registry(GetParam(), false);
}

// Every case again with FP8 KV storage rounding (round_kv and the compressor's
// entries): round_kv gets identical inputs on both sides, so its output must be
// the same bits (tolerance 1e-6).
TEST_P(BackendOps, EveryOpMatchesTheCpuBackendWithKvFp8) {
  MEGAMOE_REQUIRE_GPU();
  run_registry(GetParam(), true);
}

TEST_P(BackendOps, DeviceSamplerPicksWhatTheCpuPicks) {
  MEGAMOE_REQUIRE_GPU();
  Pair p = open_pair(GetParam());
  const int64_t v = p.cfg().vocab_size;
  std::vector<SampleRequest> rows = {{0.0, 0, 1.0, 0.0}, {0.7, 0, 1.0, 0.3}, {1.0, 5, 1.0, 0.9},
                                     {1.3, 0, 0.8, 0.55}};
  for (uint32_t seed = 1; seed <= 5; ++seed) {
    std::vector<float> logits = random_values(static_cast<int64_t>(rows.size()) * v, seed, 2.f);
    logits[3] = logits[7];  // a tie
    for (SampleRequest& r : rows) r.u01 = std::fmod(r.u01 + 0.137 * seed, 1.0);
    const auto a = p.cpu->sample(p.cpu->upload(logits, {static_cast<int64_t>(rows.size()), v}), rows);
    const auto b = p.gpu->sample(p.gpu->upload(logits, {static_cast<int64_t>(rows.size()), v}), rows);
    EXPECT_EQ(a, b) << GetParam() << " seed " << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(TinyCheckpoints, BackendOps,
                         ::testing::Values("tiny-a", "tiny-b", "tiny-c", "tiny-a-nvfp4", "tiny-a-mxfp4", "tiny-b-fp8"));

}  // namespace
}  // namespace megamoe
