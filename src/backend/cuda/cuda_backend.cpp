#include "backend/cuda/cuda_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "backend/cpu/dsv4/rope.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_weights.hpp"
#include "backend/cuda/device.hpp"
#include "backend/cuda/memory.hpp"
#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "kernels/attention/attention_params.hpp"
#include "kernels/attention/kv_fp8_params.hpp"
#include "kernels/mhc/mhc_params.hpp"
#include "kernels/moe/dense_moe_params.hpp"
#include "kernels/norm/norm_params.hpp"
#include "kernels/sample/sample_params.hpp"

namespace megamoe::cuda {
namespace {

// Per-layer state pools for all slots (kernels/attention/attention_params.hpp).
struct LayerPools {
  DeviceBuffer window;
  kernels::CompressorPools compressor{}, indexer{};
  DeviceBuffer c_buf_kv, c_buf_gate, c_ov_kv, c_ov_gate, c_entries;
  DeviceBuffer i_buf_kv, i_buf_gate, i_ov_kv, i_ov_gate, i_entries;
};

struct SlotPool {
  std::mutex mutex;
  std::vector<bool> used;
};

class CudaCache : public SequenceCache {
 public:
  CudaCache(std::shared_ptr<SlotPool> pool, int slot) : pool_(std::move(pool)), slot_(slot) {}
  ~CudaCache() override {
    std::lock_guard<std::mutex> lock(pool_->mutex);
    pool_->used[slot_] = false;
  }
  int slot() const { return slot_; }

 private:
  std::shared_ptr<SlotPool> pool_;
  int slot_;
};

class CudaPlan : public StepPlan {
 public:
  kernels::StepMeta meta;
  std::shared_ptr<void> storage;  // the device copy of the arrays meta points into
  // rate -> (count, device [2, count]: seq, index); entries with index -1 are padding.
  std::map<int, std::pair<int, const int32_t*>> windows;
  int64_t fixed_rows = 0;  // plan_fixed: rows of one token each (sequences, then padding)
  size_t storage_ints = 0;
};

class CudaGraph : public StepGraph {
 public:
  ~CudaGraph() override {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::shared_ptr<void> pool;  // the private arena pool its kernels' buffers came from
};

// A step's device arrays back to back (kernels::StepMeta): row_seq, row_pos,
// seq_slot, seq_pos0, seq_tokens, seq_row0, then per compressor rate the
// closing windows' sequence and index lists.
struct StepLayout {
  std::vector<int32_t> host;
  int rows = 0, batch = 0;
  size_t row_seq = 0, row_pos = 0, seq_slot = 0, seq_pos0 = 0, seq_tokens = 0, seq_row0 = 0;
  std::map<int, std::pair<size_t, int>> windows;  // rate -> (offset of the seq list, count)
  std::vector<int64_t> positions;                 // [rows] as StepPlan::row_pos
};

const float* f32(const DeviceBuffer& b) { return b.as<float>(); }

class CudaBackend : public Backend {
 public:
  CudaBackend(const Checkpoint& checkpoint, const BackendOptions& options)
      : config_(checkpoint.config()), options_(options), shard_(shard_layout(config_, options.shard)) {
    const ModelConfig& c = config_;
    if (options_.max_context <= 0) {
      options_.max_context = std::min<int64_t>(c.max_position_embeddings > 0 ? c.max_position_embeddings : 65536, 65536);
    }
    // The MoE op sizes its workspaces for a step's rows (per layer), so steps
    // are capped; Model::forward runs longer prompts as chunked prefill.
    if (options_.max_step_rows <= 0) options_.max_step_rows = std::min<int64_t>(options_.max_context, 2048);
    MEGAMOE_CHECK(options_.max_sequences > 0 && options_.max_sequences <= 4096, "cuda: max_sequences ",
                  options_.max_sequences, " must be in [1, 4096]");
    MEGAMOE_CHECK(options_.max_step_rows <= (int64_t{1} << 24), "cuda: max_step_rows too large");
    MEGAMOE_CUDA_CHECK(cudaGetDevice(&device_));
    describe_ = "cuda: " + describe_device(device_);
    model_ = load_device_model(checkpoint, options_.max_step_rows, options_.progress, options_.moe_activations,
                               options_.shard);
    allocate_pools();
    reset_slot(scratch_slot());
    dsv4::RopeTable main(c.rope_main, c.rope_head_dim), compress(c.rope_compress, c.rope_head_dim);
    omega_main_ = upload_floats(main.frequencies());
    omega_compress_ = upload_floats(compress.frequencies());
    slots_ = std::make_shared<SlotPool>();
    slots_->used.assign(static_cast<size_t>(options_.max_sequences), false);
    error_flag_ = DeviceBuffer(sizeof(int32_t));
    MEGAMOE_CUDA_CHECK(cudaMemset(error_flag_.get(), 0, sizeof(int32_t)));
    // Fixed plans pad a batch to a power of two, so the sampler takes up to that many rows.
    sample_capacity_ = 1;
    while (sample_capacity_ < options_.max_sequences) sample_capacity_ <<= 1;
    sample_workspace_bytes_ =
        kernels::sample_workspace_bytes(static_cast<int>(sample_capacity_), static_cast<int>(c.vocab_size));
    sample_workspace_ = DeviceBuffer(sample_workspace_bytes_);
    MEGAMOE_CUDA_CHECK(cudaDeviceSynchronize());
  }

  ~CudaBackend() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string describe() const override { return describe_; }
  void bind_thread() override { MEGAMOE_CUDA_CHECK(cudaSetDevice(device_)); }
  const ModelConfig& config() const override { return config_; }
  const BackendOptions& options() const override { return options_; }

