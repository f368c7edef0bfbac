#include "backend/cpu/cpu_backend.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/dsv4/attention.hpp"
#include "backend/cpu/dsv4/compressor.hpp"
#include "backend/cpu/dsv4/hyper_connection.hpp"
#include "backend/cpu/dsv4/kv_round.hpp"
#include "backend/cpu/load.hpp"
#include "backend/cpu/moe.hpp"
#include "backend/cpu/ops.hpp"
#include "backend/cpu/sample.hpp"
#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace megamoe::cpu {
namespace {

std::span<const float> span_of(const Tensor& t) { return {t.data<float>(), static_cast<size_t>(t.numel())}; }
std::span<float> span_of(const DeviceTensor& t) { return {t.data<float>(), static_cast<size_t>(t.numel())}; }

dsv4::HcParams hc_params(const ModelConfig& cfg) {
  return {cfg.hc_mult, cfg.hidden_size, cfg.hc_sinkhorn_iters, static_cast<float>(cfg.hc_eps),
          static_cast<float>(cfg.rms_norm_eps)};
}

void check_rows(const DeviceTensor& t, int64_t rows, int64_t width, const char* what) {
  MEGAMOE_CHECK(t.dtype() == DType::F32 && t.numel() == rows * width, "cpu backend: ", what, " has shape ",
                shape_str(t.shape()), ", expected ", rows, " x ", width, " fp32 values");
}

// mix row layout: pre [n_c], post [n_c], comb [n_c, n_c].
void pack_mix(const dsv4::HcMix& m, float* out) {
  std::copy(m.pre.begin(), m.pre.end(), out);
  std::copy(m.post.begin(), m.post.end(), out + m.pre.size());
  std::copy(m.comb.begin(), m.comb.end(), out + 2 * m.pre.size());
}
dsv4::HcMix unpack_mix(const float* in, int64_t nc) {
  dsv4::HcMix m;
  m.pre.assign(in, in + nc);
  m.post.assign(in + nc, in + 2 * nc);
  m.comb.assign(in + 2 * nc, in + 2 * nc + nc * nc);
  return m;
}

}  // namespace

namespace {

// Prompts longer than this run as chunked prefill (Model::forward): activation
// memory stays that of one chunk, and the per-sequence state grows linearly.
constexpr int64_t kDefaultCpuStepRows = 1024;

BackendOptions with_cpu_defaults(BackendOptions options) {
  if (options.max_step_rows <= 0) options.max_step_rows = kDefaultCpuStepRows;
  if (options.shard.sharded()) {
    MEGAMOE_CHECK(options.communicator != nullptr && options.communicator->size() == options.shard.size &&
                      options.communicator->rank() == options.shard.rank,
                  "cpu backend: rank ", options.shard.rank, " of ", options.shard.size,
                  " needs a communicator of that rank and size");
  }
  return options;
}

}  // namespace

CpuBackend::CpuBackend(const Checkpoint& checkpoint, const BackendOptions& options)
    : config_(checkpoint.config()),
      options_(with_cpu_defaults(options)),
      shard_(shard_layout(config_, options.shard)),
      weights_(dsv4::load_model_weights(checkpoint, dsv4::LoadOptions{options.eager_expert_bytes, options.shard})),
      rope_main_(config_.rope_main, config_.rope_head_dim),
      rope_compress_(config_.rope_compress, config_.rope_head_dim) {
  if (options_.moe_activations == MoeActivationFormat::kW4A4) {
    for (int64_t l = 0; l < config_.num_layers; ++l) input_scales_.push_back(read_expert_input_scales(checkpoint, l));
  }
}

DeviceTensor CpuBackend::empty(DType dtype, Shape shape) {
  const int64_t n = shape_numel(shape);
  MEGAMOE_CHECK(dtype == DType::F32 || dtype == DType::I32, "cpu backend: activations are fp32 or int32");
  std::shared_ptr<void> storage(std::calloc(static_cast<size_t>(std::max<int64_t>(n, 1)), 4), std::free);
  MEGAMOE_CHECK(storage != nullptr, "cpu backend: out of memory for ", shape_str(shape));
  return DeviceTensor(std::move(storage), dtype, std::move(shape));
}

DeviceTensor CpuBackend::upload_ids(std::span<const int32_t> ids) {
  DeviceTensor t = empty(DType::I32, {static_cast<int64_t>(ids.size())});
  std::memcpy(t.data<int32_t>(), ids.data(), ids.size_bytes());
  return t;
}

