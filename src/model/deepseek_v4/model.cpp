#include "model/deepseek_v4/model.hpp"

#include <algorithm>
#include <numeric>
#include <string>

#include "core/error.hpp"

namespace megamoe::dsv4 {

namespace {

// A sequence's state on a sharded model: one backend cache per rank.
class RankCaches : public SequenceCache {
 public:
  std::vector<std::unique_ptr<SequenceCache>> per_rank;
};

int64_t rank_count(const ModelOptions& options) {
  const int64_t ranks = options.devices.empty() ? options.ranks : static_cast<int64_t>(options.devices.size());
  MEGAMOE_CHECK(ranks >= 1, "model: the rank count must be >= 1, got ", ranks);
  for (size_t i = 0; i < options.devices.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      MEGAMOE_CHECK(options.devices[i] != options.devices[j], "model: device ", options.devices[i],
                    " is listed twice (one rank per device)");
  return ranks;
}

}  // namespace

Model::Model(std::unique_ptr<Checkpoint> checkpoint, const ModelOptions& options)
    : checkpoint_(std::move(checkpoint)), config_(checkpoint_->config()) {
  const int64_t ranks = rank_count(options);
  for (int64_t r = 0; r < ranks; ++r) layouts_.push_back(shard_layout(config_, {r, ranks}));  // clear errors first
  backends_.resize(static_cast<size_t>(ranks));
  if (ranks == 1) {
    BackendOptions bo = options.backend;
    if (!options.devices.empty()) bo.device = options.devices.front();
    backends_.front() = make_backend(options.device, *checkpoint_, bo);
    return;
  }
  // No device list: every rank on backend.device (cuda: over the host-staged
  // communicator, docs/parallel.md; cpu: the ids do not matter).
  std::vector<int> devices = options.devices;
  if (devices.empty()) devices.assign(static_cast<size_t>(ranks), options.backend.device);
  communicators_ = make_communicator_factory(options.device, devices);  // checks the devices exist
  CommunicatorFactory* comms = communicators_.get();
  threads_ = std::make_unique<RankThreads>(ranks, [comms] { comms->abort(); });
  // Each rank connects and loads its shard on its own thread (NCCL's init
  // waits for all ranks; a CUDA backend binds its device to that thread).
  threads_->run([&](int64_t r) {
    BackendOptions bo = options.backend;
    bo.shard = {r, ranks};
    bo.device = devices.at(static_cast<size_t>(r));
    bo.communicator = comms->connect(r, bo.device);  // first: NCCL's init waits for every rank
    backends_.at(static_cast<size_t>(r)) = make_backend(options.device, *checkpoint_, bo);
  });
}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const ModelOptions& options) {
  return std::make_unique<Model>(Checkpoint::open(dir), options);
}

void Model::on_every_rank(const std::function<void(int64_t)>& body) const {
  if (threads_ == nullptr) {
    body(0);
    return;
  }
  threads_->run([&](int64_t r) {
    backend(r).bind_thread();
    body(r);
  });
}

std::vector<StepSequence> Model::for_rank(std::vector<StepSequence> seqs, int64_t rank) const {
  if (ranks() == 1) return seqs;
  for (StepSequence& s : seqs) {
    auto* caches = dynamic_cast<RankCaches*>(s.cache);
    MEGAMOE_CHECK(caches != nullptr && caches->per_rank.size() == backends_.size(),
                  "forward: a sequence's state was not made by this model (new_sequence)");
    s.cache = caches->per_rank[static_cast<size_t>(rank)].get();
  }
  return seqs;
}

void Model::check_context(int64_t end) const {
  MEGAMOE_CHECK(config_.max_position_embeddings <= 0 || end <= config_.max_position_embeddings,
                "forward: the context of ", end, " tokens exceeds max_position_embeddings = ",
                config_.max_position_embeddings);
  const int64_t capacity = backend().options().max_context;
  MEGAMOE_CHECK(capacity <= 0 || end <= capacity, "forward: the context of ", end,
                " tokens exceeds the backend's max_context = ", capacity);
}

SequenceState Model::new_sequence() const {
  if (ranks() == 1) return SequenceState{0, backend().new_cache()};
  auto caches = std::make_unique<RankCaches>();
  caches->per_rank.resize(backends_.size());
  on_every_rank([&](int64_t r) { caches->per_rank[static_cast<size_t>(r)] = backend(r).new_cache(); });
  return SequenceState{0, std::move(caches)};
}

void Model::dump(Backend& b, const DumpFn* fn, const std::string& name, const DeviceTensor& t) const {
  if (fn == nullptr || !*fn) return;
  const std::vector<float> values = b.download(t);
  (*fn)(name, t.shape(), values);
}

// Attention of layer l over x [T, D] (after input_layernorm); out [T, D].
// Sharded, a rank computes its heads and their output-projection groups, so
// out is its partial sum until the all-reduce.
void Model::attention_block(int64_t rank, const StepPlan& step, int64_t l, const DeviceTensor& x, DeviceTensor& out,
                            const DumpFn* dump_fn) const {
  Backend& b = backend(rank);
  const ModelConfig& c = config_;
  const ShardLayout& shard = layouts_.at(static_cast<size_t>(rank));
  const int64_t rows = step.rows(), heads = shard.heads.size(), dh = c.head_dim;  // heads: this rank's
  const AttentionType type = c.layer_types.at(l);
  const RopeTableKind table = type == AttentionType::kSliding ? RopeTableKind::kMain : RopeTableKind::kCompress;
  const std::string name = "layers." + std::to_string(l) + ".attn";

  // Queries: c = RMS(x Wqa^T) [T, r_q]; q = c Wqb^T [T, H_r, d_h], per-head unweighted norm, RoPE.
  b.stage(Stage::kAttentionProjections);
  DeviceTensor cq = b.empty(DType::F32, {rows, c.q_lora_rank});
  b.linear({l, LinearRole::kQa}, x, cq);
  b.rms_norm(cq, c.q_lora_rank, {l, NormRole::kQa});
  DeviceTensor q = b.empty(DType::F32, {rows, heads, dh});
  b.linear({l, LinearRole::kQb}, cq, q);
  b.rms_norm(q, dh, {l, NormRole::kNone});
  b.rope(step, q, heads, table, /*inverse=*/false);
  dump(b, dump_fn, name + ".q", q);

  // The shared key/value: kv = RoPE(RMS(x Wkv^T)) [T, d_h].
  DeviceTensor kv = b.empty(DType::F32, {rows, dh});
  b.linear({l, LinearRole::kKv}, x, kv);
  b.rms_norm(kv, dh, {l, NormRole::kKv});
  b.rope(step, kv, 1, table, false);
  b.round_kv(kv);  // as the KV cache stores it (FP8 non-RoPE channels when kv_fp8)
  dump(b, dump_fn, name + ".kv", kv);

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
    dump(b, dump_fn, name + ".index_q", qi);
  }

