#include "backend/cpu/dsv4/weights.hpp"

#include <cstring>
#include <string>

#include "backend/cpu/load.hpp"
#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace megamoe::dsv4 {
namespace {

using cpu::dequantize_weight;
using cpu::to_f32;

// Rows [range) of a [rows, cols] (or [rows]) tensor.
Tensor slice_rows(const Tensor& t, IndexRange range) {
  const int64_t cols = t.numel() / t.dim(0);
  Shape shape = t.shape();
  shape[0] = range.size();
  Tensor out(DType::F32, shape);
  std::memcpy(out.data<float>(), t.data<float>() + range.begin * cols, static_cast<size_t>(range.size() * cols) * 4);
  return out;
}

// Columns [range) of a [rows, cols] tensor.
Tensor slice_cols(const Tensor& t, IndexRange range) {
  const int64_t rows = t.dim(0), cols = t.dim(1);
  Tensor out(DType::F32, {rows, range.size()});
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out.data<float>() + r * range.size(), t.data<float>() + r * cols + range.begin,
                static_cast<size_t>(range.size()) * 4);
  return out;
}

IndexRange scaled(IndexRange r, int64_t factor) { return {r.begin * factor, r.end * factor}; }

struct Loader {
  const Checkpoint& ckpt;
  const ModelConfig& cfg;
  bool lazy_experts = false;
  ShardLayout shard;
  bool sharded() const { return shard.shard.sharded(); }
  Tensor rows(Tensor t, IndexRange range) const { return sharded() ? slice_rows(t, range) : t; }
  Tensor cols(Tensor t, IndexRange range) const { return sharded() ? slice_cols(t, range) : t; }

  Tensor dense(const std::string& name, const Shape& shape) const { return to_f32(ckpt.get(name, shape)); }
  Tensor linear(const std::string& prefix, int64_t out, int64_t in) const {
    return dequantize_weight(ckpt.weight(prefix, out, in));
  }

  HyperConnectionWeights hyper_connection(const std::string& prefix, int64_t mix, int64_t n_scales,
                                          const std::string& fn, const std::string& base,
                                          const std::string& scale) const {
    const int64_t nc = cfg.hc_mult, d = cfg.hidden_size;
    return {dense(prefix + fn, {mix, nc * d}), dense(prefix + base, {mix}), dense(prefix + scale, {n_scales})};
  }

  CompressorWeights compressor(const std::string& prefix, int64_t rate, int64_t width, bool overlap) const {
    const int64_t c = overlap ? 2 : 1, d = cfg.hidden_size;
    CompressorWeights w;
    w.rate = rate;
    w.width = width;
    w.overlap = overlap;
    w.kv_proj = linear(prefix + "kv_proj", c * width, d);
    w.gate_proj = linear(prefix + "gate_proj", c * width, d);
    w.position_bias = dense(prefix + "position_bias", {rate, c * width});
    w.kv_norm = dense(prefix + "kv_norm.weight", {width});
    return w;
  }

  AttentionWeights attention(const std::string& prefix, AttentionType type, int64_t rate) const {
    const int64_t d = cfg.hidden_size, h = cfg.num_heads, dh = cfg.head_dim, rq = cfg.q_lora_rank;
    const int64_t g = cfg.o_groups, ro = cfg.o_lora_rank;
    MEGAMOE_CHECK(g > 0 && h % g == 0, "config: num_attention_heads ", h, " is not a multiple of o_groups ", g);
    AttentionWeights w;
    // This rank's heads and the output-projection groups they feed.
    w.sinks = rows(dense(prefix + "sinks", {h}), shard.heads);
    w.q_a_proj = linear(prefix + "q_a_proj", rq, d);
    w.q_a_norm = dense(prefix + "q_a_norm.weight", {rq});
    w.q_b_proj = rows(linear(prefix + "q_b_proj", h * dh, rq), scaled(shard.heads, dh));
    w.kv_proj = linear(prefix + "kv_proj", dh, d);
    w.kv_norm = dense(prefix + "kv_norm.weight", {dh});
    w.o_a_proj = rows(linear(prefix + "o_a_proj", g * ro, h * dh / g), scaled(shard.groups, ro));
    w.o_b_proj = cols(linear(prefix + "o_b_proj", d, g * ro), scaled(shard.groups, ro));
    if (type != AttentionType::kSliding) {
      const bool csa = type == AttentionType::kCompressedSparse;
      w.compressor = compressor(prefix + "compressor.", rate, dh, csa);
      if (csa) {
        const int64_t hi = cfg.index_n_heads, di = cfg.index_head_dim;
        const std::string ip = prefix + "compressor.indexer.";
        IndexerWeights iw;
        iw.q_b_proj = linear(ip + "q_b_proj", hi * di, rq);
        iw.weights_proj = linear(ip + "scorer.weights_proj", hi, d);
        iw.compressor = compressor(ip, rate, di, /*overlap=*/true);
        w.indexer = std::move(iw);
      }
    }
    return w;
  }

