#include "model/deepseek_v4/model.hpp"

#include <algorithm>
#include <numeric>
#include <string>

#include "core/error.hpp"

namespace megamoe::dsv4 {

Model::Model(std::unique_ptr<Checkpoint> checkpoint, const ModelOptions& options)
    : checkpoint_(std::move(checkpoint)),
      config_(checkpoint_->config()),
      backend_(make_backend(options.device, *checkpoint_, options.backend)) {}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const ModelOptions& options) {
  return std::make_unique<Model>(Checkpoint::open(dir), options);
}

void Model::check_context(int64_t end) const {
  MEGAMOE_CHECK(config_.max_position_embeddings <= 0 || end <= config_.max_position_embeddings,
                "forward: the context of ", end, " tokens exceeds max_position_embeddings = ",
                config_.max_position_embeddings);
  const int64_t capacity = backend_->options().max_context;
  MEGAMOE_CHECK(capacity <= 0 || end <= capacity, "forward: the context of ", end,
                " tokens exceeds the backend's max_context = ", capacity);
}

SequenceState Model::new_sequence() const { return SequenceState{0, backend_->new_cache()}; }

void Model::dump(const DumpFn* fn, const std::string& name, const DeviceTensor& t) const {
  if (fn == nullptr || !*fn) return;
  const std::vector<float> values = backend_->download(t);
  (*fn)(name, t.shape(), values);
}

// Attention of layer l over x [T, D] (after input_layernorm); out [T, D].
void Model::attention_block(const StepPlan& step, int64_t l, const DeviceTensor& x, DeviceTensor& out,
                            const DumpFn* dump_fn) const {
  Backend& b = *backend_;
  const ModelConfig& c = config_;
  const int64_t rows = step.rows(), heads = c.num_heads, dh = c.head_dim;
  const AttentionType type = c.layer_types.at(l);
  const RopeTableKind table = type == AttentionType::kSliding ? RopeTableKind::kMain : RopeTableKind::kCompress;
  const std::string name = "layers." + std::to_string(l) + ".attn";

  // Queries: c = RMS(x Wqa^T) [T, r_q]; q = c Wqb^T [T, H, d_h], per-head unweighted norm, RoPE.
  b.stage(Stage::kAttentionProjections);
  DeviceTensor cq = b.empty(DType::F32, {rows, c.q_lora_rank});
  b.linear({l, LinearRole::kQa}, x, cq);
  b.rms_norm(cq, c.q_lora_rank, {l, NormRole::kQa});
  DeviceTensor q = b.empty(DType::F32, {rows, heads, dh});
  b.linear({l, LinearRole::kQb}, cq, q);
  b.rms_norm(q, dh, {l, NormRole::kNone});
  b.rope(step, q, heads, table, /*inverse=*/false);
  dump(dump_fn, name + ".q", q);

  // The shared key/value: kv = RoPE(RMS(x Wkv^T)) [T, d_h].
  DeviceTensor kv = b.empty(DType::F32, {rows, dh});
  b.linear({l, LinearRole::kKv}, x, kv);
  b.rms_norm(kv, dh, {l, NormRole::kKv});
  b.rope(step, kv, 1, table, false);
  b.round_kv(kv);  // as the KV cache stores it (FP8 non-RoPE channels when kv_fp8)
  dump(dump_fn, name + ".kv", kv);

  // Compressed entries (CSA/HCA) and, for CSA, the indexer's selection per token.
  DeviceTensor selected;
  b.stage(Stage::kCompressorIndexer);
  if (type != AttentionType::kSliding) {
    const int64_t width = (type == AttentionType::kCompressedSparse ? 2 : 1) * dh;
    DeviceTensor ck = b.empty(DType::F32, {rows, width}), cz = b.empty(DType::F32, {rows, width});
    b.linear({l, LinearRole::kCompressorKv}, x, ck);
    b.linear({l, LinearRole::kCompressorGate}, x, cz);
    b.compressor(step, l, CompressorKind::kMain, ck, cz);
  }
  if (type == AttentionType::kCompressedSparse) {
    const int64_t hi = c.index_n_heads, di = c.index_head_dim;
    DeviceTensor ik = b.empty(DType::F32, {rows, 2 * di}), iz = b.empty(DType::F32, {rows, 2 * di});
    b.linear({l, LinearRole::kIndexerKv}, x, ik);
    b.linear({l, LinearRole::kIndexerGate}, x, iz);
    b.compressor(step, l, CompressorKind::kIndexer, ik, iz);
    DeviceTensor qi = b.empty(DType::F32, {rows, hi, di});
    b.linear({l, LinearRole::kIndexerQb}, cq, qi);
    b.rope(step, qi, hi, table, false);
    DeviceTensor head_w = b.empty(DType::F32, {rows, hi});
    b.linear({l, LinearRole::kIndexerWeights}, x, head_w);
    selected = b.empty(DType::I32, {rows, c.index_topk});
    b.indexer_topk(step, l, qi, head_w, selected);
    dump(dump_fn, name + ".index_q", qi);
  }

  // One softmax over window keys, compressed keys and the sink; inverse RoPE on the output.
  DeviceTensor o = b.empty(DType::F32, {rows, heads, dh});
  b.stage(Stage::kAttentionCore);
  b.attention(step, l, q, kv, selected, o);
  b.stage(Stage::kAttentionProjections);
  b.rope(step, o, heads, table, /*inverse=*/true);
  dump(dump_fn, name + ".o", o);

  // Grouped output projection: group g -> o_a[g] -> r_o; concat -> o_b -> D.
  DeviceTensor a = b.empty(DType::F32, {rows, c.o_groups * c.o_lora_rank});
  b.linear({l, LinearRole::kOa}, o, a);
  b.linear({l, LinearRole::kOb}, a, out);
}