DeviceTensor CpuBackend::upload(std::span<const float> values, Shape shape) {
  MEGAMOE_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()), "upload: ", values.size(),
                " values for shape ", shape_str(shape));
  DeviceTensor t = empty(DType::F32, std::move(shape));
  std::memcpy(t.data<float>(), values.data(), values.size_bytes());
  return t;
}

std::vector<int32_t> CpuBackend::download_ids(const DeviceTensor& t) {
  MEGAMOE_CHECK(t.dtype() == DType::I32, "download_ids: only int32 tensors");
  return {t.data<int32_t>(), t.data<int32_t>() + t.numel()};
}

std::vector<float> CpuBackend::download(const DeviceTensor& t) {
  MEGAMOE_CHECK(t.dtype() == DType::F32, "download: only fp32 tensors");
  return {t.data<float>(), t.data<float>() + t.numel()};
}

std::unique_ptr<SequenceCache> CpuBackend::new_cache() {
  auto cache = std::make_unique<CpuCache>();
  cache->layers = dsv4::make_layer_states(config_);
  return cache;
}

std::unique_ptr<StepPlan> CpuBackend::plan(std::vector<StepSequence> sequences) {
  auto plan = std::make_unique<StepPlan>();
  for (const StepSequence& s : sequences) {
    MEGAMOE_CHECK(dynamic_cast<CpuCache*>(s.cache) != nullptr, "cpu backend: a sequence's cache is not a CPU cache");
    MEGAMOE_CHECK(s.tokens > 0, "step: a sequence with no tokens");
    for (int64_t t = 0; t < s.tokens; ++t) plan->row_pos.push_back(s.pos0 + t);
  }
  plan->sequences = std::move(sequences);
  return plan;
}

void CpuBackend::embed(const DeviceTensor& ids, DeviceTensor& streams) {
  const int64_t tokens = ids.numel(), d = config_.hidden_size, nc = config_.hc_mult;
  check_rows(streams, tokens, nc * d, "streams");
  const float* table = weights_.embed.data<float>();
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t id = ids.data<int32_t>()[t];
    MEGAMOE_CHECK(id >= 0 && id < config_.vocab_size, "embed: token id ", id, " outside the vocabulary");
    for (int64_t j = 0; j < nc; ++j) std::memcpy(streams.data<float>() + (t * nc + j) * d, table + id * d, d * 4);
  }
}

void CpuBackend::hc_pre(int64_t layer, HcSite site, const DeviceTensor& streams, DeviceTensor& u, DeviceTensor& mix) {
  const dsv4::LayerWeights& w = weights_.layers.at(layer);
  const dsv4::HyperConnectionWeights& hc = site == HcSite::kAttention ? w.attn_hc : w.ffn_hc;
  const Tensor& norm = site == HcSite::kAttention ? w.input_layernorm : w.post_attention_layernorm;
  const dsv4::HcParams p = hc_params(config_);
  const int64_t tokens = streams.numel() / (p.streams * p.hidden), mix_width = (2 + p.streams) * p.streams;
  check_rows(u, tokens, p.hidden, "hc_pre u");
  check_rows(mix, tokens, mix_width, "hc_pre mix");
  const float* x = streams.data<float>();
  ThreadPool::global().parallel_for(static_cast<size_t>(tokens), [&](size_t begin, size_t end) {
    for (size_t t = begin; t < end; ++t) {
      const dsv4::HcMix m = dsv4::hc_mix(x + t * p.streams * p.hidden, hc, p);
      dsv4::hc_collapse(x + t * p.streams * p.hidden, m.pre, p, u.data<float>() + t * p.hidden);
      pack_mix(m, mix.data<float>() + t * mix_width);
    }
  });
  rms_norm_rows(span_of(u), p.hidden, span_of(norm), static_cast<float>(config_.rms_norm_eps));
}

void CpuBackend::hc_post(DeviceTensor& streams, const DeviceTensor& y, const DeviceTensor& mix) {
  const dsv4::HcParams p = hc_params(config_);
  const int64_t stride = p.streams * p.hidden, tokens = streams.numel() / stride;
  const int64_t mix_width = (2 + p.streams) * p.streams;
  check_rows(y, tokens, p.hidden, "hc_post y");
  std::vector<float> next(static_cast<size_t>(stride));
  for (int64_t t = 0; t < tokens; ++t) {
    const dsv4::HcMix m = unpack_mix(mix.data<float>() + t * mix_width, p.streams);
    float* x = streams.data<float>() + t * stride;
    dsv4::hc_post(x, y.data<float>() + t * p.hidden, m, p, next.data());
    std::memcpy(x, next.data(), next.size() * 4);
  }
}

