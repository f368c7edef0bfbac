// The op interface the DeepSeek-V4 forward is written against (design.md,
// "Backends"). The model (src/model/deepseek_v4/model.cpp) is wired once as
// calls on a Backend; the CPU backend implements every op plainly in fp32 (the
// oracle), the CUDA backend with kernels. Ops are coarse, at the granularity
// the fast path wants, so a backend can fuse inside an op.
//
// What the model sees:
//  - DeviceTensor: an activation in the backend's memory (fp32 or int32,
//    row-major, contiguous). The model never reads its bytes; download() does.
//  - Weights by key: a backend loads the checkpoint in its own formats (the CPU
//    widens to fp32, the GPU keeps FP8 / FP4 as stored) and ops name a weight
//    by (layer, role).
//  - SequenceCache: one sequence's per-layer state (dsv4-architecture.md §9.1)
//    in the backend's memory; StepPlan: one batched step, a list of sequences
//    each continuing its cache with any number of new tokens. Rows of a step's
//    activations are the sequences' tokens back to back, in plan order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/model_config.hpp"
#include "core/tensor.hpp"
#include "parallel/communicator.hpp"
#include "parallel/shard.hpp"

namespace megamoe {

class Checkpoint;

enum class DeviceKind { kCpu, kCuda };
std::string_view device_kind_name(DeviceKind kind);  // "cpu" / "cuda"

// An owning handle to a backend buffer. Copying shares the buffer.
class DeviceTensor {
 public:
  DeviceTensor() = default;
  DeviceTensor(std::shared_ptr<void> storage, DType dtype, Shape shape)
      : storage_(std::move(storage)), dtype_(dtype), shape_(std::move(shape)) {}

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  int64_t numel() const { return shape_numel(shape_); }
  bool empty() const { return storage_ == nullptr; }
  // Backends only: the raw buffer (host memory on the CPU, device memory on CUDA).
  template <typename T>
  T* data() const {
    return static_cast<T*>(storage_.get());
  }