std::vector<StepSequence> Model::check_inputs(std::span<const SequenceInput> inputs) const {
  const int64_t v = config_.vocab_size;
  MEGAMOE_CHECK(!inputs.empty(), "forward: no sequences");
  std::vector<StepSequence> seqs;
  for (size_t s = 0; s < inputs.size(); ++s) {
    const SequenceInput& in = inputs[s];
    MEGAMOE_CHECK(in.state != nullptr && in.state->cache != nullptr, "forward: sequence ", s, " has no state");
    MEGAMOE_CHECK(!in.ids.empty(), "forward: empty input (no token ids)");
    for (size_t t = 0; t < in.ids.size(); ++t) {
      MEGAMOE_CHECK(in.ids[t] >= 0 && in.ids[t] < v, "token id ", in.ids[t], " at index ", t,
                    " is outside the vocabulary [0, ", v, ")");
    }
    check_context(in.state->position + static_cast<int64_t>(in.ids.size()));
    for (size_t r = 0; r < s; ++r)
      MEGAMOE_CHECK(inputs[r].state != in.state, "forward: sequence ", s, " appears twice in one step");
    seqs.push_back({in.state->cache.get(), in.state->position, static_cast<int64_t>(in.ids.size())});
  }
  return seqs;
}

DeviceTensor Model::step_logits(const StepPlan& step, const DeviceTensor& ids, std::span<const int64_t> head_rows,
                                const DumpFn* dump_fn) const {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, v = c.vocab_size, nc = c.hc_mult, mix_width = (2 + nc) * nc;
  Backend& b = *backend_;
  const int64_t rows = step.rows();

  // Embedding, copied into the n_c residual streams: X [T, n_c, D].
  DeviceTensor streams = b.empty(DType::F32, {rows, nc, d});
  b.stage(Stage::kMhc);
  b.embed(ids, streams);
  DeviceTensor x = b.empty(DType::F32, {rows, d}), y = b.empty(DType::F32, {rows, d});
  DeviceTensor mix = b.empty(DType::F32, {rows, mix_width});
  if (dump_fn != nullptr) {
    // The embedding rows are stream 0 of X.
    const std::vector<float> xs = b.download(streams);
    std::vector<float> emb(static_cast<size_t>(rows * d));
    for (int64_t t = 0; t < rows; ++t) std::copy_n(xs.begin() + t * nc * d, d, emb.begin() + t * d);
    (*dump_fn)("embed", {rows, d}, emb);
  }

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string name = "layers." + std::to_string(l);
    b.stage(Stage::kMhc);
    b.hc_pre(l, HcSite::kAttention, streams, x, mix);
    dump(dump_fn, name + ".attn_in", x);
    attention_block(step, l, x, y, dump_fn);
    dump(dump_fn, name + ".attn_out", y);
    b.stage(Stage::kMhc);
    b.hc_post(streams, y, mix);

    b.hc_pre(l, HcSite::kFfn, streams, x, mix);
    dump(dump_fn, name + ".ffn_in", x);
    b.stage(Stage::kMoe);
    b.moe(l, x, ids, y);
    dump(dump_fn, name + ".ffn_out", y);
    b.stage(Stage::kMhc);
    b.hc_post(streams, y, mix);
    dump(dump_fn, name + ".streams", streams);
  }

  // Head: collapse the streams, final norm, lm_head (fp32 logits).
  const auto out_rows = static_cast<int64_t>(head_rows.size());
  DeviceTensor h = b.empty(DType::F32, {out_rows, d});
  b.hc_head(streams, head_rows, h);
  b.stage(Stage::kHead);
  b.rms_norm(h, d, {0, NormRole::kFinal});
  dump(dump_fn, "final_norm", h);
  DeviceTensor logits = b.empty(DType::F32, {out_rows, v});
  b.linear({0, LinearRole::kLmHead}, h, logits);
  return logits;
}