void CpuBackend::hc_head(const DeviceTensor& streams, std::span<const int64_t> rows, DeviceTensor& h) {
  const dsv4::HcParams p = hc_params(config_);
  check_rows(h, static_cast<int64_t>(rows.size()), p.hidden, "hc_head h");
  for (size_t r = 0; r < rows.size(); ++r) {
    dsv4::hc_head(streams.data<float>() + rows[r] * p.streams * p.hidden, weights_.hc_head, p,
                  h.data<float>() + r * p.hidden);
  }
}

const Tensor& CpuBackend::linear_weight(LinearKey key) const {
  if (key.role == LinearRole::kLmHead) return weights_.lm_head;
  const dsv4::AttentionWeights& a = weights_.layers.at(key.layer).attention;
  auto need = [&](bool present) { MEGAMOE_CHECK(present, "layer ", key.layer, " has no such linear weight"); };
  switch (key.role) {
    case LinearRole::kQa: return a.q_a_proj;
    case LinearRole::kQb: return a.q_b_proj;
    case LinearRole::kKv: return a.kv_proj;
    case LinearRole::kOa: return a.o_a_proj;
    case LinearRole::kOb: return a.o_b_proj;
    case LinearRole::kCompressorKv: need(a.compressor.has_value()); return a.compressor->kv_proj;
    case LinearRole::kCompressorGate: need(a.compressor.has_value()); return a.compressor->gate_proj;
    case LinearRole::kIndexerKv: need(a.indexer.has_value()); return a.indexer->compressor.kv_proj;
    case LinearRole::kIndexerGate: need(a.indexer.has_value()); return a.indexer->compressor.gate_proj;
    case LinearRole::kIndexerQb: need(a.indexer.has_value()); return a.indexer->q_b_proj;
    case LinearRole::kIndexerWeights: need(a.indexer.has_value()); return a.indexer->weights_proj;
    case LinearRole::kLmHead: break;
  }
  MEGAMOE_THROW("unknown linear role");
}

void CpuBackend::linear(LinearKey key, const DeviceTensor& x, DeviceTensor& y) {
  const Tensor& w = linear_weight(key);
  if (key.role != LinearRole::kOa) {
    const int64_t rows = x.numel() / w.dim(1);
    check_rows(x, rows, w.dim(1), "linear x");
    check_rows(y, rows, w.dim(0), "linear y");
    cpu::linear(span_of(x), rows, w, span_of(y));
    return;
  }
  // Grouped output projection: group g (heads g H/G ..) -> o_a[g] -> r_o.
  const int64_t groups = shard_.groups.size(), ro = config_.o_lora_rank, group_in = w.dim(1);
  const int64_t tokens = x.numel() / (groups * group_in);
  check_rows(x, tokens, groups * group_in, "o_a x");
  check_rows(y, tokens, groups * ro, "o_a y");
  const float* wa = w.data<float>();
  const float* o = x.data<float>();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t r = 0; r < ro; ++r)
        y.data<float>()[(t * groups + g) * ro + r] =
            cpu::dot(wa + (g * ro + r) * group_in, o + t * groups * group_in + g * group_in, group_in);
}

void CpuBackend::rms_norm(DeviceTensor& x, int64_t width, NormKey key) {
  const float eps = static_cast<float>(config_.rms_norm_eps);
  if (key.role == NormRole::kNone) {
    rms_norm_rows(span_of(x), width, eps);
    return;
  }
  const Tensor* w = nullptr;
  switch (key.role) {
    case NormRole::kInput: w = &weights_.layers.at(key.layer).input_layernorm; break;
    case NormRole::kPostAttention: w = &weights_.layers.at(key.layer).post_attention_layernorm; break;
    case NormRole::kQa: w = &weights_.layers.at(key.layer).attention.q_a_norm; break;
    case NormRole::kKv: w = &weights_.layers.at(key.layer).attention.kv_norm; break;
    case NormRole::kFinal: w = &weights_.norm; break;
    case NormRole::kNone: break;
  }
  MEGAMOE_CHECK(w->numel() == width, "rms_norm: weight of ", w->numel(), " values for rows of ", width);
  rms_norm_rows(span_of(x), width, span_of(*w), eps);
}