 private:
  std::shared_ptr<void> storage_;
  DType dtype_ = DType::F32;
  Shape shape_;
};

// Linear weights of the model, y = x W^T.
enum class LinearRole {
  kQa,            // q_a_proj [r_q, D]
  kQb,            // q_b_proj [H d_h, r_q]
  kKv,            // kv_proj [d_h, D]
  kOa,            // o_a_proj [G r_o, H d_h / G], applied per group (grouped output projection)
  kOb,            // o_b_proj [D, G r_o]
  kCompressorKv,  // compressor.kv_proj [c d_h, D]
  kCompressorGate,
  kIndexerKv,     // compressor.indexer.kv_proj [2 d_I, D]
  kIndexerGate,
  kIndexerQb,     // compressor.indexer.q_b_proj [H_I d_I, r_q]
  kIndexerWeights,  // compressor.indexer.scorer.weights_proj [H_I, D]
  kLmHead,        // lm_head [V, D] (layer ignored)
};
struct LinearKey {
  int64_t layer = 0;
  LinearRole role = LinearRole::kQa;
};

// RMSNorm weights; kNone is the unweighted norm (the per-head query norm).
enum class NormRole { kNone, kInput, kPostAttention, kQa, kKv, kFinal };
struct NormKey {
  int64_t layer = 0;
  NormRole role = NormRole::kNone;
};

enum class HcSite { kAttention, kFfn };
enum class RopeTableKind { kMain, kCompress };  // SWA layers / CSA and HCA layers
enum class CompressorKind { kMain, kIndexer };

// Per-sequence state in the backend's memory; position is kept by the model.
class SequenceCache {
 public:
  virtual ~SequenceCache() = default;
};

// One sequence's part of a step.
struct StepSequence {
  SequenceCache* cache = nullptr;
  int64_t pos0 = 0;    // position of its first new token (= tokens it has seen)
  int64_t tokens = 0;  // new tokens this step (>= 1)
};

// A batched step as the backend prepared it (device copies of positions etc.).
class StepPlan {
 public:
  virtual ~StepPlan() = default;
  std::vector<StepSequence> sequences;
  std::vector<int64_t> row_pos;  // [rows] absolute position of each row
  int64_t rows() const { return static_cast<int64_t>(row_pos.size()); }
};

// Sampling parameters of one row of logits; u01 is the host's uniform draw
// (the random stream never depends on the logits, so no device sync).
struct SampleRequest {
  double temperature = 0.0;  // <= 0: greedy
  int64_t top_k = 0;
  double top_p = 1.0;
  double u01 = 0.0;
};

// Where a step's device time goes (bench decode/prefill): the model marks
// each group of ops with the stage it belongs to.
// kCollective: the per-layer all-reduces of a sharded model (the logits
// all-gather counts as the head), so comm / layers is the per-layer cost.
enum class Stage { kMhc, kAttentionProjections, kAttentionCore, kCompressorIndexer, kMoe, kHead, kCollective };
inline constexpr int kStageCount = 7;
inline constexpr const char* kStageNames[kStageCount] = {"mhc", "attn_proj", "attn_core", "compress_index", "moe",
                                                         "head", "comm"};
struct StageTimes {
  double ms[kStageCount] = {};
};

// A recorded step (a CUDA graph), replayed by Backend::replay.
class StepGraph {
 public:
  virtual ~StepGraph() = default;
};

// The routed experts' activation format. W4A16: bf16 / fp32 activations
// against the 4-bit weights (exact on Hopper). W4A4: the activations before
// each expert GEMM NVFP4-quantized as Blackwell deployments run them, with the
// checkpoint's static per-expert `input_scale` (dynamic, from each forward's
// amax, where the checkpoint has none); NVFP4 experts only.
enum class MoeActivationFormat { kW4A16, kW4A4 };
std::string_view moe_activation_format_name(MoeActivationFormat format);  // "w4a16" / "w4a4"

struct BackendOptions {
  int64_t max_sequences = 4;   // state slots (sequences alive at once)
  int64_t max_context = 0;     // tokens per sequence; 0 = max_position_embeddings capped at 65536
  int64_t max_step_rows = 0;   // rows of one step; 0 = cuda: min(max_context, 2048), cpu: 1024 (longer prompts: chunked)
  // KV storage rounding as the official reference's QAT: the non-RoPE channels
  // of window KV and of main compressor entries E4M3 with a power-of-two scale
  // per 64, the RoPE channels bf16 (kernels/attention/kv_fp8_params.hpp).
  // Off by default: transformers (the golden oracle) keeps KV in full precision.
  bool kv_fp8 = false;
  MoeActivationFormat moe_activations = MoeActivationFormat::kW4A16;
  // CPU only: emulate the GPU's quantization points (for tight GPU tests).
  bool emulate_gpu_moe_bf16 = false;  // MoE input and expert hidden rounded to bf16 (the FP4 MoE op's numerics)
  // CPU only: the fp32 expert budget above which experts stay in the checkpoint
  // (dequantized on use).
  int64_t eager_expert_bytes = int64_t{4} << 30;
  bool progress = false;  // loading progress on stderr
  // Sharding (docs/parallel.md): this backend is rank shard.rank of
  // shard.size and loads only its part of the weights (parallel/shard.hpp);
  // `communicator` connects the ranks (required when shard.size > 1).
  ShardSpec shard;
  std::shared_ptr<Communicator> communicator;
  int device = 0;  // cuda: the device this backend runs on
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string describe() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual const BackendOptions& options() const = 0;

  // Makes the calling thread use this backend's device (cuda: cudaSetDevice);
  // a sharded model calls it at the start of every rank's part of a step.
  virtual void bind_thread() {}

  // ---- memory ----
  virtual DeviceTensor empty(DType dtype, Shape shape) = 0;  // uninitialised
  virtual DeviceTensor upload_ids(std::span<const int32_t> ids) = 0;
  virtual DeviceTensor upload(std::span<const float> values, Shape shape) = 0;  // tests and tools
  virtual std::vector<float> download(const DeviceTensor& t) = 0;  // fp32 tensors; waits for the device
  virtual std::vector<int32_t> download_ids(const DeviceTensor& t) = 0;  // int32 tensors