  DeviceTensor empty(DType dtype, Shape shape) override {
    MEGAMOE_CHECK(dtype == DType::F32 || dtype == DType::I32, "cuda backend: activations are fp32 or int32");
    const int64_t n = shape_numel(shape);
    return DeviceTensor(arena_.get(static_cast<size_t>(n) * 4), dtype, std::move(shape));
  }

  DeviceTensor upload_ids(std::span<const int32_t> ids) override {
    DeviceTensor t = empty(DType::I32, {static_cast<int64_t>(ids.size())});
    staging_.copy_to_device(t.data<int32_t>(), ids.data(), ids.size_bytes(), stream());
    return t;
  }

  DeviceTensor upload(std::span<const float> values, Shape shape) override {
    MEGAMOE_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()), "upload: ", values.size(),
                  " values for shape ", shape_str(shape));
    DeviceTensor t = empty(DType::F32, std::move(shape));
    staging_.copy_to_device(t.data<float>(), values.data(), values.size_bytes(), stream());
    return t;
  }

  std::vector<int32_t> download_ids(const DeviceTensor& t) override {
    MEGAMOE_CHECK(t.dtype() == DType::I32, "download_ids: only int32 tensors");
    MEGAMOE_CHECK(!recording_, "cuda: a download inside a recorded step");
    const size_t bytes = static_cast<size_t>(t.numel()) * 4;
    std::vector<int32_t> out(static_cast<size_t>(t.numel()));
    // Small reads (sampled ids) land in pinned memory: one short DMA, no staging copy by the driver.
    void* landing = bytes <= ids_out_.capacity() ? ids_out_.base() : out.data();
    MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(landing, t.data<int32_t>(), bytes, cudaMemcpyDeviceToHost, stream()));
    MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream()));
    if (landing != out.data()) std::memcpy(out.data(), landing, bytes);
    staging_.rewind();
    check_error_flag();
    return out;
  }

  std::vector<float> download(const DeviceTensor& t) override {
    MEGAMOE_CHECK(t.dtype() == DType::F32, "download: only fp32 tensors");
    MEGAMOE_CHECK(!recording_, "cuda: a download inside a recorded step");
    std::vector<float> out(static_cast<size_t>(t.numel()));
    MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(out.data(), t.data<float>(), out.size() * 4, cudaMemcpyDeviceToHost,
                                       stream_.get()));
    MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    staging_.rewind();
    check_error_flag();
    return out;
  }

  std::unique_ptr<SequenceCache> new_cache() override {
    int slot = -1;
    {
      std::lock_guard<std::mutex> lock(slots_->mutex);
      for (size_t i = 0; i < slots_->used.size(); ++i)
        if (!slots_->used[i]) {
          slots_->used[i] = true;
          slot = static_cast<int>(i);
          break;
        }
    }
    MEGAMOE_CHECK(slot >= 0, "cuda: all ", options_.max_sequences, " sequence slots are in use (max_sequences)");
    reset_slot(slot);
    return std::make_unique<CudaCache>(slots_, slot);
  }

  std::unique_ptr<StepPlan> plan(std::vector<StepSequence> sequences) override {
    auto plan = std::make_unique<CudaPlan>();
    const StepLayout layout = lay_out(sequences, 0);
    plan->storage = arena_.get(layout.host.size() * 4);
    plan->storage_ints = layout.host.size();
    write_plan(*plan, layout, std::move(sequences));
    return plan;
  }

  std::unique_ptr<StepPlan> plan_fixed(std::vector<StepSequence> sequences, int64_t rows) override {
    MEGAMOE_CHECK(rows >= static_cast<int64_t>(sequences.size()) && rows > 0, "cuda: a fixed plan of ", rows,
                  " rows for ", sequences.size(), " sequences");
    auto plan = std::make_unique<CudaPlan>();
    plan->fixed_rows = rows;
    const StepLayout layout = lay_out(sequences, rows);
    plan->storage = arena_.get(layout.host.size() * 4);
    plan->storage_ints = layout.host.size();
    write_plan(*plan, layout, std::move(sequences));
    return plan;
  }

  void update_fixed(StepPlan& step, std::vector<StepSequence> sequences) override {
    auto& plan = static_cast<CudaPlan&>(step);
    MEGAMOE_CHECK(plan.fixed_rows > 0 && static_cast<int64_t>(sequences.size()) <= plan.fixed_rows,
                  "cuda: update_fixed on a plan without room for ", sequences.size(), " sequences");
    const StepLayout layout = lay_out(sequences, plan.fixed_rows);  // before `sequences` is moved from
    write_plan(plan, layout, std::move(sequences));
  }

  void embed(const DeviceTensor& ids, DeviceTensor& streams) override {
    kernels::EmbedParams p;
    p.tokens = static_cast<int>(ids.numel());
    p.streams = static_cast<int>(config_.hc_mult);
    p.hidden = static_cast<int>(config_.hidden_size);
    p.vocab = static_cast<int>(config_.vocab_size);
    p.table_bf16 = model_.embed.view.format == kernels::LinearFormat::kBf16;
    p.table = model_.embed.view.w;
    p.ids = ids.data<int32_t>();
    p.x = streams.data<float>();
    p.error_flag = error_flag_.as<int32_t>();
    kernels::launch_embed(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void hc_pre(int64_t layer, HcSite site, const DeviceTensor& streams, DeviceTensor& u, DeviceTensor& mix) override {
    const DeviceLayer& w = model_.layers.at(layer);
    const DeviceHc& hc = site == HcSite::kAttention ? w.attn_hc : w.ffn_hc;
    kernels::HcPreParams p;
    p.streams = static_cast<int>(config_.hc_mult);
    p.hidden = static_cast<int>(config_.hidden_size);
    p.tokens = static_cast<int>(streams.numel() / (p.streams * p.hidden));
    p.sinkhorn_iters = static_cast<int>(config_.hc_sinkhorn_iters);
    p.hc_eps = static_cast<float>(config_.hc_eps);
    p.rms_eps = static_cast<float>(config_.rms_norm_eps);
    p.x = streams.data<float>();
    p.fn = f32(hc.fn), p.base = f32(hc.base), p.scale = f32(hc.scale);
    p.norm = f32(site == HcSite::kAttention ? w.input_norm : w.post_attention_norm);
    p.u = u.data<float>();
    p.mix = mix.data<float>();
    const std::shared_ptr<void> scratch = mix_split_scratch(p.tokens, (2 + p.streams) * p.streams, p.splits, p.split);
    kernels::launch_hc_pre(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void hc_post(DeviceTensor& streams, const DeviceTensor& y, const DeviceTensor& mix) override {
    kernels::HcPostParams p;
    p.streams = static_cast<int>(config_.hc_mult);
    p.hidden = static_cast<int>(config_.hidden_size);
    p.tokens = static_cast<int>(streams.numel() / (p.streams * p.hidden));
    p.x = streams.data<float>();
    p.y = y.data<float>();
    p.mix = mix.data<float>();
    kernels::launch_hc_post(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void hc_head(const DeviceTensor& streams, std::span<const int64_t> rows, DeviceTensor& h) override {
    const int64_t row_bytes = config_.hc_mult * config_.hidden_size * 4;
    // Gather the rows (contiguous runs in one copy each), then collapse them.
    DeviceTensor gathered = empty(DType::F32, {static_cast<int64_t>(rows.size()), config_.hc_mult, config_.hidden_size});
    for (size_t i = 0; i < rows.size();) {
      size_t j = i + 1;
      while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
      MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(gathered.data<void>()) + i * row_bytes,
                                         static_cast<const char*>(streams.data<void>()) + rows[i] * row_bytes,
                                         (j - i) * row_bytes, cudaMemcpyDeviceToDevice, stream()));
      i = j;
    }
    kernels::HcHeadParams p;
    p.tokens = static_cast<int>(rows.size());
    p.streams = static_cast<int>(config_.hc_mult);
    p.hidden = static_cast<int>(config_.hidden_size);
    p.first = 0;
    p.hc_eps = static_cast<float>(config_.hc_eps);
    p.rms_eps = static_cast<float>(config_.rms_norm_eps);
    p.x = gathered.data<float>();
    p.fn = f32(model_.hc_head.fn), p.base = f32(model_.hc_head.base), p.scale = f32(model_.hc_head.scale);
    p.h = h.data<float>();
    const std::shared_ptr<void> scratch = mix_split_scratch(p.tokens, p.streams, p.splits, p.split);
    kernels::launch_hc_head(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void linear(LinearKey key, const DeviceTensor& x, DeviceTensor& y) override {
    const DeviceLinear& w = linear_weight(key);
    kernels::LinearParams p;
    p.weight = w.view;
    p.groups = key.role == LinearRole::kOa ? static_cast<int>(shard_.groups.size()) : 1;  // this rank's groups
    const int64_t in = static_cast<int64_t>(w.view.in) * p.groups;
    MEGAMOE_CHECK(x.numel() % in == 0, "linear: input of ", x.numel(), " values is not rows of ", in);
    const int64_t rows = x.numel() / in;
    MEGAMOE_CHECK(y.numel() == rows * w.view.out, "linear: output of ", y.numel(), " values, expected ", rows, " x ",
                  w.view.out);
    p.tokens = static_cast<int>(rows);
    p.x = x.data<float>();
    p.ldx = static_cast<int>(in);
    p.y = y.data<float>();
    p.ldy = w.view.out;
    kernels::launch_linear(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void rms_norm(DeviceTensor& x, int64_t width, NormKey key) override {
    kernels::RmsNormParams p;
    p.rows = static_cast<int>(x.numel() / width);
    p.groups = 1;
    p.width = static_cast<int>(width);
    p.eps = static_cast<float>(config_.rms_norm_eps);
    p.x = x.data<float>();
    p.weight = norm_weight(key);
    kernels::launch_rms_norm(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void rope(const StepPlan& step, DeviceTensor& x, int64_t heads, RopeTableKind table, bool inverse) override {
    const auto& plan = static_cast<const CudaPlan&>(step);
    kernels::RopeParams p;
    p.rows = plan.meta.rows;
    p.heads = static_cast<int>(heads);
    p.dim = static_cast<int>(x.numel() / (plan.rows() * heads));
    p.rope_dim = static_cast<int>(config_.rope_head_dim);
    p.inverse = inverse;
    p.x = x.data<float>();
    p.omega = f32(table == RopeTableKind::kMain ? omega_main_ : omega_compress_);
    p.row_pos = plan.meta.row_pos;
    kernels::launch_rope(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void compressor(const StepPlan& step, int64_t layer, CompressorKind which, const DeviceTensor& kv,
                  const DeviceTensor& gate) override {
    const auto& plan = static_cast<const CudaPlan&>(step);
    const DeviceLayer& w = model_.layers.at(layer);
    const std::optional<DeviceCompressor>& c = which == CompressorKind::kMain ? w.compressor : w.indexer;
    MEGAMOE_CHECK(c.has_value(), "layer ", layer, " has no such compressor");
    kernels::CompressorParams p;
    p.step = plan.meta;
    p.pools = which == CompressorKind::kMain ? pools_.at(layer).compressor : pools_.at(layer).indexer;
    p.kv = kv.data<float>();
    p.gate = gate.data<float>();
    p.position_bias = f32(c->position_bias);
    p.norm = f32(c->norm);
    p.rms_eps = static_cast<float>(config_.rms_norm_eps);
    p.omega = f32(omega_compress_);
    p.rope_dim = static_cast<int>(config_.rope_head_dim);
    const auto& win = plan.windows.at(c->rate);
    p.windows = win.first;
    p.window_seq = win.second;
    p.window_index = win.second + win.first;
    kernels::launch_compressor(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
    if (options_.kv_fp8 && which == CompressorKind::kMain) {  // main entries are stored like window KV
      kernels::KvRoundParams r;
      r.dim = p.pools.width;
      r.rope_dim = p.rope_dim;
      r.step = plan.meta;
      r.windows = p.windows;
      r.window_seq = p.window_seq;
      r.window_index = p.window_index;
      r.entries = p.pools.entries;
      r.max_entries = p.pools.max_entries;
      kernels::launch_kv_round(r, stream());
      MEGAMOE_CUDA_CHECK_LAUNCH(stream());
    }
  }

  void round_kv(DeviceTensor& kv) override {
    if (!options_.kv_fp8) return;
    kernels::KvRoundParams r;
    r.dim = static_cast<int>(config_.head_dim);
    r.rope_dim = static_cast<int>(config_.rope_head_dim);
    r.rows = static_cast<int>(kv.numel() / config_.head_dim);
    r.x = kv.data<float>();
    kernels::launch_kv_round(r, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void indexer_topk(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& head_w,
                    DeviceTensor& selected) override {
    const auto& plan = static_cast<const CudaPlan&>(step);
    kernels::IndexerParams p;
    p.step = plan.meta;
    p.heads = static_cast<int>(config_.index_n_heads);
    p.dim = static_cast<int>(config_.index_head_dim);
    p.rate = static_cast<int>(config_.compress_rates.at(layer));
    p.top_k = static_cast<int>(config_.index_topk);
    p.max_entries = pools_.at(layer).indexer.max_entries;
    p.q = q.data<float>();
    p.head_w = head_w.data<float>();
    p.entries = pools_.at(layer).indexer.entries;
    p.selected = selected.data<int32_t>();
    std::shared_ptr<void> scored;
    if (kernels::indexer_split_scoring(p.step.rows)) {
      scored = arena_.get(static_cast<size_t>(p.step.rows) * p.max_entries * sizeof(uint64_t));
      p.scored = static_cast<uint64_t*>(scored.get());
    }
    kernels::launch_indexer(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void attention(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& kv,
                 const DeviceTensor& selected, DeviceTensor& out) override {
    const auto& plan = static_cast<const CudaPlan&>(step);
    const DeviceLayer& w = model_.layers.at(layer);
    LayerPools& pools = pools_.at(layer);
    kernels::AttentionParams p;
    p.step = plan.meta;
    p.heads = static_cast<int>(shard_.heads.size());  // this rank's heads
    p.head_dim = static_cast<int>(config_.head_dim);
    p.window = static_cast<int>(config_.sliding_window);
    p.scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
    p.q = q.data<float>();
    p.kv = kv.data<float>();
    p.window_pool = pools.window.as<float>();
    p.sinks = f32(w.sinks);
    if (w.compressor) {
      p.entries = pools.compressor.entries;
      p.max_entries = pools.compressor.max_entries;
      p.rate = w.compressor->rate;
    }
    if (w.indexer) {
      p.selected = selected.data<int32_t>();
      p.top_k = static_cast<int>(config_.index_topk);
    }
    p.out = out.data<float>();
    kernels::launch_attention(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
    kernels::WindowUpdateParams u;
    u.step = plan.meta;
    u.head_dim = p.head_dim;
    u.window = p.window;
    u.kv = p.kv;
    u.window_pool = pools.window.as<float>();
    kernels::launch_window_update(u, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void moe(int64_t layer, const DeviceTensor& x, const DeviceTensor& ids, DeviceTensor& y) override {
    const DeviceLayer& w = model_.layers.at(layer);
    const int tokens = static_cast<int>(ids.numel());
    if (w.moe) {
      // The FP4 op reads bf16 activations.
      std::shared_ptr<void> xb = arena_.get(static_cast<size_t>(x.numel()) * 2);
      kernels::ToBf16Params c;
      c.n = x.numel();
      c.x = x.data<float>();
      c.y = static_cast<uint16_t*>(xb.get());
      kernels::launch_to_bf16(c, stream());
      MEGAMOE_CUDA_CHECK_LAUNCH(stream());
      w.moe->forward(static_cast<const uint16_t*>(xb.get()), w.hashed ? ids.data<int32_t>() : nullptr, tokens, nullptr,
                     y.data<float>(), stream());
      return;
    }
    const DenseMoeWeights& d = *w.dense_moe;
    kernels::DenseMoeParams p;
    p.tokens = tokens;
    p.hidden = static_cast<int>(config_.hidden_size);
    p.intermediate = static_cast<int>(config_.moe_intermediate_size);
    p.experts = static_cast<int>(config_.n_routed_experts);
    p.top_k = static_cast<int>(config_.num_experts_per_tok);
    p.shared_inter = static_cast<int>(shard_.shared.size());  // this rank's slice
    if (options_.shard.sharded())
      p.expert_begin = static_cast<int>(shard_.experts.begin), p.local_experts = static_cast<int>(shard_.experts.size());
    p.vocab = static_cast<int>(config_.vocab_size);
    p.routed_scaling = static_cast<float>(config_.routed_scaling_factor);
    p.swiglu_limit = static_cast<float>(config_.swiglu_limit);
    p.x = x.data<float>();
    p.token_ids = ids.data<int32_t>();
    p.gate = f32(d.gate);
    p.bias = w.hashed ? nullptr : f32(d.bias);
    p.tid2eid = w.hashed ? d.tid2eid.as<int32_t>() : nullptr;
    p.w1 = f32(d.w1), p.w3 = f32(d.w3), p.w2 = f32(d.w2);
    if (p.shared_inter > 0) p.shared_w1 = f32(d.shared_w1), p.shared_w3 = f32(d.shared_w3), p.shared_w2 = f32(d.shared_w2);
    p.y = y.data<float>();
    p.error_flag = error_flag_.as<int32_t>();
    kernels::launch_dense_moe(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  std::vector<int32_t> sample(const DeviceTensor& logits, std::span<const SampleRequest> rows) override {
    DeviceTensor storage = sample_rows(static_cast<int64_t>(rows.size()));
    write_sample_rows(storage, rows);
    DeviceTensor ids = empty(DType::I32, {static_cast<int64_t>(rows.size())});
    sample_into(logits, storage, ids);
    return download_ids(ids);
  }

  DeviceTensor sample_rows(int64_t rows) override {
    MEGAMOE_CHECK(rows > 0 && rows <= sample_capacity_, "sample: ", rows, " rows, the sampler is sized for ",
                  sample_capacity_, " (max_sequences = ", options_.max_sequences, ")");
    const size_t bytes = static_cast<size_t>(rows) * sizeof(kernels::SampleRow);
    return DeviceTensor(arena_.get(bytes), DType::U8, {static_cast<int64_t>(bytes)});
  }

  void write_sample_rows(DeviceTensor& storage, std::span<const SampleRequest> rows) override {
    MEGAMOE_CHECK(storage.dtype() == DType::U8 &&
                      static_cast<size_t>(storage.numel()) >= rows.size() * sizeof(kernels::SampleRow),
                  "write_sample_rows: ", rows.size(), " rows do not fit the storage");
    std::vector<kernels::SampleRow> host(static_cast<size_t>(storage.numel()) / sizeof(kernels::SampleRow));
    for (size_t r = 0; r < rows.size(); ++r) {  // rows past `rows` stay greedy
      host[r].temperature = rows[r].temperature;
      host[r].top_k = static_cast<int>(std::min<int64_t>(rows[r].top_k, config_.vocab_size));
      host[r].top_p = rows[r].top_p;
      host[r].u01 = rows[r].u01;
    }
    staging_.copy_to_device(storage.data<void>(), host.data(), host.size() * sizeof(kernels::SampleRow), stream());
  }

  void write_ids(DeviceTensor& ids, std::span<const int32_t> values) override {
    MEGAMOE_CHECK(ids.dtype() == DType::I32 && ids.numel() >= static_cast<int64_t>(values.size()),
                  "write_ids: ", values.size(), " ids do not fit a tensor of ", ids.numel());
    staging_.copy_to_device(ids.data<int32_t>(), values.data(), values.size_bytes(), stream());
  }

  void sample_into(const DeviceTensor& logits, const DeviceTensor& rows, DeviceTensor& out) override {
    const int n = static_cast<int>(out.numel());
    MEGAMOE_CHECK(out.dtype() == DType::I32 && n <= sample_capacity_, "sample: ", n, " rows, the sampler is sized for ",
                  sample_capacity_);
    MEGAMOE_CHECK(logits.numel() == static_cast<int64_t>(n) * config_.vocab_size, "sample: logits shape ",
                  shape_str(logits.shape()), " for ", n, " rows");
    MEGAMOE_CHECK(static_cast<size_t>(rows.numel()) >= static_cast<size_t>(n) * sizeof(kernels::SampleRow),
                  "sample: fewer sampler rows than logits rows");
    kernels::SampleParams p;
    p.rows = n;
    p.vocab = static_cast<int>(config_.vocab_size);
    p.logits = logits.data<float>();
    p.row_params = rows.data<const kernels::SampleRow>();
    p.ids = out.data<int32_t>();
    p.workspace = sample_workspace_.get();
    p.workspace_bytes = sample_workspace_bytes_;
    kernels::launch_sample(p, stream());
    MEGAMOE_CUDA_CHECK_LAUNCH(stream());
  }

  void stage(Stage s) override {
    if (!profiling_ || recording_) return;
    if (!marks_.empty() && marks_.back().second == s) return;
    marks_.emplace_back(next_event(), s);
    MEGAMOE_CUDA_CHECK(cudaEventRecord(marks_.back().first, stream()));
  }

  void begin_profile() override {
    MEGAMOE_CHECK(!recording_, "cuda: profiling inside a recorded step");
    profiling_ = true;
    marks_.clear();
    used_events_ = 0;
  }

  StageTimes end_profile() override {
    StageTimes times;
    if (!profiling_) return times;
    profiling_ = false;
    cudaEvent_t end = next_event();
    MEGAMOE_CUDA_CHECK(cudaEventRecord(end, stream()));
    MEGAMOE_CUDA_CHECK(cudaEventSynchronize(end));
    for (size_t i = 0; i < marks_.size(); ++i) {
      float ms = 0;
      MEGAMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, marks_[i].first, i + 1 < marks_.size() ? marks_[i + 1].first : end));
      times.ms[static_cast<int>(marks_[i].second)] += ms;
    }
    marks_.clear();
    return times;
  }

  // Not over a communicator that cannot be captured (host-staged ranks sharing a device).
  bool can_record() const override {
    return !options_.shard.sharded() || options_.communicator->graph_capturable();
  }

  std::unique_ptr<StepGraph> record(const std::function<void()>& body) override {
    MEGAMOE_CHECK(!recording_, "cuda: record() inside a recording");
    MEGAMOE_CHECK(can_record(), "cuda: rank ", options_.shard.rank, " of ", options_.shard.size,
                  " shares its device with other ranks over the host-staged communicator, which a CUDA graph cannot "
                  "capture (it waits on the host); its steps run eagerly (docs/parallel.md)");
    auto graph = std::make_unique<CudaGraph>();
    graph->pool = arena_.begin_private();  // kept by the graph
    recording_ = true;
    staging_.set_recording(true);
    auto stop = [&] {
      recording_ = false;
      staging_.set_recording(false);
      arena_.end_private();
    };
    // Relaxed: the private pool may cudaMalloc (not stream work) while recording.
    MEGAMOE_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed));
    try {
      body();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      (void)cudaStreamEndCapture(stream(), &broken);
      if (broken != nullptr) cudaGraphDestroy(broken);
      (void)cudaGetLastError();
      stop();
      throw;
    }
    const cudaError_t ended = cudaStreamEndCapture(stream(), &graph->graph);
    stop();
    MEGAMOE_CUDA_CHECK(ended);
    MEGAMOE_CUDA_CHECK(cudaGraphInstantiate(&graph->exec, graph->graph, 0));
    return graph;
  }

  // Collectives on this backend's stream (captured into a recorded step with the rest).
  void all_reduce_sum(DeviceTensor& x) override {
    if (!options_.shard.sharded()) return;
    options_.communicator->all_reduce_sum(x.data<float>(), static_cast<size_t>(x.numel()), stream());
  }

  void all_gather_columns(const DeviceTensor& part, DeviceTensor& full) override {
    const int64_t ranks = options_.shard.size, rows = part.dim(0), width = full.dim(1), own = part.dim(1);
    MEGAMOE_CHECK(full.dim(0) == rows && own == shard_range(width, options_.shard).size(), "cuda: all_gather of ",
                  shape_str(part.shape()), " into ", shape_str(full.shape()));
    if (ranks == 1) {
      MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(full.data<float>(), part.data<float>(), static_cast<size_t>(part.numel()) * 4,
                                         cudaMemcpyDeviceToDevice, stream()));
      return;
    }
    // NCCL gathers equal parts: each rank sends its columns padded to the
    // widest part; the gathered [ranks, rows, padded] lands rank-major and
    // strided copies put every part's columns in place.
    const int64_t padded = max_shard_size(width, ranks);
    DeviceTensor send = empty(DType::F32, {rows, padded}), recv = empty(DType::F32, {ranks, rows, padded});
    MEGAMOE_CUDA_CHECK(cudaMemcpy2DAsync(send.data<float>(), padded * 4, part.data<float>(), own * 4, own * 4, rows,
                                         cudaMemcpyDeviceToDevice, stream()));
    options_.communicator->all_gather(send.data<float>(), recv.data<float>(), static_cast<size_t>(rows * padded),
                                      stream());
    for (int64_t k = 0; k < ranks; ++k) {
      const IndexRange cols = shard_range(width, {k, ranks});
      MEGAMOE_CUDA_CHECK(cudaMemcpy2DAsync(full.data<float>() + cols.begin, width * 4,
                                           recv.data<float>() + k * rows * padded, padded * 4, cols.size() * 4, rows,
                                           cudaMemcpyDeviceToDevice, stream()));
    }
  }

  void replay(StepGraph& graph) override {
    auto& g = static_cast<CudaGraph&>(graph);
    MEGAMOE_CUDA_CHECK(cudaGraphLaunch(g.exec, stream()));
  }

 private:
  cudaStream_t stream() const { return stream_.get(); }

  DeviceBuffer upload_floats(const std::vector<float>& v) {
    DeviceBuffer b(std::max<size_t>(v.size(), 1) * 4);
    if (!v.empty()) b.upload(v.data(), v.size() * 4);
    return b;
  }

  const DeviceLinear& linear_weight(LinearKey key) const {
    if (key.role == LinearRole::kLmHead) return model_.lm_head;
    const DeviceLayer& w = model_.layers.at(key.layer);
    auto need = [&](bool present) { MEGAMOE_CHECK(present, "layer ", key.layer, " has no such linear weight"); };
    switch (key.role) {
      case LinearRole::kQa: return w.q_a;
      case LinearRole::kQb: return w.q_b;
      case LinearRole::kKv: return w.kv;
      case LinearRole::kOa: return w.o_a;
      case LinearRole::kOb: return w.o_b;
      case LinearRole::kCompressorKv: need(w.compressor.has_value()); return w.compressor->kv;
      case LinearRole::kCompressorGate: need(w.compressor.has_value()); return w.compressor->gate;
      case LinearRole::kIndexerKv: need(w.indexer.has_value()); return w.indexer->kv;
      case LinearRole::kIndexerGate: need(w.indexer.has_value()); return w.indexer->gate;
      case LinearRole::kIndexerQb: need(w.indexer.has_value()); return w.indexer_q_b;
      case LinearRole::kIndexerWeights: need(w.indexer.has_value()); return w.indexer_weights;
      case LinearRole::kLmHead: break;
    }
    MEGAMOE_THROW("unknown linear role");
  }

  const float* norm_weight(NormKey key) const {
    switch (key.role) {
      case NormRole::kNone: return nullptr;
      case NormRole::kInput: return f32(model_.layers.at(key.layer).input_norm);
      case NormRole::kPostAttention: return f32(model_.layers.at(key.layer).post_attention_norm);
      case NormRole::kQa: return f32(model_.layers.at(key.layer).q_a_norm);
      case NormRole::kKv: return f32(model_.layers.at(key.layer).kv_norm);
      case NormRole::kFinal: return f32(model_.norm);
    }
    MEGAMOE_THROW("unknown norm role");
  }

  // The mHC mixing split for `tokens` rows of `rows` logits (kernels/mhc): the
  // split count, and its scratch from the arena when it splits at all.
  std::shared_ptr<void> mix_split_scratch(int tokens, int rows, int& splits, float*& split) {
    splits = kernels::hc_mix_splits(tokens);
    if (splits <= 1) return nullptr;
    std::shared_ptr<void> scratch = arena_.get(static_cast<size_t>(tokens) * splits * rows * sizeof(float));
    split = static_cast<float*>(scratch.get());
    return scratch;
  }

  cudaEvent_t next_event() {
    if (used_events_ == events_.size()) {
      cudaEvent_t e = nullptr;
      MEGAMOE_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    return events_[used_events_++];
  }

  // Padding rows of fixed plans run on this slot, never handed to a sequence.
  int scratch_slot() const { return static_cast<int>(options_.max_sequences); }

  // The arrays of a step over `sequences`. pad_rows > 0 (fixed plans): one
  // token per sequence, padded to pad_rows rows at position 0 on the scratch
  // slot, every window list pad_rows long (padding entries have index -1).
  StepLayout lay_out(const std::vector<StepSequence>& sequences, int64_t pad_rows) const {
    StepLayout out;
    std::vector<int32_t> row_seq, row_pos, seq_slot, seq_pos0, seq_tokens, seq_row0;
    auto add = [&](int slot, int64_t pos0, int64_t tokens) {
      const auto b = static_cast<int32_t>(seq_slot.size());
      seq_slot.push_back(slot);
      seq_pos0.push_back(static_cast<int32_t>(pos0));
      seq_tokens.push_back(static_cast<int32_t>(tokens));
      seq_row0.push_back(static_cast<int32_t>(row_seq.size()));
      for (int64_t t = 0; t < tokens; ++t) {
        row_seq.push_back(b);
        row_pos.push_back(static_cast<int32_t>(pos0 + t));
        out.positions.push_back(pos0 + t);
      }
    };
    for (const StepSequence& s : sequences) {
      const auto* cache = dynamic_cast<const CudaCache*>(s.cache);
      MEGAMOE_CHECK(cache != nullptr, "cuda backend: a sequence's cache is not a CUDA cache");
      MEGAMOE_CHECK(s.tokens > 0, "step: a sequence with no tokens");
      MEGAMOE_CHECK(pad_rows == 0 || s.tokens == 1, "cuda: a fixed plan takes one token per sequence");
      MEGAMOE_CHECK(s.pos0 + s.tokens <= options_.max_context, "cuda: the context of ", s.pos0 + s.tokens,
                    " tokens exceeds the configured maximum of ", options_.max_context, " (max_context)");
      add(cache->slot(), s.pos0, s.tokens);
    }
    for (int64_t b = static_cast<int64_t>(sequences.size()); b < pad_rows; ++b) add(scratch_slot(), 0, 1);
    const auto rows = static_cast<int64_t>(row_seq.size());
    MEGAMOE_CHECK(rows <= options_.max_step_rows, "cuda: a step of ", rows, " rows exceeds max_step_rows = ",
                  options_.max_step_rows);
    out.rows = static_cast<int>(rows);
    out.batch = static_cast<int>(seq_slot.size());
    auto append = [&](const std::vector<int32_t>& v) {
      const size_t at = out.host.size();
      out.host.insert(out.host.end(), v.begin(), v.end());
      return at;
    };
    out.row_seq = append(row_seq), out.row_pos = append(row_pos), out.seq_slot = append(seq_slot);
    out.seq_pos0 = append(seq_pos0), out.seq_tokens = append(seq_tokens), out.seq_row0 = append(seq_row0);
    // Windows closing this step, per compressor rate (real sequences only).
    for (int64_t r : config_.compress_rates) {
      const int rate = static_cast<int>(r);
      if (rate <= 0 || out.windows.count(rate)) continue;
      std::vector<int32_t> ws, wi;
      for (size_t b = 0; b < sequences.size(); ++b) {
        const int64_t pos0 = sequences[b].pos0, end = pos0 + sequences[b].tokens;
        for (int64_t w = pos0 / rate; (w + 1) * rate <= end; ++w) {
          if ((w + 1) * rate - 1 < pos0) continue;
          ws.push_back(static_cast<int32_t>(b));
          wi.push_back(static_cast<int32_t>(w));
        }
      }
      if (pad_rows > 0) ws.resize(static_cast<size_t>(pad_rows), 0), wi.resize(static_cast<size_t>(pad_rows), -1);
      out.windows[rate] = {append(ws), static_cast<int>(ws.size())};
      append(wi);
    }
    return out;
  }

  // Uploads a layout into plan.storage (stream order) and points the plan at it.
  void write_plan(CudaPlan& plan, const StepLayout& layout, std::vector<StepSequence> sequences) {
    MEGAMOE_CHECK(layout.host.size() <= plan.storage_ints, "cuda: a step layout outgrew its plan");
    int32_t* base = static_cast<int32_t*>(plan.storage.get());
    staging_.copy_to_device(base, layout.host.data(), layout.host.size() * 4, stream());
    kernels::StepMeta& m = plan.meta;
    m.rows = layout.rows;
    m.batch = layout.batch;
    m.row_seq = base + layout.row_seq, m.row_pos = base + layout.row_pos;
    m.seq_slot = base + layout.seq_slot, m.seq_pos0 = base + layout.seq_pos0;
    m.seq_tokens = base + layout.seq_tokens, m.seq_row0 = base + layout.seq_row0;
    plan.windows.clear();
    for (const auto& [rate, at] : layout.windows) plan.windows[rate] = {at.second, base + at.first};
    plan.row_pos = layout.positions;
    plan.sequences = std::move(sequences);
  }

  void allocate_pools() {
    const ModelConfig& c = config_;
    const size_t s = static_cast<size_t>(options_.max_sequences) + 1;  // + the scratch slot
    pools_.resize(static_cast<size_t>(c.num_layers));
    // Zeroed: state past a sequence's position is never read, but zeros keep
    // any stray read finite and runs reproducible.
    auto zeroed = [](size_t bytes) {
      DeviceBuffer buffer(bytes);
      MEGAMOE_CUDA_CHECK(cudaMemset(buffer.get(), 0, bytes));
      return buffer;
    };
    auto make = [&](kernels::CompressorPools& p, int rate, int width, bool overlap, DeviceBuffer& kv, DeviceBuffer& gate,
                    DeviceBuffer& ovk, DeviceBuffer& ovg, DeviceBuffer& entries) {
      const size_t cw = static_cast<size_t>((overlap ? 2 : 1) * width);
      p.rate = rate, p.width = width, p.overlap = overlap;
      p.max_entries = static_cast<int>(options_.max_context / rate + 1);
      kv = zeroed(s * rate * cw * 4), gate = zeroed(s * rate * cw * 4);
      if (overlap) ovk = zeroed(s * rate * width * 4), ovg = zeroed(s * rate * width * 4);
      entries = zeroed(s * p.max_entries * width * 4);
      p.buf_kv = kv.as<float>(), p.buf_gate = gate.as<float>();
      p.ov_kv = overlap ? ovk.as<float>() : nullptr, p.ov_gate = overlap ? ovg.as<float>() : nullptr;
      p.entries = entries.as<float>();
    };
    for (int64_t l = 0; l < c.num_layers; ++l) {
      LayerPools& p = pools_[l];
      p.window = zeroed(s * c.sliding_window * c.head_dim * 4);
      const AttentionType type = c.layer_types.at(l);
      if (type == AttentionType::kSliding) continue;
      const bool csa = type == AttentionType::kCompressedSparse;
      const int rate = static_cast<int>(c.compress_rates.at(l));
      make(p.compressor, rate, static_cast<int>(c.head_dim), csa, p.c_buf_kv, p.c_buf_gate, p.c_ov_kv, p.c_ov_gate,
           p.c_entries);
      if (csa)
        make(p.indexer, rate, static_cast<int>(c.index_head_dim), true, p.i_buf_kv, p.i_buf_gate, p.i_ov_kv, p.i_ov_gate,
             p.i_entries);
    }
  }

  // A fresh slot: overlap keys 0 and gates -inf (weight 0); the rest is read
  // only where positions say it was written.
  void reset_slot(int slot) {
    for (const LayerPools& p : pools_) {
      for (const kernels::CompressorPools* c : {&p.compressor, &p.indexer}) {
        if (c->ov_kv == nullptr) continue;
        const size_t n = static_cast<size_t>(c->rate) * c->width;
        const std::vector<float> zeros(n, 0.f), minus_inf(n, -INFINITY);
        MEGAMOE_CUDA_CHECK(cudaMemcpy(c->ov_kv + slot * n, zeros.data(), n * 4, cudaMemcpyHostToDevice));
        MEGAMOE_CUDA_CHECK(cudaMemcpy(c->ov_gate + slot * n, minus_inf.data(), n * 4, cudaMemcpyHostToDevice));
      }
    }
  }

  void check_error_flag() {
    int32_t flag = 0;
    MEGAMOE_CUDA_CHECK(cudaMemcpy(&flag, error_flag_.get(), 4, cudaMemcpyDeviceToHost));
    if (flag != 0) {
      MEGAMOE_CUDA_CHECK(cudaMemset(error_flag_.get(), 0, 4));
      MEGAMOE_THROW("cuda: a kernel saw a token id or routing table entry out of range");
    }
  }

  ModelConfig config_;
  BackendOptions options_;
  ShardLayout shard_;  // this rank's heads, groups, experts, shared slice, vocabulary rows
  int device_ = 0;
  std::string describe_;
  Stream stream_;
  Arena arena_;
  PinnedStaging staging_{size_t{8} << 20};
  DeviceModel model_;
  std::vector<LayerPools> pools_;
  DeviceBuffer omega_main_, omega_compress_, error_flag_, sample_workspace_;
  size_t sample_workspace_bytes_ = 0;
  int64_t sample_capacity_ = 1;
  PinnedStaging ids_out_{size_t{64} << 10};  // pinned landing of downloaded ids
  bool recording_ = false;
  // Profiling: events from a pool reused by every profile, and the marks of this one.
  bool profiling_ = false;
  std::vector<cudaEvent_t> events_;
  size_t used_events_ = 0;
  std::vector<std::pair<cudaEvent_t, Stage>> marks_;
  std::shared_ptr<SlotPool> slots_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Checkpoint& checkpoint, const BackendOptions& options) {
  MEGAMOE_CHECK(options.device >= 0 && options.device < device_count(), "cuda: device ", options.device,
                " does not exist (this machine has ", device_count(), ")");
  // Before the backend's members exist: its stream and buffers belong to the current device.
  MEGAMOE_CUDA_CHECK(cudaSetDevice(options.device));
  if (options.shard.sharded()) {
    MEGAMOE_CHECK(options.communicator != nullptr && options.communicator->size() == options.shard.size &&
                      options.communicator->rank() == options.shard.rank,
                  "cuda backend: rank ", options.shard.rank, " of ", options.shard.size,
                  " needs a communicator of that rank and size");
  }
  return std::make_unique<CudaBackend>(checkpoint, options);
}

}  // namespace megamoe::cuda