void CpuBackend::rope(const StepPlan& step, DeviceTensor& x, int64_t heads, RopeTableKind table, bool inverse) {
  const dsv4::RopeTable& r = table == RopeTableKind::kMain ? rope_main_ : rope_compress_;
  const int64_t rows = step.rows(), dim = x.numel() / (rows * heads);
  check_rows(x, rows, heads * dim, "rope x");
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t h = 0; h < heads; ++h) r.apply(x.data<float>() + (t * heads + h) * dim, dim, step.row_pos[t], inverse);
}

const dsv4::CompressorWeights& CpuBackend::compressor_weights(int64_t layer, CompressorKind which) const {
  const dsv4::AttentionWeights& a = weights_.layers.at(layer).attention;
  if (which == CompressorKind::kMain) {
    MEGAMOE_CHECK(a.compressor.has_value(), "layer ", layer, " has no compressor");
    return *a.compressor;
  }
  MEGAMOE_CHECK(a.indexer.has_value(), "layer ", layer, " has no indexer");
  return a.indexer->compressor;
}

void CpuBackend::compressor(const StepPlan& step, int64_t layer, CompressorKind which, const DeviceTensor& kv,
                            const DeviceTensor& gate) {
  const dsv4::CompressorWeights& w = compressor_weights(layer, which);
  const int64_t width = w.kv_proj.dim(0);
  check_rows(kv, step.rows(), width, "compressor kv");
  check_rows(gate, step.rows(), width, "compressor gate");
  const float eps = static_cast<float>(config_.rms_norm_eps);
  int64_t row = 0;
  for (const StepSequence& s : step.sequences) {
    dsv4::LayerState& ls = static_cast<CpuCache*>(s.cache)->layers.at(layer);
    dsv4::CompressorState& state = which == CompressorKind::kMain ? ls.compressor : ls.indexer;
    const int64_t before = state.entry_count();
    for (int64_t t = 0; t < s.tokens; ++t, ++row) {
      dsv4::compressor_push(state, w, kv.data<float>() + row * width, gate.data<float>() + row * width, s.pos0 + t,
                            rope_compress_, eps);
    }
    if (options_.kv_fp8 && which == CompressorKind::kMain) {  // main entries are stored like window KV
      for (int64_t e = before; e < state.entry_count(); ++e)
        dsv4::round_kv_row(state.entries.data() + e * w.width, w.width, config_.rope_head_dim);
    }
  }
}

void CpuBackend::indexer_topk(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& head_w,
                              DeviceTensor& selected) {
  const int64_t hi = config_.index_n_heads, di = config_.index_head_dim, k = config_.index_topk;
  const int64_t rate = config_.compress_rates.at(layer);
  check_rows(q, step.rows(), hi * di, "indexer q");
  check_rows(head_w, step.rows(), hi, "indexer head weights");
  MEGAMOE_CHECK(selected.dtype() == DType::I32 && selected.numel() == step.rows() * k, "indexer: selected must be [",
                step.rows(), ", ", k, "] int32");
  std::vector<std::pair<const float*, int64_t>> row_entries;  // per row: entries and visible count
  for (const StepSequence& s : step.sequences) {
    const dsv4::CompressorState& state = static_cast<CpuCache*>(s.cache)->layers.at(layer).indexer;
    for (int64_t t = 0; t < s.tokens; ++t) row_entries.emplace_back(state.entries.data(), (s.pos0 + t + 1) / rate);
  }
  ThreadPool::global().parallel_for(static_cast<size_t>(step.rows()), [&](size_t begin, size_t end) {
    for (size_t t = begin; t < end; ++t) {
      const auto [entries, visible] = row_entries[t];
      const std::vector<float> scores =
          dsv4::indexer_scores(q.data<float>() + t * hi * di, head_w.data<float>() + t * hi, entries, visible, hi, di);
      const std::vector<int64_t> top = dsv4::indexer_top_k(scores, k);
      int32_t* out = selected.data<int32_t>() + t * k;
      for (int64_t i = 0; i < k; ++i) out[i] = i < static_cast<int64_t>(top.size()) ? static_cast<int32_t>(top[i]) : -1;
    }
  });
}

