#include "model/deepseek_v4/attention.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/ops.hpp"
#include "core/error.hpp"
#include "core/thread_pool.hpp"
#include "model/deepseek_v4/compressor.hpp"

namespace megamoe::dsv4 {
namespace {

std::span<const float> span_of(const Tensor& t) { return {t.data<float>(), static_cast<size_t>(t.numel())}; }

std::vector<float> linear(const std::vector<float>& x, int64_t rows, const Tensor& w) {
  std::vector<float> y(static_cast<size_t>(rows * w.dim(0)));
  cpu::linear(x, rows, w, y);
  return y;
}

// RoPE on the tail of every head of every token: v [T, heads, dim].
void rope_heads(std::vector<float>& v, int64_t tokens, int64_t heads, int64_t dim, int64_t pos0,
                const RopeTable& rope, bool inverse) {
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) rope.apply(v.data() + (t * heads + h) * dim, dim, pos0 + t, inverse);
}

// Runs the compressor over the chunk's tokens; visible[t] = entries visible to token t.
std::vector<int64_t> run_compressor(CompressorState& state, const CompressorWeights& w, const std::vector<float>& x,
                                    int64_t tokens, int64_t pos0, const RopeTable& rope, float eps) {
  const std::vector<float> k = linear(x, tokens, w.kv_proj);    // [T, c d]
  const std::vector<float> z = linear(x, tokens, w.gate_proj);  // [T, c d]
  const int64_t width = w.kv_proj.dim(0);
  std::vector<int64_t> visible(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) {
    compressor_push(state, w, k.data() + t * width, z.data() + t * width, pos0 + t, rope, eps);
    visible[t] = state.entry_count();  // an entry emitted at t is visible to t
  }
  return visible;
}

}  // namespace