std::vector<std::vector<float>> Model::forward_batch(std::span<const SequenceInput> inputs,
                                                     const ForwardOptions& options) const {
  const int64_t v = config_.vocab_size;
  std::vector<StepSequence> seqs = check_inputs(inputs);  // everything, before any state changes
  std::vector<int32_t> all_ids;
  for (const SequenceInput& in : inputs) all_ids.insert(all_ids.end(), in.ids.begin(), in.ids.end());
  Backend& b = *backend_;
  const std::unique_ptr<StepPlan> step = b.plan(std::move(seqs));  // checks the backend's capacity
  const DeviceTensor ids = b.upload_ids(all_ids);
  std::vector<int64_t> head_rows;
  int64_t row0 = 0;
  for (const StepSequence& s : step->sequences) {
    for (int64_t t = options.last_logits_only ? s.tokens - 1 : 0; t < s.tokens; ++t) head_rows.push_back(row0 + t);
    row0 += s.tokens;
  }
  const std::vector<float> all_logits = b.download(step_logits(*step, ids, head_rows, options.dump));

  std::vector<std::vector<float>> out;
  int64_t r = 0;
  for (const SequenceInput& in : inputs) {
    const int64_t n = options.last_logits_only ? 1 : static_cast<int64_t>(in.ids.size());
    out.emplace_back(all_logits.begin() + r * v, all_logits.begin() + (r + n) * v);
    r += n;
    in.state->position += static_cast<int64_t>(in.ids.size());
  }
  return out;
}

// A decode step at fixed device addresses: its plan, inputs and outputs, and
// (when recorded) the graph that replays it.
struct Model::FixedStep {
  std::unique_ptr<StepPlan> plan;
  DeviceTensor ids, sample_rows, out, logits;
  std::unique_ptr<StepGraph> graph;
};

Model::~Model() = default;

int64_t Model::decode_bucket(int64_t n) const {
  const Backend& b = *backend_;
  if (!b.can_record() || n <= 0 || n > kMaxDecodeBucket) return 0;
  int64_t bucket = 1;
  while (bucket < n) bucket <<= 1;
  const int64_t max_rows = b.options().max_step_rows;
  return max_rows > 0 && bucket > max_rows ? 0 : bucket;
}

