// GPU attention kernels (kernels/attention/attention_params.hpp) against the
// CPU oracle of DeepSeek-V4 attention:
//  - Compressor*: launch_compressor vs compressor_push over token streams split
//    into steps four ways (one whole prefill; chunks 3, 5, 1, 7, 2, 11, ...
//    crossing window boundaries; one-token decode steps; three sequences in
//    different slots at different positions sharing each step). After every
//    step: every emitted entry of every sequence (tolerance below), the open
//    window buffer rows and the overlap state bit for bit (they are copies
//    and one fp32 add, as in CompressorState), so the next step's entries test
//    the continuation too.
//  - Whole layers (projections, compressors, indexer, attention and window
//    update through both backends, batched layouts over several steps) are
//    compared in tests/kernels/test_backend_ops.cpp and the model tests in
//    tests/kernels/test_cuda_model.cpp.
//  - Indexer*: V4 shapes (H_I = 64, d_I = 128, ~2000 / ~3000 entries, top_k
//    512 / 1024, duplicated entries for exact ties), single pass and the
//    chunked path (key capacity capped through the testing hook).
//  - Attention*: the attention core at V4 shapes (H = 64, d_h = 512, W = 128)
//    for CSA (given selections, -1 pads), HCA and SWA, window rows mixed from
//    the pool and this step, and the window update; plus a d_h = 18 shape for
//    the scalar path. The reference is dsv4::attend_row over the same keys.
//
// Tolerances. Compressor entries: |gpu - cpu| <= 3e-5 + 1e-5 |cpu|: the pooled
// values differ by a few ulp (expf has <= 2 ulp, the double sum of squares has
// another order), the RMSNorm divides by the pooled row's RMS (smaller than
// the keys' by up to ~sqrt(slots) for flat gates), so a few 1e-7 relative to
// the keys can become ~1e-5 of an entry of magnitude ~1 in the worst case.
// Standalone attention core: 1e-5 relative to the largest |output| of the
// head (fp32 dots of 512 terms and sums of <= 700 weights in another order:
// ~sqrt(n) ulp typical). Indexer: the picks must be exactly
// indexer_top_k's list (score descending, ties to the lower index), except
// that a pair may be out of that order (consecutive picks, or a pick and an
// entry left out) where their host scores differ by <= 1e-6 of the row's
// largest |score| and are not equal; exact ties (equal host scores:
// duplicated entries, all-ReLU-zero rows) must follow the lower-index rule,
// unless one of the two has a per-head dot within 1e-5 (relative) of 0, where
// rounding can flip its ReLU. Every tolerated pair is counted and printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "core/model_config.hpp"
#include "core/tensor.hpp"
#include "gpu_test.hpp"
#include "kernels/attention/attention_params.hpp"
#include "kernels/attention/sm90_indexer_testing.hpp"
#include "backend/cpu/dsv4/attention.hpp"
#include "backend/cpu/dsv4/compressor.hpp"
#include "backend/cpu/dsv4/rope.hpp"
#include "backend/cpu/dsv4/state.hpp"
#include "backend/cpu/dsv4/weights.hpp"