std::vector<int64_t> indexer_top_k(const std::vector<float>& scores, int64_t top_k) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = std::min<int64_t>(top_k, static_cast<int64_t>(scores.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  order.resize(static_cast<size_t>(k));
  return order;
}

std::vector<float> attention_forward(const ModelConfig& cfg, const LayerWeights& layer, const RopeTable& rope,
                                     const std::vector<float>& x, int64_t tokens, int64_t pos0, LayerState& state,
                                     const DumpFn* dump_fn, const std::string& name) {
  const AttentionWeights& w = layer.attention;
  const int64_t heads = cfg.num_heads, dh = cfg.head_dim, rq = cfg.q_lora_rank, window = cfg.sliding_window;
  const float eps = static_cast<float>(cfg.rms_norm_eps);

  // Query path: c = RMS(x Wqa^T) [T, r_q]; q = c Wqb^T [T, H, d_h], per-head U-norm, RoPE.
  std::vector<float> c = linear(x, tokens, w.q_a_proj);
  cpu::rms_norm_rows(c, rq, span_of(w.q_a_norm), eps);
  std::vector<float> q = linear(c, tokens, w.q_b_proj);
  cpu::rms_norm_rows(q, dh, eps);
  rope_heads(q, tokens, heads, dh, pos0, rope, false);
  dump(dump_fn, name + ".q", {tokens, heads, dh}, q);

  // Shared key/value: kv = RoPE(RMS(x Wkv^T)) [T, d_h]; keys = [cached window | this chunk].
  std::vector<float> kv = linear(x, tokens, w.kv_proj);
  cpu::rms_norm_rows(kv, dh, span_of(w.kv_norm), eps);
  rope_heads(kv, tokens, 1, dh, pos0, rope, false);
  dump(dump_fn, name + ".kv", {tokens, dh}, kv);
  const int64_t cached = static_cast<int64_t>(state.window.size()) / dh;
  std::vector<float> keys = state.window;
  keys.insert(keys.end(), kv.begin(), kv.end());

  // Compressed entries (CSA/HCA) and, for CSA, the indexer's selection per token.
  std::vector<int64_t> visible(static_cast<size_t>(tokens), 0);
  std::vector<std::vector<int64_t>> selected;  // CSA: entry ids per token
  if (w.compressor) {
    visible = run_compressor(state.compressor, *w.compressor, x, tokens, pos0, rope, eps);
  }
  if (w.indexer) {
    const IndexerWeights& iw = *w.indexer;
    const int64_t hi = cfg.index_n_heads, di = cfg.index_head_dim;
    const std::vector<int64_t> index_visible =
        run_compressor(state.indexer, iw.compressor, x, tokens, pos0, rope, eps);
    MEGAMOE_CHECK(index_visible == visible, "indexer and main compressor disagree on emitted entries");
    std::vector<float> qi = linear(c, tokens, iw.q_b_proj);  // [T, H_I, d_I]
    rope_heads(qi, tokens, hi, di, pos0, rope, false);
    std::vector<float> head_w = linear(x, tokens, iw.weights_proj);  // [T, H_I]
    const float head_scale = 1.f / std::sqrt(static_cast<float>(hi));
    const float dim_scale = 1.f / std::sqrt(static_cast<float>(di));
    // I[t, w] = sum_h weight[t, h] H_I^-1/2 ReLU(q^I[t, h] . K^I[w]) d_I^-1/2 over the visible entries.
    selected.resize(static_cast<size_t>(tokens));
    const float* entries = state.indexer.entries.data();
    ThreadPool::global().parallel_for(static_cast<size_t>(tokens), [&](size_t begin, size_t end) {
      for (size_t t = begin; t < end; ++t) {
        std::vector<float> scores(static_cast<size_t>(visible[t]));
        for (int64_t e = 0; e < visible[t]; ++e) {
          float s = 0.f;
          for (int64_t h = 0; h < hi; ++h) {
            const float dotp = cpu::dot(qi.data() + (t * hi + h) * di, entries + e * di, di);
            s += head_w[t * hi + h] * head_scale * std::max(dotp, 0.f);
          }
          scores[e] = s * dim_scale;
        }
        selected[t] = indexer_top_k(scores, cfg.index_topk);
      }
    });
    dump(dump_fn, name + ".index_q", {tokens, hi, di}, qi);
  }

  // Attention per (token, head): one softmax over window keys, compressed keys and the sink.
  const float scale = 1.f / std::sqrt(static_cast<float>(dh));
  const float* sinks = w.sinks.data<float>();
  const float* entries = state.compressor.entries.data();
  std::vector<float> o(static_cast<size_t>(tokens * heads * dh), 0.f);
  auto attend = [&](size_t begin, size_t end) {
    std::vector<const float*> key_rows;
    std::vector<float> logits;
    for (size_t idx = begin; idx < end; ++idx) {
      const int64_t t = static_cast<int64_t>(idx) / heads, h = static_cast<int64_t>(idx) % heads;
      key_rows.clear();
      const int64_t last = cached + t;  // this token's row in `keys`
      for (int64_t r = std::max<int64_t>(0, last - window + 1); r <= last; ++r) key_rows.push_back(&keys[r * dh]);
      if (w.indexer) {
        for (int64_t e : selected[t]) key_rows.push_back(entries + e * dh);
      } else if (w.compressor) {
        for (int64_t e = 0; e < visible[t]; ++e) key_rows.push_back(entries + e * dh);
      }
      const float* qh = q.data() + (t * heads + h) * dh;
      logits.resize(key_rows.size());
      float mx = sinks[h];
      for (size_t j = 0; j < key_rows.size(); ++j) {
        logits[j] = scale * cpu::dot(qh, key_rows[j], dh);
        mx = std::max(mx, logits[j]);
      }
      float denom = std::exp(sinks[h] - mx);  // the sink takes mass, adds nothing to o
      for (float& l : logits) denom += (l = std::exp(l - mx));
      float* oh = o.data() + (t * heads + h) * dh;
      for (size_t j = 0; j < key_rows.size(); ++j) {
        const float p = logits[j] / denom;
        for (int64_t i = 0; i < dh; ++i) oh[i] += p * key_rows[j][i];  // values = keys
      }
    }
  };
  ThreadPool::global().parallel_for(static_cast<size_t>(tokens * heads), attend);
  rope_heads(o, tokens, heads, dh, pos0, rope, /*inverse=*/true);
  dump(dump_fn, name + ".o", {tokens, heads, dh}, o);

  // Grouped output projection: group g (heads g H/G ..) -> o_a[g] -> r_o; concat -> o_b -> D.
  const int64_t groups = cfg.o_groups, ro = cfg.o_lora_rank, group_in = heads * dh / groups;
  std::vector<float> a(static_cast<size_t>(tokens * groups * ro));
  const float* wa = w.o_a_proj.data<float>();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t r = 0; r < ro; ++r)
        a[(t * groups + g) * ro + r] = cpu::dot(wa + (g * ro + r) * group_in, o.data() + t * heads * dh + g * group_in,
                                                group_in);
  std::vector<float> out = linear(a, tokens, w.o_b_proj);

  // Keep the last W - 1 keys for the next call.
  const int64_t total = cached + tokens, keep = std::min<int64_t>(window - 1, total);
  state.window.assign(keys.end() - keep * dh, keys.end());
  return out;
}

}  // namespace megamoe::dsv4
