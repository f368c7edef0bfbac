#include "model/deepseek_v4/model.hpp"

#include <cstring>
#include <string>

#include "backend/cpu/load.hpp"
#include "backend/cpu/moe.hpp"
#include "backend/cpu/ops.hpp"
#include "core/error.hpp"
#include "core/thread_pool.hpp"
#include "model/deepseek_v4/attention.hpp"
#include "model/deepseek_v4/hyper_connection.hpp"

namespace megamoe::dsv4 {
namespace {

std::span<const float> span_of(const Tensor& t) { return {t.data<float>(), static_cast<size_t>(t.numel())}; }

HcParams hc_params(const ModelConfig& cfg) {
  return {cfg.hc_mult, cfg.hidden_size, cfg.hc_sinkhorn_iters, static_cast<float>(cfg.hc_eps),
          static_cast<float>(cfg.rms_norm_eps)};
}

// The mHC pre-step for every token: mixes [T] and block inputs u [T, D] = RMS(sum_j pre_j X[j]; norm).
std::vector<HcMix> hc_pre(const std::vector<float>& streams, int64_t tokens, const HyperConnectionWeights& w,
                          const Tensor& norm, const HcParams& p, float eps, std::vector<float>& u) {
  std::vector<HcMix> mixes(static_cast<size_t>(tokens));
  u.assign(static_cast<size_t>(tokens * p.hidden), 0.f);
  const int64_t stride = p.streams * p.hidden;
  ThreadPool::global().parallel_for(static_cast<size_t>(tokens), [&](size_t begin, size_t end) {
    for (size_t t = begin; t < end; ++t) {
      mixes[t] = hc_mix(streams.data() + t * stride, w, p);
      hc_collapse(streams.data() + t * stride, mixes[t].pre, p, u.data() + t * p.hidden);
    }
  });
  cpu::rms_norm_rows(u, p.hidden, span_of(norm), eps);
  return mixes;
}

void hc_post_all(std::vector<float>& streams, const std::vector<float>& y, const std::vector<HcMix>& mixes,
                 const HcParams& p) {
  const int64_t stride = p.streams * p.hidden;
  std::vector<float> next(streams.size());
  for (size_t t = 0; t < mixes.size(); ++t) {
    hc_post(streams.data() + t * stride, y.data() + t * p.hidden, mixes[t], p, next.data() + t * stride);
  }
  streams.swap(next);
}

}  // namespace

Model::Model(std::unique_ptr<Checkpoint> checkpoint, const LoadOptions& options)
    : checkpoint_(std::move(checkpoint)),
      config_(checkpoint_->config()),
      weights_(load_model_weights(*checkpoint_, options)),
      rope_main_(config_.rope_main, config_.rope_head_dim),
      rope_compress_(config_.rope_compress, config_.rope_head_dim) {}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const LoadOptions& options) {
  return std::make_unique<Model>(Checkpoint::open(dir), options);
}

std::vector<float> Model::moe_forward(const MoeLayerWeights& w, std::span<const int32_t> ids,
                                      const std::vector<float>& x, int64_t tokens) const {
  cpu::MoeWeights mw;
  mw.dims.hidden = config_.hidden_size;
  mw.dims.intermediate = config_.moe_intermediate_size;
  mw.dims.n_experts = config_.n_routed_experts;
  mw.dims.top_k = config_.num_experts_per_tok;
  mw.dims.shared_intermediate = config_.n_shared_experts * config_.moe_intermediate_size;
  mw.dims.routed_scaling_factor = static_cast<float>(config_.routed_scaling_factor);
  mw.dims.swiglu_limit = static_cast<float>(config_.swiglu_limit);
  mw.gate = span_of(w.gate);
  if (!w.bias.empty()) mw.bias = span_of(w.bias);
  mw.tid2eid = w.tid2eid;
  if (w.expert_refs.empty()) {
    mw.w1 = span_of(w.w1);
    mw.w3 = span_of(w.w3);
    mw.w2 = span_of(w.w2);
  } else {
    mw.load_expert = [&w](int64_t e, std::vector<float>& w1, std::vector<float>& w3, std::vector<float>& w2) {
      const auto& refs = w.expert_refs.at(static_cast<size_t>(e));
      std::vector<float>* outs[3] = {&w1, &w3, &w2};
      for (int i = 0; i < 3; ++i) {
        const Tensor t = cpu::dequantize_weight(refs[i]);
        outs[i]->assign(t.data<float>(), t.data<float>() + t.numel());
      }
    };
  }
  if (mw.dims.shared_intermediate > 0) {
    mw.shared_w1 = span_of(w.shared_w1);
    mw.shared_w3 = span_of(w.shared_w3);
    mw.shared_w2 = span_of(w.shared_w2);
  }
  std::vector<float> y(x.size());
  cpu::moe_forward(mw, x, ids, tokens, y);
  return y;
}