  // This rank's routed experts stacked as [E_local, rows, cols] fp32.
  Tensor stack_experts(int64_t layer, const std::string& which, int64_t rows, int64_t cols) const {
    const IndexRange experts = shard.experts;
    Tensor out(DType::F32, {experts.size(), rows, cols});
    for (int64_t e = experts.begin; e < experts.end; ++e) {
      const WeightRef ref = ckpt.expert_weight(layer, e, which);
      MEGAMOE_CHECK(ref.out == rows && ref.in == cols, "expert ", e, " ", which, " of layer ", layer, " is [",
                    ref.out, ", ", ref.in, "]: expected [", rows, ", ", cols, "]");
      const Tensor w = dequantize_weight(ref);
      std::memcpy(out.data<float>() + (e - experts.begin) * rows * cols, w.raw(), w.nbytes());
    }
    return out;
  }

  MoeLayerWeights moe(const std::string& prefix, int64_t layer, MlpType type) const {
    const int64_t d = cfg.hidden_size, e = cfg.n_routed_experts, inter = cfg.moe_intermediate_size;
    const int64_t shared = cfg.n_shared_experts * inter;
    MoeLayerWeights w;
    w.gate = linear(prefix + "gate", e, d);
    if (type == MlpType::kHashMoe) {
      w.tid2eid = cpu::to_index_table(ckpt.get(prefix + "gate.tid2eid", {cfg.vocab_size, cfg.num_experts_per_tok}),
                                      e);
    } else {
      w.bias = dense(prefix + "gate.e_score_correction_bias", {e});
    }
    if (lazy_experts) {
      for (int64_t ex = shard.experts.begin; ex < shard.experts.end; ++ex) {
        std::array<WeightRef, 3> refs = {ckpt.expert_weight(layer, ex, "gate_proj"),
                                         ckpt.expert_weight(layer, ex, "up_proj"),
                                         ckpt.expert_weight(layer, ex, "down_proj")};
        const int64_t shapes[3][2] = {{inter, d}, {inter, d}, {d, inter}};
        for (int i = 0; i < 3; ++i) {
          MEGAMOE_CHECK(refs[i].out == shapes[i][0] && refs[i].in == shapes[i][1], "expert ", ex, " of layer ", layer,
                        " (", refs[i].name, ") is [", refs[i].out, ", ", refs[i].in, "]: expected [", shapes[i][0],
                        ", ", shapes[i][1], "]");
        }
        w.expert_refs.push_back(refs);
      }
    } else {
      w.w1 = stack_experts(layer, "gate_proj", inter, d);
      w.w3 = stack_experts(layer, "up_proj", inter, d);
      w.w2 = stack_experts(layer, "down_proj", d, inter);
    }
    if (shared > 0) {
      // This rank's slice of the intermediate dimension: gate/up rows, down columns.
      w.shared_w1 = rows(linear(prefix + "shared_experts.gate_proj", shared, d), shard.shared);
      w.shared_w3 = rows(linear(prefix + "shared_experts.up_proj", shared, d), shard.shared);
      w.shared_w2 = cols(linear(prefix + "shared_experts.down_proj", d, shared), shard.shared);
    }
    return w;
  }
};

}  // namespace

ModelWeights load_model_weights(const Checkpoint& checkpoint, const LoadOptions& options) {
  const ModelConfig& cfg = checkpoint.config();
  const ShardLayout shard = shard_layout(cfg, options.shard);
  const double expert_bytes = 3.0 * 4.0 * static_cast<double>(cfg.num_layers) *
                              static_cast<double>(shard.experts.size()) *
                              static_cast<double>(cfg.moe_intermediate_size) * static_cast<double>(cfg.hidden_size);
  const Loader load{checkpoint, cfg, expert_bytes > static_cast<double>(options.eager_expert_bytes), shard};
  const int64_t d = cfg.hidden_size, v = cfg.vocab_size, nc = cfg.hc_mult;
  MEGAMOE_CHECK(cfg.scoring_func == "sqrtsoftplus", "config: scoring_func '", cfg.scoring_func,
                "' is not supported (only sqrtsoftplus)");
  ModelWeights w;
  w.embed = load.linear("model.embed_tokens", v, d);
  w.hc_head = {load.dense("model.hc_head.hc_fn", {nc, nc * d}), load.dense("model.hc_head.hc_base", {nc}),
               load.dense("model.hc_head.hc_scale", {1})};
  w.norm = load.dense("model.norm.weight", {d});
  w.lm_head = load.rows(load.linear("lm_head", v, d), shard.vocab);  // this rank's vocabulary rows
  const int64_t mix = (2 + nc) * nc;
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    LayerWeights layer;
    layer.attention_type = cfg.layer_types.at(l);
    layer.mlp_type = cfg.mlp_types.at(l);
    layer.attn_hc = load.hyper_connection(prefix, mix, 3, "attn_hc.fn", "attn_hc.base", "attn_hc.scale");
    layer.ffn_hc = load.hyper_connection(prefix, mix, 3, "ffn_hc.fn", "ffn_hc.base", "ffn_hc.scale");
    layer.input_layernorm = load.dense(prefix + "input_layernorm.weight", {d});
    layer.post_attention_layernorm = load.dense(prefix + "post_attention_layernorm.weight", {d});
    layer.attention = load.attention(prefix + "self_attn.", layer.attention_type, cfg.compress_rates.at(l));
    layer.moe = load.moe(prefix + "mlp.", l, layer.mlp_type);
    w.layers.push_back(std::move(layer));
  }
  return w;
}

}  // namespace megamoe::dsv4