  // ---- sequences and steps ----
  virtual std::unique_ptr<SequenceCache> new_cache() = 0;  // throws when every slot is taken
  virtual std::unique_ptr<StepPlan> plan(std::vector<StepSequence> sequences) = 0;

  // ---- ops (T = rows of the step; shapes as in dsv4-architecture.md) ----
  // streams [T, n_c, D] = embed[ids] in every stream. ids [T] int32.
  virtual void embed(const DeviceTensor& ids, DeviceTensor& streams) = 0;
  // mHC pre-step: u [T, D] = RMSNorm(sum_j pre_j X[j]) with the site's norm
  // weight; mix [T, (2 + n_c) n_c] keeps pre, post, comb for hc_post.
  virtual void hc_pre(int64_t layer, HcSite site, const DeviceTensor& streams, DeviceTensor& u, DeviceTensor& mix) = 0;
  // streams'[k] = post_k y + sum_j comb[j][k] streams[j], in place. y [T, D].
  virtual void hc_post(DeviceTensor& streams, const DeviceTensor& y, const DeviceTensor& mix) = 0;
  // h [R, D] = hc_head collapse of streams rows `rows` (R = rows.size()).
  virtual void hc_head(const DeviceTensor& streams, std::span<const int64_t> rows, DeviceTensor& h) = 0;
  // y [T, out] = x [T, in] W^T (kOa: per group). fp32 result.
  virtual void linear(LinearKey w, const DeviceTensor& x, DeviceTensor& y) = 0;
  // RMSNorm over each width-wide group of every row of x, in place.
  virtual void rms_norm(DeviceTensor& x, int64_t width, NormKey weight) = 0;
  // Tail RoPE of x [T, heads, dim] at each row's position (inverse: by -pos).
  virtual void rope(const StepPlan& step, DeviceTensor& x, int64_t heads, RopeTableKind table, bool inverse) = 0;
  // Compressor step of `layer` over this step's K and Z rows [T, c d]: emits
  // the entries of every window that closes, updates the open window.
  virtual void compressor(const StepPlan& step, int64_t layer, CompressorKind which, const DeviceTensor& kv,
                          const DeviceTensor& gate) = 0;
  // Lightning indexer: selected [T, index_topk] int32 entry ids (-1 padded),
  // from q [T, H_I, d_I] (rotated) and head weights [T, H_I].
  virtual void indexer_topk(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& head_w,
                            DeviceTensor& selected) = 0;
  // kv [T, d_h] rounded as the KV cache stores it (BackendOptions::kv_fp8), in
  // place, before attention reads it; a no-op when KV is kept in full precision.
  virtual void round_kv(DeviceTensor& kv) = 0;
  // Window + compressed attention with sinks; out [T, H, d_h] (still rotated).
  // Then appends this step's kv rows [T, d_h] to each sequence's window.
  // selected: the CSA selection, or an empty tensor.
  virtual void attention(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& kv,
                         const DeviceTensor& selected, DeviceTensor& out) = 0;
  // The whole MoE block of `layer`: y [T, D] from x [T, D]; ids for hash routing.
  virtual void moe(int64_t layer, const DeviceTensor& x, const DeviceTensor& ids, DeviceTensor& y) = 0;
  // ---- collectives between the ranks of a sharded model (on one rank: no-op / copy) ----
  // x [T, D] holds this rank's partial sum; afterwards the sum over ranks, in place.
  virtual void all_reduce_sum(DeviceTensor& x) = 0;
  // full [R, V] = every rank's part [R, V_r] (its vocabulary rows of lm_head) side by side, in rank order.
  virtual void all_gather_columns(const DeviceTensor& part, DeviceTensor& full) = 0;

  // Next token per row of logits [R, V].
  virtual std::vector<int32_t> sample(const DeviceTensor& logits, std::span<const SampleRequest> rows) = 0;

  // ---- profiling (eager steps only; no-ops where a backend does not profile) ----
  // Ops issued after stage(s) belong to s until the next mark.
  virtual void stage(Stage) {}
  // Starts timing the marked stages / stops, waits for the device and returns
  // each stage's device time since begin_profile.
  virtual void begin_profile() {}
  virtual StageTimes end_profile() { return {}; }