void Model::layer_forward(int64_t l, std::span<const int32_t> ids, std::vector<float>& streams, int64_t pos0,
                          LayerState& state, const DumpFn* dump_fn) const {
  const LayerWeights& w = weights_.layers[l];
  const HcParams p = hc_params(config_);
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const int64_t tokens = static_cast<int64_t>(ids.size()), d = config_.hidden_size;
  const std::string name = "layers." + std::to_string(l);
  const RopeTable& rope = w.attention_type == AttentionType::kSliding ? rope_main_ : rope_compress_;

  // Attention sub-block.
  std::vector<float> x;  // [T, D]
  const std::vector<HcMix> attn_mix = hc_pre(streams, tokens, w.attn_hc, w.input_layernorm, p, eps, x);
  dump(dump_fn, name + ".attn_in", {tokens, d}, x);
  const std::vector<float> a = attention_forward(config_, w, rope, x, tokens, pos0, state, dump_fn, name + ".attn");
  dump(dump_fn, name + ".attn_out", {tokens, d}, a);
  hc_post_all(streams, a, attn_mix, p);

  // MoE sub-block.
  const std::vector<HcMix> ffn_mix = hc_pre(streams, tokens, w.ffn_hc, w.post_attention_layernorm, p, eps, x);
  dump(dump_fn, name + ".ffn_in", {tokens, d}, x);
  const std::vector<float> f = moe_forward(w.moe, ids, x, tokens);
  dump(dump_fn, name + ".ffn_out", {tokens, d}, f);
  hc_post_all(streams, f, ffn_mix, p);
  dump(dump_fn, name + ".streams", {tokens, config_.hc_mult, d}, streams);
}

std::vector<float> Model::forward(std::span<const int32_t> ids, SequenceState& state,
                                  const ForwardOptions& options) const {
  const int64_t tokens = static_cast<int64_t>(ids.size());
  const int64_t d = config_.hidden_size, v = config_.vocab_size, nc = config_.hc_mult;
  MEGAMOE_CHECK(tokens > 0, "forward: empty input (no token ids)");
  for (int64_t t = 0; t < tokens; ++t) {
    MEGAMOE_CHECK(ids[t] >= 0 && ids[t] < v, "token id ", ids[t], " at index ", t,
                  " is outside the vocabulary [0, ", v, ")");
  }
  MEGAMOE_CHECK(static_cast<int64_t>(state.layers.size()) == config_.num_layers,
                "forward: sequence state has ", state.layers.size(), " layers, the model ", config_.num_layers);
  const int64_t pos0 = state.position;

  // Embedding, copied into the n_c residual streams: X [T, n_c, D].
  std::vector<float> streams(static_cast<size_t>(tokens * nc * d));
  const float* embed = weights_.embed.data<float>();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < nc; ++j) std::memcpy(&streams[(t * nc + j) * d], embed + ids[t] * d, d * sizeof(float));
  if (options.dump != nullptr) {
    std::vector<float> e(static_cast<size_t>(tokens * d));
    for (int64_t t = 0; t < tokens; ++t) std::memcpy(&e[t * d], embed + ids[t] * d, d * sizeof(float));
    dump(options.dump, "embed", {tokens, d}, e);
  }

  for (int64_t l = 0; l < config_.num_layers; ++l) {
    layer_forward(l, ids, streams, pos0, state.layers[l], options.dump);
  }

  // Head: collapse the streams, final norm, lm_head.
  const int64_t first = options.last_logits_only ? tokens - 1 : 0, rows = tokens - first;
  const HcParams p = hc_params(config_);
  std::vector<float> h(static_cast<size_t>(rows * d));
  for (int64_t t = first; t < tokens; ++t) hc_head(&streams[t * nc * d], weights_.hc_head, p, &h[(t - first) * d]);
  cpu::rms_norm_rows(h, d, span_of(weights_.norm), static_cast<float>(config_.rms_norm_eps));
  dump(options.dump, "final_norm", {rows, d}, h);
  std::vector<float> logits(static_cast<size_t>(rows * v));
  cpu::linear(h, rows, weights_.lm_head, logits);

  state.position = pos0 + tokens;
  return logits;
}

}  // namespace megamoe::dsv4