void CpuBackend::round_kv(DeviceTensor& kv) {
  if (!options_.kv_fp8) return;
  const int64_t dh = config_.head_dim, rows = kv.numel() / dh;
  for (int64_t r = 0; r < rows; ++r) dsv4::round_kv_row(kv.data<float>() + r * dh, dh, config_.rope_head_dim);
}

void CpuBackend::attention(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& kv,
                           const DeviceTensor& selected, DeviceTensor& out) {
  const dsv4::AttentionWeights& w = weights_.layers.at(layer).attention;
  const int64_t heads = shard_.heads.size(), dh = config_.head_dim, window = config_.sliding_window;
  const int64_t rate = config_.compress_rates.at(layer), k = config_.index_topk;
  check_rows(q, step.rows(), heads * dh, "attention q");
  check_rows(kv, step.rows(), dh, "attention kv");
  check_rows(out, step.rows(), heads * dh, "attention out");
  const float scale = 1.f / std::sqrt(static_cast<float>(dh));
  const float* sinks = w.sinks.data<float>();
  int64_t row0 = 0;
  for (const StepSequence& s : step.sequences) {
    dsv4::LayerState& state = static_cast<CpuCache*>(s.cache)->layers.at(layer);
    // keys = [cached window | this sequence's rows]
    const int64_t cached = static_cast<int64_t>(state.window.size()) / dh;
    std::vector<float> keys = state.window;
    keys.insert(keys.end(), kv.data<float>() + row0 * dh, kv.data<float>() + (row0 + s.tokens) * dh);
    const float* entries = state.compressor.entries.data();
    ThreadPool::global().parallel_for(static_cast<size_t>(s.tokens * heads), [&](size_t begin, size_t end) {
      std::vector<const float*> key_rows;
      for (size_t idx = begin; idx < end; ++idx) {
        const int64_t t = static_cast<int64_t>(idx) / heads, h = static_cast<int64_t>(idx) % heads;
        key_rows.clear();
        const int64_t last = cached + t;  // this token's row in `keys`
        for (int64_t r = std::max<int64_t>(0, last - window + 1); r <= last; ++r) key_rows.push_back(&keys[r * dh]);
        if (w.indexer) {
          const int32_t* sel = selected.data<int32_t>() + (row0 + t) * k;
          for (int64_t i = 0; i < k; ++i)
            if (sel[i] >= 0) key_rows.push_back(entries + sel[i] * dh);
        } else if (w.compressor) {
          const int64_t visible = (s.pos0 + t + 1) / rate;
          for (int64_t e = 0; e < visible; ++e) key_rows.push_back(entries + e * dh);
        }
        dsv4::attend_row(q.data<float>() + ((row0 + t) * heads + h) * dh, key_rows, dh, scale, sinks[h],
                         out.data<float>() + ((row0 + t) * heads + h) * dh);
      }
    });
    // Keep the last W - 1 keys for the next step.
    const int64_t total = cached + s.tokens, keep = std::min<int64_t>(window - 1, total);
    state.window.assign(keys.end() - keep * dh, keys.end());
    row0 += s.tokens;
  }
}