  // One softmax over window keys, compressed keys and the sink; inverse RoPE on the output.
  DeviceTensor o = b.empty(DType::F32, {rows, heads, dh});
  b.stage(Stage::kAttentionCore);
  b.attention(step, l, q, kv, selected, o);
  b.stage(Stage::kAttentionProjections);
  b.rope(step, o, heads, table, /*inverse=*/true);
  dump(b, dump_fn, name + ".o", o);

  // Grouped output projection: group g -> o_a[g] -> r_o; concat -> o_b -> D
  // (sharded: this rank's groups, then the sum over ranks).
  DeviceTensor a = b.empty(DType::F32, {rows, shard.groups.size() * c.o_lora_rank});
  b.linear({l, LinearRole::kOa}, o, a);
  b.linear({l, LinearRole::kOb}, a, out);
  b.stage(Stage::kCollective);
  b.all_reduce_sum(out);
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

DeviceTensor Model::step_logits(int64_t rank, const StepPlan& step, const DeviceTensor& ids,
                                std::span<const int64_t> head_rows, const DumpFn* dump_fn) const {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, v = c.vocab_size, nc = c.hc_mult, mix_width = (2 + nc) * nc;
  Backend& b = backend(rank);
  const ShardLayout& shard = layouts_.at(static_cast<size_t>(rank));
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
    dump(b, dump_fn, name + ".attn_in", x);
    attention_block(rank, step, l, x, y, dump_fn);
    dump(b, dump_fn, name + ".attn_out", y);
    b.stage(Stage::kMhc);
    b.hc_post(streams, y, mix);

    b.hc_pre(l, HcSite::kFfn, streams, x, mix);
    dump(b, dump_fn, name + ".ffn_in", x);
    b.stage(Stage::kMoe);
    b.moe(l, x, ids, y);  // sharded: this rank's experts and shared-expert slice
    b.stage(Stage::kCollective);
    b.all_reduce_sum(y);  // not merged with attention's: hc_post/hc_pre between them need the full sum
    dump(b, dump_fn, name + ".ffn_out", y);
    b.stage(Stage::kMhc);
    b.hc_post(streams, y, mix);
    dump(b, dump_fn, name + ".streams", streams);
  }