std::vector<int32_t> Model::decode(std::span<const DecodeInput> inputs, const DecodeOptions& options) const {
  std::vector<SequenceInput> as_inputs;
  std::vector<int32_t> ids;
  std::vector<SampleRequest> requests;
  for (const DecodeInput& in : inputs) {
    as_inputs.push_back({std::span<const int32_t>(&in.id, 1), in.state});
    ids.push_back(in.id);
    requests.push_back(in.sample);
  }
  std::vector<StepSequence> seqs = check_inputs(as_inputs);
  Backend& b = *backend_;
  const auto n = static_cast<int64_t>(inputs.size());
  const int64_t bucket = decode_bucket(n);
  std::vector<int32_t> next;
  DeviceTensor logits;
  if (bucket == 0) {  // the plain batched step, then the device sampler
    const std::unique_ptr<StepPlan> step = b.plan(std::move(seqs));
    std::vector<int64_t> head_rows(static_cast<size_t>(n));
    std::iota(head_rows.begin(), head_rows.end(), 0);
    logits = step_logits(*step, b.upload_ids(ids), head_rows, nullptr);
    next = b.sample(logits, requests);
  } else {
    FixedStep eager;
    FixedStep* fixed = &eager;
    if (options.graph) {
      std::unique_ptr<FixedStep>& cached = decode_steps_[bucket];
      if (cached == nullptr) cached = std::make_unique<FixedStep>();
      fixed = cached.get();
    }
    if (fixed->plan == nullptr) {
      fixed->plan = b.plan_fixed(std::move(seqs), bucket);
      fixed->ids = b.empty(DType::I32, {bucket});
      fixed->sample_rows = b.sample_rows(bucket);
      fixed->out = b.empty(DType::I32, {bucket});
    } else {
      b.update_fixed(*fixed->plan, std::move(seqs));
    }
    ids.resize(static_cast<size_t>(bucket), 0);  // padding rows read token 0
    b.write_ids(fixed->ids, ids);
    b.write_sample_rows(fixed->sample_rows, requests);  // padding rows stay greedy
    std::vector<int64_t> head_rows(static_cast<size_t>(bucket));  // every row, padding included
    std::iota(head_rows.begin(), head_rows.end(), 0);
    const auto body = [&] {
      fixed->logits = step_logits(*fixed->plan, fixed->ids, head_rows, nullptr);
      b.sample_into(fixed->logits, fixed->sample_rows, fixed->out);
    };
    if (options.graph) {
      if (fixed->graph == nullptr) fixed->graph = b.record(body);
      b.replay(*fixed->graph);
    } else {
      body();
    }
    next = b.download_ids(fixed->out);
    next.resize(static_cast<size_t>(n));
    logits = fixed->logits;
  }
  if (options.logits != nullptr) {
    const int64_t v = config_.vocab_size;
    const std::vector<float> all = b.download(logits);
    options.logits->clear();
    for (int64_t r = 0; r < n; ++r) options.logits->emplace_back(all.begin() + r * v, all.begin() + (r + 1) * v);
  }
  for (const DecodeInput& in : inputs) in.state->position += 1;
  return next;
}

std::vector<float> Model::forward(std::span<const int32_t> ids, SequenceState& state,
                                  const ForwardOptions& options) const {
  // A prompt longer than the backend's largest step runs as chunked prefill
  // (equal to whole prefill: every op continues the state exactly).
  const int64_t max_rows = backend_->options().max_step_rows;
  const size_t step = max_rows > 0 ? static_cast<size_t>(max_rows) : ids.size();
  if (ids.size() <= step) {
    const SequenceInput input{ids, &state};
    return std::move(forward_batch({&input, 1}, options).front());
  }
  check_context(state.position + static_cast<int64_t>(ids.size()));  // the whole prompt, before any chunk runs
  for (size_t t = 0; t < ids.size(); ++t)
    MEGAMOE_CHECK(ids[t] >= 0 && ids[t] < config_.vocab_size, "token id ", ids[t], " at index ", t,
                  " is outside the vocabulary [0, ", config_.vocab_size, ")");
  std::vector<float> logits;
  for (size_t begin = 0; begin < ids.size(); begin += step) {
    const size_t count = std::min(step, ids.size() - begin);
    const SequenceInput input{ids.subspan(begin, count), &state};
    std::vector<float> out = std::move(forward_batch({&input, 1}, options).front());
    if (options.last_logits_only) {
      logits = std::move(out);
    } else {
      logits.insert(logits.end(), out.begin(), out.end());
    }
  }
  return logits;
}

}  // namespace megamoe::dsv4