void CpuBackend::moe(int64_t layer, const DeviceTensor& x, const DeviceTensor& ids, DeviceTensor& y) {
  const dsv4::MoeLayerWeights& w = weights_.layers.at(layer).moe;
  MoeWeights mw;
  mw.dims = moe_dims(config_);
  mw.gate = span_of(w.gate);
  if (!w.bias.empty()) mw.bias = span_of(w.bias);
  mw.tid2eid = w.tid2eid;
  const int64_t first = shard_.experts.begin;  // this rank holds experts [first, first + E_local)
  if (w.expert_refs.empty() && !options_.shard.sharded()) {
    mw.w1 = span_of(w.w1);
    mw.w3 = span_of(w.w3);
    mw.w2 = span_of(w.w2);
  } else if (w.expert_refs.empty()) {  // the local block, copied out per expert (the router sees all E)
    mw.load_expert = [&w, first](int64_t e, std::vector<float>& w1, std::vector<float>& w3, std::vector<float>& w2) {
      const Tensor* src[3] = {&w.w1, &w.w3, &w.w2};
      std::vector<float>* outs[3] = {&w1, &w3, &w2};
      for (int i = 0; i < 3; ++i) {
        const int64_t n = src[i]->numel() / src[i]->dim(0);
        const float* begin = src[i]->data<float>() + (e - first) * n;
        outs[i]->assign(begin, begin + n);
      }
    };
  } else {
    mw.load_expert = [&w, first](int64_t e, std::vector<float>& w1, std::vector<float>& w3, std::vector<float>& w2) {
      const auto& refs = w.expert_refs.at(static_cast<size_t>(e - first));
      std::vector<float>* outs[3] = {&w1, &w3, &w2};
      for (int i = 0; i < 3; ++i) {
        const Tensor t = dequantize_weight(refs[i]);
        outs[i]->assign(t.data<float>(), t.data<float>() + t.numel());
      }
    };
  }
  mw.dims.shared_intermediate = shard_.shared.size();  // this rank's slice
  if (mw.dims.shared_intermediate > 0) {
    mw.shared_w1 = span_of(w.shared_w1);
    mw.shared_w3 = span_of(w.shared_w3);
    mw.shared_w2 = span_of(w.shared_w2);
  }
  MoeOptions options;
  options.round_input_bf16 = options_.emulate_gpu_moe_bf16;
  options.round_hidden_bf16 = options_.emulate_gpu_moe_bf16;
  if (options_.moe_activations == MoeActivationFormat::kW4A4) {
    options.activations_nvfp4 = true;
    mw.input_scale_w13 = input_scales_.at(layer).w13;
    mw.input_scale_w2 = input_scales_.at(layer).w2;
  }
  const int64_t tokens = ids.numel();
  check_rows(x, tokens, config_.hidden_size, "moe x");
  check_rows(y, tokens, config_.hidden_size, "moe y");
  const std::span<const int32_t> token_ids{ids.data<int32_t>(), static_cast<size_t>(tokens)};
  Routing routing = moe_route(mw, span_of(x), token_ids, tokens, options);  // every rank routes every token
  for (int32_t& e : routing.experts)
    if (!shard_.experts.contains(e)) e = -1;  // another rank's expert: its share arrives in the all-reduce
  moe_forward_routed(mw, span_of(x), routing, span_of(y), options);
}

void CpuBackend::all_reduce_sum(DeviceTensor& x) {
  if (!options_.shard.sharded()) return;
  options_.communicator->all_reduce_sum(x.data<float>(), static_cast<size_t>(x.numel()), nullptr);
}

void CpuBackend::all_gather_columns(const DeviceTensor& part, DeviceTensor& full) {
  const int64_t ranks = options_.shard.size, rows = part.dim(0), width = full.dim(1);
  check_rows(part, rows, shard_.vocab.size(), "all_gather part");
  check_rows(full, rows, width, "all_gather full");
  // Every rank sends a part padded to the widest one; the gather lands rank-major.
  const int64_t padded = max_shard_size(width, ranks);
  std::vector<float> send(static_cast<size_t>(rows * padded), 0.f), recv(static_cast<size_t>(ranks * rows * padded));
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(send.data() + r * padded, part.data<float>() + r * part.dim(1), static_cast<size_t>(part.dim(1)) * 4);
  if (ranks > 1) {
    options_.communicator->all_gather(send.data(), recv.data(), send.size(), nullptr);
  } else {
    recv = send;
  }
  for (int64_t k = 0; k < ranks; ++k) {
    const IndexRange cols = shard_range(width, {k, ranks});
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(full.data<float>() + r * width + cols.begin, recv.data() + (k * rows + r) * padded,
                  static_cast<size_t>(cols.size()) * 4);
  }
}

std::vector<int32_t> CpuBackend::sample(const DeviceTensor& logits, std::span<const SampleRequest> rows) {
  const int64_t v = config_.vocab_size;
  check_rows(logits, static_cast<int64_t>(rows.size()), v, "sample logits");
  std::vector<int32_t> ids(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const float* row = logits.data<float>() + r * v;
    for (int64_t i = 0; i < v; ++i)  // never a token from non-finite logits (as Sampler::sample)
      MEGAMOE_CHECK(std::isfinite(row[i]), "sampling: the model produced a non-finite logit (", row[i],
                    ") for token id ", i, " in row ", r, "; no token is emitted from it");
    ids[r] = choose_token({row, static_cast<size_t>(v)}, rows[r].temperature, rows[r].top_k, rows[r].top_p,
                          rows[r].u01);
  }
  return ids;
}

}  // namespace megamoe::cpu