  // Head: collapse the streams, final norm, lm_head (fp32 logits).
  const auto out_rows = static_cast<int64_t>(head_rows.size());
  DeviceTensor h = b.empty(DType::F32, {out_rows, d});
  b.hc_head(streams, head_rows, h);
  b.stage(Stage::kHead);
  b.rms_norm(h, d, {0, NormRole::kFinal});
  dump(b, dump_fn, "final_norm", h);
  DeviceTensor logits = b.empty(DType::F32, {out_rows, v});
  if (!shard.shard.sharded()) {
    b.linear({0, LinearRole::kLmHead}, h, logits);
    return logits;
  }
  // This rank's vocabulary rows, then every rank's columns side by side: all
  // ranks hold the same logits and sample the same ids from the same draws.
  DeviceTensor part = b.empty(DType::F32, {out_rows, shard.vocab.size()});
  b.linear({0, LinearRole::kLmHead}, h, part);
  b.all_gather_columns(part, logits);  // timed with the head: the comm stage is the layers' all-reduces
  return logits;
}

std::vector<std::vector<float>> Model::forward_batch(std::span<const SequenceInput> inputs,
                                                     const ForwardOptions& options) const {
  const int64_t v = config_.vocab_size;
  std::vector<StepSequence> seqs = check_inputs(inputs);  // everything, before any state changes
  std::vector<int32_t> all_ids;
  for (const SequenceInput& in : inputs) all_ids.insert(all_ids.end(), in.ids.begin(), in.ids.end());
  std::vector<int64_t> head_rows;
  int64_t row0 = 0;
  for (const StepSequence& s : seqs) {
    for (int64_t t = options.last_logits_only ? s.tokens - 1 : 0; t < s.tokens; ++t) head_rows.push_back(row0 + t);
    row0 += s.tokens;
  }
  std::vector<float> all_logits;
  on_every_rank([&](int64_t r) {
    Backend& b = backend(r);
    const std::unique_ptr<StepPlan> step = b.plan(for_rank(seqs, r));  // checks the backend's capacity
    const DeviceTensor ids = b.upload_ids(all_ids);
    const DeviceTensor logits = step_logits(r, *step, ids, head_rows, r == 0 ? options.dump : nullptr);
    if (r == 0) all_logits = b.download(logits);  // every rank holds the same logits
  });

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

Model::~Model() {
  if (threads_ == nullptr) return;
  // Each rank's recorded steps and backend go on its own thread (its device current).
  try {
    threads_->run([&](int64_t r) {
      backend(r).bind_thread();
      for (auto& [bucket, steps] : decode_steps_)
        if (static_cast<size_t>(r) < steps.size()) steps[static_cast<size_t>(r)].reset();
      backends_[static_cast<size_t>(r)].reset();
    });
  } catch (...) {  // a destructor does not throw; what is left is freed below on this thread
  }
}

int64_t Model::decode_bucket(int64_t n) const {
  const Backend& b = backend();
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
  const std::vector<StepSequence> seqs = check_inputs(as_inputs);
  const auto n = static_cast<int64_t>(inputs.size());
  const int64_t bucket = decode_bucket(n);
  std::vector<int64_t> head_rows(static_cast<size_t>(bucket == 0 ? n : bucket));  // padding rows included
  std::iota(head_rows.begin(), head_rows.end(), 0);
  if (bucket > 0) ids.resize(static_cast<size_t>(bucket), 0);  // padding rows read token 0
  std::vector<std::unique_ptr<FixedStep>>* cached = nullptr;
  if (bucket > 0 && options.graph) {
    cached = &decode_steps_[bucket];
    cached->resize(backends_.size());
  }
  // Every rank samples from the same logits with the same draws, so all hold
  // the same ids (what several hosts need); rank 0's are returned.
  std::vector<std::vector<int32_t>> next(backends_.size());
  std::vector<float> all_logits;
  on_every_rank([&](int64_t r) {
    Backend& b = backend(r);
    DeviceTensor logits;
    if (bucket == 0) {  // the plain batched step, then the device sampler
      const std::unique_ptr<StepPlan> step = b.plan(for_rank(seqs, r));
      logits = step_logits(r, *step, b.upload_ids(ids), head_rows, nullptr);
      next[static_cast<size_t>(r)] = b.sample(logits, requests);
    } else {
      FixedStep eager;
      FixedStep* fixed = &eager;
      if (cached != nullptr) {
        std::unique_ptr<FixedStep>& slot = cached->at(static_cast<size_t>(r));
        if (slot == nullptr) slot = std::make_unique<FixedStep>();
        fixed = slot.get();
      }
      if (fixed->plan == nullptr) {
        fixed->plan = b.plan_fixed(for_rank(seqs, r), bucket);
        fixed->ids = b.empty(DType::I32, {bucket});
        fixed->sample_rows = b.sample_rows(bucket);
        fixed->out = b.empty(DType::I32, {bucket});
      } else {
        b.update_fixed(*fixed->plan, for_rank(seqs, r));
      }
      b.write_ids(fixed->ids, ids);
      b.write_sample_rows(fixed->sample_rows, requests);  // padding rows stay greedy
      // Each rank records its own graph, collectives included.
      const auto body = [&] {
        fixed->logits = step_logits(r, *fixed->plan, fixed->ids, head_rows, nullptr);
        b.sample_into(fixed->logits, fixed->sample_rows, fixed->out);
      };
      if (options.graph) {
        if (fixed->graph == nullptr) fixed->graph = b.record(body);
        b.replay(*fixed->graph);
      } else {
        body();
      }
      std::vector<int32_t> out = b.download_ids(fixed->out);
      out.resize(static_cast<size_t>(n));
      next[static_cast<size_t>(r)] = std::move(out);
      logits = fixed->logits;
    }
    if (r == 0 && options.logits != nullptr) all_logits = b.download(logits);
  });
  for (size_t r = 1; r < next.size(); ++r)
    MEGAMOE_CHECK(next[r] == next[0], "decode: rank ", r, " sampled other ids than rank 0 (its logits differ)");
  if (options.logits != nullptr) {
    const int64_t v = config_.vocab_size;
    options.logits->clear();
    for (int64_t r = 0; r < n; ++r)
      options.logits->emplace_back(all_logits.begin() + r * v, all_logits.begin() + (r + 1) * v);
  }
  for (const DecodeInput& in : inputs) in.state->position += 1;
  return next.front();
}

std::vector<float> Model::forward(std::span<const int32_t> ids, SequenceState& state,
                                  const ForwardOptions& options) const {
  // A prompt longer than the backend's largest step runs as chunked prefill
  // (equal to whole prefill: every op continues the state exactly).
  const int64_t max_rows = backend().options().max_step_rows;
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