  // ---- recorded decode steps (backends with can_record(); the CPU has none) ----
  // A decode step of B one-token sequences can be recorded once and replayed:
  // its plan and inputs live at fixed device addresses and are rewritten in
  // place before each replay, and nothing inside the step talks to the host.
  virtual bool can_record() const { return false; }
  // A plan for `rows` one-token rows: the sequences first, then padding rows
  // on a scratch state slot (their outputs are ignored).
  virtual std::unique_ptr<StepPlan> plan_fixed(std::vector<StepSequence> sequences, int64_t rows);
  // Rewrites a plan_fixed plan in place for new sequences (at most its rows).
  virtual void update_fixed(StepPlan& plan, std::vector<StepSequence> sequences);
  // Device storage for `rows` sampler rows / writes them in stream order.
  virtual DeviceTensor sample_rows(int64_t rows);
  virtual void write_sample_rows(DeviceTensor& storage, std::span<const SampleRequest> rows);
  // ids [R] int32 written in stream order (no wait).
  virtual void write_ids(DeviceTensor& ids, std::span<const int32_t> values);
  // The device sampler without a host round trip: out [R] int32.
  virtual void sample_into(const DeviceTensor& logits, const DeviceTensor& rows, DeviceTensor& out);
  // Records the ops `body` issues (not running them) / runs a recording.
  virtual std::unique_ptr<StepGraph> record(const std::function<void()>& body);
  virtual void replay(StepGraph& graph);
};

// Backends without recording (can_record() false) never receive these calls.
inline std::unique_ptr<StepPlan> Backend::plan_fixed(std::vector<StepSequence>, int64_t) {
  MEGAMOE_THROW(describe(), ": recorded steps are not supported");
}
inline void Backend::update_fixed(StepPlan&, std::vector<StepSequence>) {
  MEGAMOE_THROW(describe(), ": recorded steps are not supported");
}
inline DeviceTensor Backend::sample_rows(int64_t) { MEGAMOE_THROW(describe(), ": recorded steps are not supported"); }
inline void Backend::write_sample_rows(DeviceTensor&, std::span<const SampleRequest>) {
  MEGAMOE_THROW(describe(), ": recorded steps are not supported");
}
inline void Backend::write_ids(DeviceTensor&, std::span<const int32_t>) {
  MEGAMOE_THROW(describe(), ": recorded steps are not supported");
}
inline void Backend::sample_into(const DeviceTensor&, const DeviceTensor&, DeviceTensor&) {
  MEGAMOE_THROW(describe(), ": recorded steps are not supported");
}
inline std::unique_ptr<StepGraph> Backend::record(const std::function<void()>&) {
  MEGAMOE_THROW(describe(), ": recorded steps are not supported");
}
inline void Backend::replay(StepGraph&) { MEGAMOE_THROW(describe(), ": recorded steps are not supported"); }

// What the ranks of one process share to connect their communicators: cpu:
// one ThreadCommunicator group; cuda: one NCCL unique id (ncclCommInitRank).
class CommunicatorFactory {
 public:
  virtual ~CommunicatorFactory() = default;
  // Rank `rank`'s communicator, on that rank's thread (NCCL's init returns
  // once every rank has called it, so all ranks must call at once).
  virtual std::shared_ptr<Communicator> connect(int64_t rank, int device) = 0;
  // Aborts every connected communicator (a rank failed mid-step).
  virtual void abort() = 0;
};
// One rank per entry of `devices` (cuda: the device ids, each checked to
// exist before any rank starts, so no rank waits in NCCL's init for one that
// cannot start; distinct devices get NCCL, all the same device the
// host-staged communicator (tests), a mix is an error; cpu: only the count matters).
std::unique_ptr<CommunicatorFactory> make_communicator_factory(DeviceKind kind, const std::vector<int>& devices);

// The backend of `kind` over an open checkpoint (kept open by the caller for
// as long as the backend lives). cuda: throws where CUDA is not built or no
// device exists.
std::unique_ptr<Backend> make_backend(DeviceKind kind, const Checkpoint& checkpoint, const BackendOptions& options);
// "cpu" / "cuda" / "auto" (cuda where a GPU is present, else cpu).
DeviceKind parse_device_kind(const std::string& text);

}  // namespace megamoe