namespace {

namespace dsv4 = megamoe::dsv4;
namespace kern = megamoe::cuda::kernels;
using megamoe::AttentionType;
using megamoe::ModelConfig;
using megamoe::RopeParams;
using megamoe::Tensor;
using megamoe::cuda::DeviceBuffer;
using megamoe::cuda::Stream;

constexpr int kSlots = 4;
constexpr float kEps = 1e-6f;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---------------------------------------------------------------------------
// Host <-> device
// ---------------------------------------------------------------------------

template <typename T>
DeviceBuffer to_device(const std::vector<T>& v, const Stream& s) {
  DeviceBuffer b(std::max<size_t>(1, v.size()) * sizeof(T));
  if (!v.empty()) b.upload(v.data(), v.size() * sizeof(T), s.get());
  return b;
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer& b, size_t n, const Stream& s) {
  std::vector<T> v(n);
  if (n > 0) b.download(v.data(), n * sizeof(T), s.get());
  s.synchronize();
  return v;
}

DeviceBuffer nan_buffer(size_t n, const Stream& s) {
  return to_device(std::vector<float>(std::max<size_t>(n, 1), kNaN), s);
}

std::vector<float> values_of(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// ---------------------------------------------------------------------------
// Random data
// ---------------------------------------------------------------------------

std::vector<float> normal(size_t n, float stddev, std::mt19937_64& rng, float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

Tensor random_tensor(megamoe::Shape shape, float stddev, std::mt19937_64& rng, float mean = 0.0f) {
  Tensor t = Tensor::zeros_f32(std::move(shape));
  const std::vector<float> v = normal(static_cast<size_t>(t.numel()), stddev, rng, mean);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

// `hidden` > 0: with kv/gate projections from a hidden size (layer tests).
dsv4::CompressorWeights make_compressor_weights(int m, int d, bool overlap, int hidden, std::mt19937_64& rng) {
  dsv4::CompressorWeights w;
  w.rate = m;
  w.width = d;
  w.overlap = overlap;
  const int64_t cd = (overlap ? 2 : 1) * d;
  if (hidden > 0) {
    w.kv_proj = random_tensor({cd, hidden}, 1.0f / std::sqrt(static_cast<float>(hidden)), rng);
    w.gate_proj = random_tensor({cd, hidden}, 1.5f / std::sqrt(static_cast<float>(hidden)), rng);
  }
  w.position_bias = random_tensor({m, cd}, 1.0f, rng);
  w.kv_norm = random_tensor({d}, 0.2f, rng, 1.0f);
  return w;
}

RopeParams compress_rope() {
  RopeParams r;
  r.theta = 160000.0;
  r.yarn = true;
  r.factor = 16.0;
  r.original_max_position = 64;
  return r;
}

std::vector<float> linear(const std::vector<float>& x, int64_t rows, const Tensor& w) {
  std::vector<float> y(static_cast<size_t>(rows * w.dim(0)));
  megamoe::cpu::linear(x, rows, w, y);
  return y;
}

// ---------------------------------------------------------------------------
// Failure collection: the first few failures of a check are reported in full.
// ---------------------------------------------------------------------------

class Checker {
 public:
  explicit Checker(std::string what) : what_(std::move(what)) {}
  ~Checker() {
    if (failures_ > kShown) ADD_FAILURE() << what_ << ": " << failures_ - kShown << " more failures";
  }
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  void near(float got, float want, double tol, const std::string& where) {
    const double err = std::fabs(static_cast<double>(got) - static_cast<double>(want));
    if (std::isfinite(err)) max_err_ = std::max(max_err_, err);
    if (!(err <= tol)) fail(where + ": got " + fmt(got) + ", want " + fmt(want) + " (tol " + fmt(tol) + ")");
  }
  void same_bits(float got, float want, const std::string& where) {
    if (bits_of(got) != bits_of(want)) fail(where + ": got " + fmt(got) + ", want " + fmt(want) + " (bit-exact)");
  }
  void fail(const std::string& msg) {
    if (++failures_ <= kShown) ADD_FAILURE() << what_ << ": " << msg;
  }
  double max_err() const { return max_err_; }
  int failures() const { return failures_; }

 private:
  static std::string fmt(double v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.9g", v);
    return buf;
  }
  static constexpr int kShown = 5;
  std::string what_;
  int failures_ = 0;
  double max_err_ = 0.0;
};

// ---------------------------------------------------------------------------
// Steps: which sequences run how many tokens, and the device StepMeta.
// ---------------------------------------------------------------------------

struct Chunk {
  int seq, slot, pos0, tokens;
};

using Schedule = std::vector<std::vector<std::pair<int, int>>>;  // per step: (sequence, tokens)

Schedule whole_schedule(int n) { return {{{0, n}}}; }

Schedule chunk_schedule(int n) {
  static const int sizes[] = {3, 5, 1, 7, 2, 11, 4, 1, 1, 6};
  Schedule s;
  for (int done = 0, i = 0; done < n; ++i) {
    const int t = std::min(sizes[i % 10], n - done);
    s.push_back({{0, t}});
    done += t;
  }
  return s;
}

Schedule decode_schedule(int n) {
  Schedule s;
  for (int i = 0; i < n; ++i) s.push_back({{0, 1}});
  return s;
}

// Three sequences with their own chunk cycles (0: absent from that step); B
// joins two steps late, so positions differ within a step.
Schedule batch_schedule(const std::vector<int>& lengths) {
  static const std::vector<std::vector<int>> cycles = {
      {9, 1, 1, 4, 1, 1, 1, 13, 2, 1}, {0, 0, 5, 1, 1, 7, 3, 1, 1, 2}, {2, 1, 6, 1, 1, 1, 3, 11, 1, 1}};
  std::vector<int> done(lengths.size(), 0);
  Schedule s;
  for (int i = 0;; ++i) {
    std::vector<std::pair<int, int>> step;
    bool left = false;
    for (size_t q = 0; q < lengths.size(); ++q) {
      const int t = std::min(cycles[q % 3][static_cast<size_t>(i) % 10], lengths[q] - done[q]);
      if (t > 0) step.emplace_back(static_cast<int>(q), t);
      done[q] += t;
      left = left || done[q] < lengths[q];
    }
    if (!step.empty()) s.push_back(step);
    if (!left) break;
  }
  return s;
}

std::vector<int> batch_lengths(int n) { return {n, n - n / 4, n / 2 + 3}; }
const std::vector<int> kBatchSlots = {2, 0, 3};

enum class Split { kWhole, kChunks, kDecode, kBatch };
const char* split_name(Split s) {
  switch (s) {
    case Split::kWhole:
      return "Whole";
    case Split::kChunks:
      return "Chunks";
    case Split::kDecode:
      return "Decode";
    case Split::kBatch:
      return "Batch";
  }
  return "?";
}

struct Plan {
  Schedule schedule;
  std::vector<int> lengths, slots;
};

Plan make_plan(Split split, int n) {
  switch (split) {
    case Split::kWhole:
      return {whole_schedule(n), {n}, {1}};
    case Split::kChunks:
      return {chunk_schedule(n), {n}, {3}};
    case Split::kDecode:
      return {decode_schedule(n), {n}, {0}};
    case Split::kBatch:
      return {batch_schedule(batch_lengths(n)), batch_lengths(n), kBatchSlots};
  }
  return {};
}

struct StepDevice {
  int rows = 0;
  DeviceBuffer row_seq, row_pos, seq_slot, seq_pos0, seq_tokens, seq_row0;
  kern::StepMeta meta;
};

StepDevice upload_step(const std::vector<Chunk>& chunks, const Stream& s) {
  std::vector<int32_t> row_seq, row_pos, seq_slot, seq_pos0, seq_tokens, seq_row0;
  for (size_t b = 0; b < chunks.size(); ++b) {
    const Chunk& c = chunks[b];
    seq_slot.push_back(c.slot);
    seq_pos0.push_back(c.pos0);
    seq_tokens.push_back(c.tokens);
    seq_row0.push_back(static_cast<int32_t>(row_seq.size()));
    for (int t = 0; t < c.tokens; ++t) {
      row_seq.push_back(static_cast<int32_t>(b));
      row_pos.push_back(c.pos0 + t);
    }
  }
  StepDevice d;
  d.rows = static_cast<int>(row_seq.size());
  d.row_seq = to_device(row_seq, s);
  d.row_pos = to_device(row_pos, s);
  d.seq_slot = to_device(seq_slot, s);
  d.seq_pos0 = to_device(seq_pos0, s);
  d.seq_tokens = to_device(seq_tokens, s);
  d.seq_row0 = to_device(seq_row0, s);
  s.synchronize();  // the host vectors go out of scope
  d.meta.rows = d.rows;
  d.meta.batch = static_cast<int>(chunks.size());
  d.meta.row_seq = d.row_seq.as<int32_t>();
  d.meta.row_pos = d.row_pos.as<int32_t>();
  d.meta.seq_slot = d.seq_slot.as<int32_t>();
  d.meta.seq_pos0 = d.seq_pos0.as<int32_t>();
  d.meta.seq_tokens = d.seq_tokens.as<int32_t>();
  d.meta.seq_row0 = d.seq_row0.as<int32_t>();
  return d;
}

// ---------------------------------------------------------------------------
// One compressor on the device: its pools (NaN-filled, so any read of a row
// that was never written shows), weights and one step.
// ---------------------------------------------------------------------------

class GpuCompressor {
 public:
  GpuCompressor(const dsv4::CompressorWeights& w, const dsv4::RopeTable& rope, int max_entries, const Stream& s)
      : m_(static_cast<int>(w.rate)),
        d_(static_cast<int>(w.width)),
        cd_((w.overlap ? 2 : 1) * d_),
        overlap_(w.overlap),
        max_entries_(max_entries),
        rope_dim_(static_cast<int>(rope.rope_dim())),
        buf_kv_(nan_buffer(size_t{kSlots} * m_ * cd_, s)),
        buf_gate_(nan_buffer(size_t{kSlots} * m_ * cd_, s)),
        ov_kv_(nan_buffer(overlap_ ? size_t{kSlots} * m_ * d_ : 1, s)),
        ov_gate_(nan_buffer(overlap_ ? size_t{kSlots} * m_ * d_ : 1, s)),
        entries_(nan_buffer(size_t{kSlots} * max_entries_ * d_, s)),
        bias_(to_device(values_of(w.position_bias), s)),
        norm_(to_device(values_of(w.kv_norm), s)),
        omega_(to_device(rope.frequencies(), s)) {
    s.synchronize();
  }

  const float* entries() const { return entries_.as<float>(); }
  int max_entries() const { return max_entries_; }

  // kv / gate: this step's rows [rows, c d] (gate unbiased). Launches only.
  void step(const StepDevice& sd, const std::vector<Chunk>& chunks, const std::vector<float>& kv,
            const std::vector<float>& gate, const Stream& s) {
    std::vector<int32_t> wseq, widx;
    for (size_t b = 0; b < chunks.size(); ++b)
      for (int p = chunks[b].pos0; p < chunks[b].pos0 + chunks[b].tokens; ++p)
        if ((p + 1) % m_ == 0) {
          wseq.push_back(static_cast<int32_t>(b));
          widx.push_back(p / m_);
        }
    kv_ = to_device(kv, s);
    gate_ = to_device(gate, s);
    wseq_ = to_device(wseq, s);
    widx_ = to_device(widx, s);
    kern::CompressorParams p;
    p.step = sd.meta;
    p.pools.rate = m_;
    p.pools.width = d_;
    p.pools.overlap = overlap_;
    p.pools.max_entries = max_entries_;
    p.pools.buf_kv = buf_kv_.as<float>();
    p.pools.buf_gate = buf_gate_.as<float>();
    p.pools.ov_kv = overlap_ ? ov_kv_.as<float>() : nullptr;
    p.pools.ov_gate = overlap_ ? ov_gate_.as<float>() : nullptr;
    p.pools.entries = entries_.as<float>();
    p.kv = kv_.as<float>();
    p.gate = gate_.as<float>();
    p.position_bias = bias_.as<float>();
    p.norm = norm_.as<float>();
    p.rms_eps = kEps;
    p.omega = omega_.as<float>();
    p.rope_dim = rope_dim_;
    p.windows = static_cast<int>(wseq.size());
    p.window_seq = wseq_.as<int32_t>();
    p.window_index = widx_.as<int32_t>();
    kern::launch_compressor(p, s.get());
    MEGAMOE_CUDA_CHECK(cudaGetLastError());
  }

  // Every emitted entry, the buffered rows and the overlap state of `slot`.
  void expect_matches(int slot, const dsv4::CompressorState& cpu, const std::string& what, const Stream& s,
                      double* max_err) const {
    const std::vector<float> ent = to_host<float>(entries_, size_t{kSlots} * max_entries_ * d_, s);
    const std::vector<float> bkv = to_host<float>(buf_kv_, size_t{kSlots} * m_ * cd_, s);
    const std::vector<float> bg = to_host<float>(buf_gate_, size_t{kSlots} * m_ * cd_, s);
    Checker ce(what + " entries");
    const int64_t count = cpu.entry_count();
    ASSERT_LE(count, max_entries_);
    for (int64_t e = 0; e < count; ++e)
      for (int q = 0; q < d_; ++q) {
        const float want = cpu.entries[static_cast<size_t>(e * d_ + q)];
        const float got = ent[(static_cast<size_t>(slot) * max_entries_ + e) * d_ + q];
        ce.near(got, want, 3e-5 + 1e-5 * std::fabs(want), "entry " + std::to_string(e) + " ch " + std::to_string(q));
      }
    *max_err = std::max(*max_err, ce.max_err());
    Checker cb(what + " buffer");
    for (int64_t r = 0; r < cpu.buffered; ++r)
      for (int ch = 0; ch < cd_; ++ch) {
        const size_t g = (static_cast<size_t>(slot) * m_ + r) * cd_ + ch, c = static_cast<size_t>(r * cd_ + ch);
        cb.same_bits(bkv[g], cpu.buffer_kv[c], "kv row " + std::to_string(r) + " ch " + std::to_string(ch));
        cb.same_bits(bg[g], cpu.buffer_gate[c], "gate row " + std::to_string(r) + " ch " + std::to_string(ch));
      }
    if (overlap_ && count > 0) {
      const std::vector<float> okv = to_host<float>(ov_kv_, size_t{kSlots} * m_ * d_, s);
      const std::vector<float> og = to_host<float>(ov_gate_, size_t{kSlots} * m_ * d_, s);
      Checker co(what + " overlap");
      for (int r = 0; r < m_; ++r)
        for (int q = 0; q < d_; ++q) {
          const size_t g = (static_cast<size_t>(slot) * m_ + r) * d_ + q, c = static_cast<size_t>(r * d_ + q);
          co.same_bits(okv[g], cpu.overlap_kv[c], "kv row " + std::to_string(r) + " ch " + std::to_string(q));
          co.same_bits(og[g], cpu.overlap_gate[c], "gate row " + std::to_string(r) + " ch " + std::to_string(q));
        }
    }
  }

 private:
  int m_, d_, cd_;
  bool overlap_;
  int max_entries_, rope_dim_;
  DeviceBuffer buf_kv_, buf_gate_, ov_kv_, ov_gate_, entries_, bias_, norm_, omega_;
  DeviceBuffer kv_, gate_, wseq_, widx_;  // this step's inputs, alive until the next step
};

// ---------------------------------------------------------------------------
// Indexer selection check (shared by the layer and the indexer tests).
// ---------------------------------------------------------------------------

struct SelectionStats {
  int swaps = 0;        // near-tie swaps tolerated
  int set_changes = 0;  // rows whose selected set differs (through a near-tie at the k-th place)
};

// Whether an entry's score can move by more than rounding between host and
// device: one of its per-head dots is within 1e-5 of zero relative to
// |q_h| |K| (a d_I-term fp32 dot rounds by at most ~d_I ulp of that), so
// its ReLU can go either way. Only such entries may leave their exact-tie
// block (e.g. a block of all-zero scores) out of index order.
struct FragileScores {
  const float* q = nullptr;        // [H_I, d_I] the row's queries
  const float* entries = nullptr;  // [n, d_I]
  int64_t heads = 0, dim = 0;
  bool operator()(int64_t e) const {
    const float* k = entries + e * dim;
    double kk = 0.0;
    for (int64_t i = 0; i < dim; ++i) kk += static_cast<double>(k[i]) * k[i];
    for (int64_t h = 0; h < heads; ++h) {
      const float* qh = q + h * dim;
      double dot = 0.0, qq = 0.0;
      for (int64_t i = 0; i < dim; ++i) {
        dot += static_cast<double>(qh[i]) * k[i];
        qq += static_cast<double>(qh[i]) * qh[i];
      }
      if (std::fabs(dot) <= 1e-5 * std::sqrt(qq * kk)) return true;
    }
    return false;
  }
};

// gpu: top_k picks of one row; cpu: indexer_top_k's list; scores: the host's.
// The GPU list must be what indexer_top_k gives under the host's order rule
// (score descending, ties to the lower index), up to excused pairs: a pair
// may be out of order only where the two host scores differ by <= 1e-6 of the
// row's largest |score| and either differ at all or involve a fragile entry
// (see FragileScores). Checked: every consecutive pair of picks, and every
// unpicked visible entry against every pick. With no excused pair this is
// exactly the host's list. Returns whether the picked set equals the host's.
bool check_selection(const int32_t* gpu, int top_k, const std::vector<int64_t>& cpu, const std::vector<float>& scores,
                     const FragileScores& fragile, Checker& ck, SelectionStats& stats, const std::string& where) {
  const int k = static_cast<int>(cpu.size()), n = static_cast<int>(scores.size());
  float row_max = 0.0f;
  for (float s : scores) row_max = std::max(row_max, std::fabs(s));
  const double tol = 1e-6 * row_max;
  std::vector<signed char> fragile_cache(static_cast<size_t>(n), -1);
  auto is_fragile = [&](int e) {
    signed char& f = fragile_cache[static_cast<size_t>(e)];
    if (f < 0) f = fragile(e) ? 1 : 0;
    return f == 1;
  };
  auto before = [&](int a, int b) {  // the host's order: a ranks above b
    const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  };
  auto excused = [&](int a, int b) {
    const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
    if (std::fabs(static_cast<double>(sa) - sb) > tol) return false;
    return sa != sb || is_fragile(a) || is_fragile(b);
  };
  auto describe = [&](int e) {
    return std::to_string(e) + " (score " + std::to_string(scores[static_cast<size_t>(e)]) + ")";
  };
  std::vector<char> picked(static_cast<size_t>(n), 0);
  bool valid = true;
  for (int i = 0; i < top_k; ++i) {
    const int g = gpu[i];
    const std::string at = where + " pick " + std::to_string(i);
    if (i >= k) {
      if (g != -1) ck.fail(at + ": expected the -1 pad, got " + std::to_string(g));
      continue;
    }
    if (g < 0 || g >= n || picked[static_cast<size_t>(g)]) {
      ck.fail(at + ": index " + std::to_string(g) +
              (g < 0 || g >= n ? " outside [0, " + std::to_string(n) + ")" : " picked twice"));
      valid = false;
      continue;
    }
    picked[static_cast<size_t>(g)] = 1;
  }
  if (!valid) {
    ++stats.set_changes;
    return false;
  }
  for (int i = 0; i + 1 < k; ++i) {
    const int a = gpu[i], b = gpu[i + 1];
    if (before(a, b)) continue;
    if (excused(a, b)) {
      ++stats.swaps;
    } else {
      ck.fail(where + " picks " + std::to_string(i) + ", " + std::to_string(i + 1) + ": entry " + describe(a) +
              " before " + describe(b));
    }
  }
  for (int e = 0; e < n; ++e) {
    if (picked[static_cast<size_t>(e)]) continue;
    for (int i = 0; i < k; ++i) {
      const int g = gpu[i];
      if (before(g, e)) continue;
      if (excused(g, e)) {
        ++stats.swaps;
      } else {
        ck.fail(where + ": entry " + describe(e) + " not picked but ranks above pick " + std::to_string(i) + " " +
                describe(g));
        break;
      }
    }
  }
  const std::set<int64_t> want(cpu.begin(), cpu.end());
  std::set<int64_t> got;
  for (int i = 0; i < k; ++i) got.insert(gpu[i]);
  const bool same = got == want;
  if (!same) ++stats.set_changes;
  return same;
}

// Host scores: the CPU backend's own function.
std::vector<float> host_index_scores(const float* qi, const float* head_w, const float* entries, int64_t visible,
                                     int64_t hi, int64_t di) {
  return dsv4::indexer_scores(qi, head_w, entries, visible, hi, di);
}

// ===========================================================================
// Compressor alone: compressor_push is the oracle.
// ===========================================================================

struct CompressorCase {
  const char* name;
  int d, m;
  bool overlap;
  int rope_dim, tokens;
};

void run_compressor_case(const CompressorCase& cc, Split split, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const dsv4::CompressorWeights w = make_compressor_weights(cc.m, cc.d, cc.overlap, 0, rng);
  const dsv4::RopeTable rope(compress_rope(), cc.rope_dim);
  const Plan plan = make_plan(split, cc.tokens);
  const int nseq = static_cast<int>(plan.lengths.size()), cd = (cc.overlap ? 2 : 1) * cc.d;
  std::vector<std::vector<float>> keys(nseq), gates(nseq);
  std::vector<dsv4::CompressorState> cpu(nseq);
  int max_len = 0;
  for (int q = 0; q < nseq; ++q) {
    keys[q] = normal(static_cast<size_t>(plan.lengths[q]) * cd, 1.0f, rng);
    gates[q] = normal(static_cast<size_t>(plan.lengths[q]) * cd, 1.5f, rng);
    cpu[q] = dsv4::make_compressor_state(cc.m, cc.d, cc.overlap);
    max_len = std::max(max_len, plan.lengths[q]);
  }
  Stream stream;
  GpuCompressor gpu(w, rope, max_len / cc.m + 1, stream);
  std::vector<int> pos(nseq, 0);
  double max_err = 0.0;
  int step_index = 0;
  for (const auto& step : plan.schedule) {
    std::vector<Chunk> chunks;
    std::vector<float> kv, gate;
    for (const auto& [q, t] : step) {
      chunks.push_back({q, plan.slots[q], pos[q], t});
      for (int i = 0; i < t; ++i) {
        const int p = pos[q] + i;
        const float* k = keys[q].data() + static_cast<size_t>(p) * cd;
        const float* z = gates[q].data() + static_cast<size_t>(p) * cd;
        dsv4::compressor_push(cpu[q], w, k, z, p, rope, kEps);
        kv.insert(kv.end(), k, k + cd);
        gate.insert(gate.end(), z, z + cd);
      }
    }
    const StepDevice sd = upload_step(chunks, stream);
    gpu.step(sd, chunks, kv, gate, stream);
    stream.synchronize();
    for (int q = 0; q < nseq; ++q) {  // absent sequences must be untouched too
      gpu.expect_matches(plan.slots[q], cpu[q],
                         std::string(cc.name) + " step " + std::to_string(step_index) + " seq " + std::to_string(q),
                         stream, &max_err);
      if (::testing::Test::HasFailure()) return;
    }
    for (const auto& [q, t] : step) pos[q] += t;
    ++step_index;
  }
  std::printf("[   info   ] %s %s: %d steps, max |entry err| %.3g\n", cc.name, split_name(split), step_index, max_err);
}

const CompressorCase kCompressorCases[] = {
    {"d16_m4_overlap", 16, 4, true, 8, 61},      {"d40_m4_overlap", 40, 4, true, 8, 50},
    {"d24_m8_overlap", 24, 8, true, 8, 60},      {"d32_m8", 32, 8, false, 8, 70},
    {"d16_m16", 16, 16, false, 4, 100},          {"d32_m128", 32, 128, false, 16, 300},
    {"indexer_d128_m4", 128, 4, true, 64, 120},  {"csa_d512_m4", 512, 4, true, 64, 60},
    {"hca_d512_m128", 512, 128, false, 64, 300},
};

void PrintTo(const CompressorCase& c, std::ostream* os) { *os << c.name; }
void PrintTo(Split s, std::ostream* os) { *os << split_name(s); }

class CompressorTest : public ::testing::TestWithParam<std::tuple<CompressorCase, Split>> {};

TEST_P(CompressorTest, MatchesCompressorPush) {
  MEGAMOE_REQUIRE_GPU();
  const auto& [cc, split] = GetParam();
  run_compressor_case(cc, split, 1234 + static_cast<uint64_t>(cc.d) * 7 + static_cast<uint64_t>(cc.m));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CompressorTest,
                         ::testing::Combine(::testing::ValuesIn(kCompressorCases),
                                            ::testing::Values(Split::kWhole, Split::kChunks, Split::kDecode,
                                                              Split::kBatch)),
                         [](const ::testing::TestParamInfo<CompressorTest::ParamType>& param_info) {
                           return std::string(std::get<0>(param_info.param).name) + "_" +
                                  split_name(std::get<1>(param_info.param));
                         });

// ===========================================================================
// Indexer at V4 shapes: given entries, host scores with dsv4::indexer_scores,
// indexer_top_k.
// ===========================================================================

struct IndexerCase {
  const char* name;
  int heads, dim, top_k, max_entries;
  int key_cap;  // testing cap of the key capacity (0: none)
};

void run_indexer_case(const IndexerCase& ic, uint64_t seed, bool split) {
  std::mt19937_64 rng(seed);
  const int HI = ic.heads, dI = ic.dim, K = ic.top_k, ME = ic.max_entries, m = 4;
  // Entries of every slot; in slots 0 and 1 entry 7 is scaled up and copied to
  // two later rows, so that exact ties (identical rows) sit in the top picks.
  std::vector<float> entries = normal(size_t{kSlots} * ME * dI, 1.0f, rng);
  for (int slot : {0, 1}) {
    float* base = entries.data() + static_cast<size_t>(slot) * ME * dI;
    for (int i = 0; i < dI; ++i) base[7 * dI + i] *= 3.0f;
    for (int dup : {ME / 2, ME - 1}) std::copy(base + 7 * dI, base + 8 * dI, base + static_cast<size_t>(dup) * dI);
  }
  // Rows: A (slot 1) ends exactly at n = ME; B (slot 0) crosses n = top_k;
  // C (slot 3) has fewer than top_k entries; D (slot 2) none.
  const std::vector<Chunk> chunks = {
      {0, 1, 4 * ME - 3, 3}, {1, 0, 4 * K - 2, 2}, {2, 3, 4 * (K / 2) + 1, 1}, {3, 2, 1, 1}};
  int rows = 0;
  for (const Chunk& c : chunks) rows += c.tokens;
  const std::vector<float> q = normal(static_cast<size_t>(rows) * HI * dI, 1.0f, rng);
  std::vector<float> hw = normal(static_cast<size_t>(rows) * HI, 1.0f, rng);
  for (int i = 0; i < 3 * HI; ++i)
    hw[static_cast<size_t>(i)] = std::fabs(hw[static_cast<size_t>(i)]);  // A: scores >= 0

  Stream stream;
  const StepDevice sd = upload_step(chunks, stream);
  const DeviceBuffer dq = to_device(q, stream), dhw = to_device(hw, stream), dent = to_device(entries, stream);
  DeviceBuffer dsel = to_device(std::vector<int32_t>(static_cast<size_t>(rows) * K, 0x7f7f7f7f), stream);
  kern::IndexerParams ip;
  ip.step = sd.meta;
  ip.heads = HI;
  ip.dim = dI;
  ip.rate = m;
  ip.top_k = K;
  ip.max_entries = ME;
  ip.q = dq.as<float>();
  ip.head_w = dhw.as<float>();
  ip.entries = dent.as<float>();
  ip.selected = dsel.as<int32_t>();
  DeviceBuffer scored;
  if (split) {  // scoring spread over blocks of entries, then the same selection
    scored = DeviceBuffer(static_cast<size_t>(rows) * ME * sizeof(uint64_t));
    ip.scored = scored.as<uint64_t>();
  }
  kern::set_indexer_key_capacity_for_testing(ic.key_cap);
  kern::launch_indexer(ip, stream.get());
  kern::set_indexer_key_capacity_for_testing(0);
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<int32_t> sel = to_host<int32_t>(dsel, static_cast<size_t>(rows) * K, stream);

  Checker ck(std::string(ic.name) + (split ? " split" : "") + " selection");
  SelectionStats stats;
  int r = 0;
  for (const Chunk& c : chunks) {
    for (int i = 0; i < c.tokens; ++i, ++r) {
      const int64_t visible = std::min<int64_t>((c.pos0 + i + 1) / m, ME);
      const std::vector<float> scores =
          host_index_scores(q.data() + static_cast<size_t>(r) * HI * dI, hw.data() + static_cast<size_t>(r) * HI,
                            entries.data() + static_cast<size_t>(c.slot) * ME * dI, visible, HI, dI);
      const std::vector<int64_t> want = dsv4::indexer_top_k(scores, K);
      const FragileScores fragile{q.data() + static_cast<size_t>(r) * HI * dI,
                                  entries.data() + static_cast<size_t>(c.slot) * ME * dI, HI, dI};
      check_selection(sel.data() + static_cast<size_t>(r) * K, K, want, scores, fragile, ck, stats,
                      "row " + std::to_string(r) + " (" + std::to_string(visible) + " visible)");
    }
  }
  std::printf("[   info   ] %s: %d rows, near-tie swaps %d, rows with another set %d\n", ic.name, rows, stats.swaps,
              stats.set_changes);
}

const IndexerCase kIndexerCases[] = {
    {"flash_hi64_di128_k512_n2001", 64, 128, 512, 2001, 0},
    {"flash_hi64_di128_k512_n2001_chunked", 64, 128, 512, 2001, 1024},
    {"pro_hi64_di128_k1024_n3001", 64, 128, 1024, 3001, 0},
    {"pro_hi64_di128_k1024_n3001_chunked", 64, 128, 1024, 3001, 2048},
    {"tiny_hi3_di16_k5_n200_chunked", 3, 16, 5, 200, 64},
    {"tiny_hi70_di40_k9_n150", 70, 40, 9, 150, 0},  // two head chunks of 64
};

void PrintTo(const IndexerCase& c, std::ostream* os) { *os << c.name; }

class IndexerTest : public ::testing::TestWithParam<IndexerCase> {};

TEST_P(IndexerTest, MatchesIndexerTopK) {
  MEGAMOE_REQUIRE_GPU();
  run_indexer_case(GetParam(), 99 + static_cast<uint64_t>(GetParam().max_entries), /*split=*/false);
}

TEST_P(IndexerTest, SplitScoringMatchesIndexerTopK) {
  MEGAMOE_REQUIRE_GPU();
  run_indexer_case(GetParam(), 99 + static_cast<uint64_t>(GetParam().max_entries), /*split=*/true);
}

INSTANTIATE_TEST_SUITE_P(Shapes, IndexerTest, ::testing::ValuesIn(kIndexerCases),
                         [](const ::testing::TestParamInfo<IndexerCase>& param_info) { return param_info.param.name; });

// ===========================================================================
// Attention core at V4 shapes, with the window update.
// ===========================================================================

struct AttentionCase {
  const char* name;
  int heads, head_dim, window;
  AttentionType type;
  int rate, top_k, max_entries;
};

void run_attention_case(const AttentionCase& ac, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int H = ac.heads, dh = ac.head_dim, W = ac.window, ME = ac.max_entries;
  const bool csa = ac.type == AttentionType::kCompressedSparse, hca = ac.type == AttentionType::kHeavilyCompressed;
  // A decode row deep in a sequence, a 3-row chunk just past the window, a fresh 2-row prefill;
  // for small windows also a chunk of W + 2 rows (the update then writes all W ring rows, the
  // attention reads some window rows of its own step for every row). Slot 4 stays unused.
  constexpr int kAttnSlots = 5;
  std::vector<Chunk> chunks = {{0, 2, 2100, 1}, {1, 0, 130, 3}, {2, 1, 0, 2}};
  if (W <= 16) chunks.push_back({3, 3, 50, W + 2});
  int rows = 0;
  for (const Chunk& c : chunks) rows += c.tokens;
  // kv history of every sequence (unit-RMS rows like the real normalised kv).
  std::vector<std::vector<float>> hist(chunks.size());
  for (const Chunk& c : chunks)
    hist[static_cast<size_t>(c.seq)] = normal(static_cast<size_t>(c.pos0 + c.tokens) * dh, 1.0f, rng);
  // The ring holds positions pos0 - W .. pos0 - 1 (NaN where negative): rows of
  // positions >= pos0 must come from this step's kv, never from the ring.
  std::vector<float> ring(size_t{kAttnSlots} * W * dh, kNaN);
  for (const Chunk& c : chunks)
    for (int p = std::max(0, c.pos0 - W); p < c.pos0; ++p)
      std::copy_n(hist[static_cast<size_t>(c.seq)].data() + static_cast<size_t>(p) * dh, dh,
                  ring.data() + (static_cast<size_t>(c.slot) * W + p % W) * dh);
  std::vector<float> kv, q = normal(static_cast<size_t>(rows) * H * dh, 1.0f, rng);
  for (const Chunk& c : chunks)
    kv.insert(kv.end(), hist[static_cast<size_t>(c.seq)].begin() + static_cast<ptrdiff_t>(c.pos0) * dh,
              hist[static_cast<size_t>(c.seq)].end());
  const std::vector<float> sinks = normal(static_cast<size_t>(H), 2.0f, rng);
  const std::vector<float> entries = normal(size_t{kAttnSlots} * std::max(ME, 1) * dh, 1.0f, rng);
  // CSA picks: distinct visible entries in random order, -1 pads; one row also has a -1 inside.
  std::vector<int32_t> selected;
  if (csa) {
    int r = 0;
    for (const Chunk& c : chunks)
      for (int i = 0; i < c.tokens; ++i, ++r) {
        const int visible = std::min((c.pos0 + i + 1) / ac.rate, ME);
        std::vector<int32_t> ids(static_cast<size_t>(visible));
        for (int e = 0; e < visible; ++e) ids[static_cast<size_t>(e)] = e;
        std::shuffle(ids.begin(), ids.end(), rng);
        ids.resize(static_cast<size_t>(std::min(visible, ac.top_k)));
        if (r == 1 && ids.size() > 3) ids[2] = -1;
        ids.resize(static_cast<size_t>(ac.top_k), -1);
        selected.insert(selected.end(), ids.begin(), ids.end());
      }
  }
  const float scale = 1.f / std::sqrt(static_cast<float>(dh));

  Stream stream;
  const StepDevice sd = upload_step(chunks, stream);
  DeviceBuffer dring = to_device(ring, stream);
  const DeviceBuffer dq = to_device(q, stream), dkv = to_device(kv, stream), dsinks = to_device(sinks, stream);
  const DeviceBuffer dent = to_device(entries, stream), dsel = to_device(selected, stream);
  DeviceBuffer dout = nan_buffer(static_cast<size_t>(rows) * H * dh, stream);
  kern::AttentionParams ap;
  ap.step = sd.meta;
  ap.heads = H;
  ap.head_dim = dh;
  ap.window = W;
  ap.scale = scale;
  ap.q = dq.as<float>();
  ap.kv = dkv.as<float>();
  ap.window_pool = dring.as<float>();
  ap.sinks = dsinks.as<float>();
  if (csa || hca) {
    ap.entries = dent.as<float>();
    ap.max_entries = ME;
    ap.rate = ac.rate;
  }
  if (csa) {
    ap.selected = dsel.as<int32_t>();
    ap.top_k = ac.top_k;
  }
  ap.out = dout.as<float>();
  kern::launch_attention(ap, stream.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  kern::WindowUpdateParams wp;
  wp.step = sd.meta;
  wp.head_dim = dh;
  wp.window = W;
  wp.kv = dkv.as<float>();
  wp.window_pool = dring.as<float>();
  kern::launch_window_update(wp, stream.get());
  MEGAMOE_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> out = to_host<float>(dout, static_cast<size_t>(rows) * H * dh, stream);
  const std::vector<float> ring_after = to_host<float>(dring, ring.size(), stream);

  // Reference: the CPU backend's attention core over the same keys.
  Checker ck(std::string(ac.name) + " attention");
  double max_rel = 0.0;
  int r = 0;
  for (const Chunk& c : chunks) {
    const std::vector<float>& hs = hist[static_cast<size_t>(c.seq)];
    for (int i = 0; i < c.tokens; ++i, ++r) {
      const int p = c.pos0 + i;
      std::vector<const float*> key_rows;
      for (int s = std::max(0, p - W + 1); s <= p; ++s) key_rows.push_back(hs.data() + static_cast<size_t>(s) * dh);
      const float* ent = entries.data() + static_cast<size_t>(c.slot) * ME * dh;
      if (csa) {
        for (int k = 0; k < ac.top_k; ++k) {
          const int e = selected[static_cast<size_t>(r) * ac.top_k + k];
          if (e >= 0) key_rows.push_back(ent + static_cast<size_t>(e) * dh);
        }
      } else if (hca) {
        for (int e = 0; e < std::min((p + 1) / ac.rate, ME); ++e) key_rows.push_back(ent + static_cast<size_t>(e) * dh);
      }
      for (int h = 0; h < H; ++h) {
        const float* qh = q.data() + (static_cast<size_t>(r) * H + h) * dh;
        std::vector<float> o(static_cast<size_t>(dh));
        dsv4::attend_row(qh, key_rows, dh, scale, sinks[static_cast<size_t>(h)], o.data());
        float omax = 1e-3f;
        for (float v : o) omax = std::max(omax, std::fabs(v));
        const float* got = out.data() + (static_cast<size_t>(r) * H + h) * dh;
        for (int e = 0; e < dh; ++e) {
          ck.near(got[e], o[static_cast<size_t>(e)], 1e-5 * omax,
                  "row " + std::to_string(r) + " head " + std::to_string(h) + " ch " + std::to_string(e));
          max_rel = std::max(max_rel, std::fabs(static_cast<double>(got[e]) - o[static_cast<size_t>(e)]) / omax);
        }
      }
    }
  }
  // Window update: each ring now holds the last W positions (rows never written stay NaN).
  Checker cw(std::string(ac.name) + " window update");
  for (const Chunk& c : chunks) {
    const int end = c.pos0 + c.tokens;
    for (int p = std::max(0, end - W); p < end; ++p)
      for (int e = 0; e < dh; ++e)
        cw.same_bits(ring_after[(static_cast<size_t>(c.slot) * W + p % W) * dh + e],
                     hist[static_cast<size_t>(c.seq)][static_cast<size_t>(p) * dh + e],
                     "seq " + std::to_string(c.seq) + " position " + std::to_string(p));
  }
  for (int slot = 0; slot < kAttnSlots; ++slot) {  // slots of no sequence: untouched
    bool used = false;
    for (const Chunk& c : chunks) used = used || c.slot == slot;
    if (used) continue;
    for (size_t e = 0; e < size_t{static_cast<size_t>(W)} * dh; ++e)
      if (!std::isnan(ring_after[static_cast<size_t>(slot) * W * dh + e])) {
        cw.fail("slot " + std::to_string(slot) + " written");
        break;
      }
  }
  std::printf("[   info   ] %s: %d rows, max err / head max %.3g\n", ac.name, rows, max_rel);
}

const AttentionCase kAttentionCases[] = {
    {"v4_csa_h64_d512_w128_k512", 64, 512, 128, AttentionType::kCompressedSparse, 4, 512, 600},
    {"v4_pro_csa_h64_d512_w128_k1024", 64, 512, 128, AttentionType::kCompressedSparse, 4, 1024, 600},
    {"v4_hca_h64_d512_w128_m128", 64, 512, 128, AttentionType::kHeavilyCompressed, 128, 0, 20},
    {"hca_h8_d512_w128_m4_n600", 8, 512, 128, AttentionType::kHeavilyCompressed, 4, 0, 600},
    {"v4_swa_h64_d512_w128", 64, 512, 128, AttentionType::kSliding, 0, 0, 0},
    {"scalar_csa_h3_d18_w5_k7", 3, 18, 5, AttentionType::kCompressedSparse, 4, 7, 40},
    {"scalar_hca_h3_d18_w5_m3_clamped", 3, 18, 5, AttentionType::kHeavilyCompressed, 3, 0, 40},
    {"hca_h4_d40_w16_m4_n16384", 4, 40, 16, AttentionType::kHeavilyCompressed, 4, 0, 16384},
};

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionTest, MatchesAttentionCore) {
  MEGAMOE_REQUIRE_GPU();
  run_attention_case(GetParam(), 5 + static_cast<uint64_t>(GetParam().head_dim));
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest, ::testing::ValuesIn(kAttentionCases),
                         [](const ::testing::TestParamInfo<AttentionCase>& param_info) {
                           return param_info.param.name;
                         });

}  // namespace
