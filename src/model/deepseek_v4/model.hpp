// The DeepSeek-V4 forward, written once against the op interface of
// src/backend/backend.hpp (dsv4-architecture.md §4): embed -> n_c residual
// streams -> per layer [mHC -> RMSNorm -> attention -> mHC post, mHC ->
// RMSNorm -> MoE -> mHC post] -> hc_head -> RMSNorm -> lm_head.
// A forward runs a batch of sequences, each continuing its own state with any
// number of new tokens, so full prefill, chunked prefill, one-token decode and
// mixtures of them in one step share one code path. Split over several ranks
// (ModelOptions::ranks), every rank runs the same forward on its own part of
// the weights, with the collectives where model.cpp places them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.hpp"
#include "core/checkpoint.hpp"
#include "model/deepseek_v4/dump.hpp"
#include "parallel/rank_threads.hpp"
#include "parallel/shard.hpp"

namespace megamoe::dsv4 {

struct ForwardOptions {
  bool last_logits_only = false;  // logits of each sequence's last token only (decode / generation)
  const DumpFn* dump = nullptr;   // per-layer activation dumps (single-sequence steps)
};

// One sequence: its position (tokens seen) and its state in the backend.
struct SequenceState {
  int64_t position = 0;
  std::unique_ptr<SequenceCache> cache;
};

// One sequence's part of a batched forward.
struct SequenceInput {
  std::span<const int32_t> ids;
  SequenceState* state = nullptr;
};

// One sequence's token in a decode step, and how its next token is chosen.
struct DecodeInput {
  int32_t id = 0;
  SequenceState* state = nullptr;
  SampleRequest sample;  // greedy unless set
};

struct DecodeOptions {
  // Replay one recorded step per batch bucket where the backend records
  // (cuda); false runs the same padded step eagerly (bit-identical to it).
  bool graph = true;
  // When set: each sequence's logits [V] (a download of B x V floats; tests).
  std::vector<std::vector<float>>* logits = nullptr;
};

struct ModelOptions {
  DeviceKind device = DeviceKind::kCpu;
  BackendOptions backend;  // shard, communicator and device are set per rank by the model
  // Ranks the model is split over (docs/parallel.md), each with its own
  // backend and thread: cpu: threads over a ThreadCommunicator; cuda with
  // `devices`: one device per rank with NCCL between them; cuda without:
  // every rank on backend.device over the host-staged communicator (tests on
  // one GPU; steps not graph-captured).
  int64_t ranks = 1;
  std::vector<int> devices;  // cuda: each rank's device, all distinct; when set, ranks = its size
};

class Model {
 public:
  // The model keeps the checkpoint open (lazily loaded CPU experts point into it).
  Model(std::unique_ptr<Checkpoint> checkpoint, const ModelOptions& options = {});
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const ModelOptions& options = {});

  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return *backends_.front(); }  // rank 0's
  Backend& backend(int64_t rank) const { return *backends_.at(static_cast<size_t>(rank)); }
  int64_t ranks() const { return static_cast<int64_t>(backends_.size()); }
  // A sequence's state on every rank (one backend cache per rank).
  SequenceState new_sequence() const;

  // Runs every sequence's ids at positions state.position .. + T_i - 1 in one
  // step and advances the states. Returns logits per sequence: [T_i, V], or
  // [1, V] with last_logits_only. Throws for an empty input, an id outside the
  // vocabulary or a context past the maximum, checked before any state changes.
  std::vector<std::vector<float>> forward_batch(std::span<const SequenceInput> inputs,
                                                const ForwardOptions& options = {}) const;
  // One sequence (a batch of one).
  std::vector<float> forward(std::span<const int32_t> ids, SequenceState& state,
                             const ForwardOptions& options = {}) const;

  // One decode step: each sequence's token at its position, its next token
  // chosen on the device (only the ids come back), the states advanced. On a
  // recording backend, batches of up to kMaxDecodeBucket sequences are padded
  // to a power of two and each bucket's step is recorded once (a CUDA graph)
  // and replayed; larger batches and the CPU run the plain batched step.
  std::vector<int32_t> decode(std::span<const DecodeInput> inputs, const DecodeOptions& options = {}) const;
  static constexpr int64_t kMaxDecodeBucket = 256;
  // The padded batch of a recorded decode of n sequences; 0 when it runs plain.
  int64_t decode_bucket(int64_t n) const;

  ~Model();

 private:
  struct FixedStep;
  // Validates a step's inputs before any state changes (ids, context, duplicates).
  std::vector<StepSequence> check_inputs(std::span<const SequenceInput> inputs) const;
  // Every layer and the head over a planned step on rank `rank`'s backend:
  // logits [head_rows, V] on the device (identical on every rank).
  DeviceTensor step_logits(int64_t rank, const StepPlan& step, const DeviceTensor& ids,
                           std::span<const int64_t> head_rows, const DumpFn* dump_fn) const;
  void attention_block(int64_t rank, const StepPlan& step, int64_t l, const DeviceTensor& x, DeviceTensor& out,
                       const DumpFn* dump_fn) const;
  // Throws when a sequence would reach `end` tokens past the model's or the backend's limit.
  void check_context(int64_t end) const;
  void dump(Backend& b, const DumpFn* fn, const std::string& name, const DeviceTensor& t) const;
  // Runs body(rank) on every rank at once (on the caller's thread when there is one rank).
  void on_every_rank(const std::function<void(int64_t rank)>& body) const;
  // The step's sequences with rank `rank`'s caches.
  std::vector<StepSequence> for_rank(std::vector<StepSequence> seqs, int64_t rank) const;

  std::unique_ptr<Checkpoint> checkpoint_;
  ModelConfig config_;
  std::vector<ShardLayout> layouts_;                 // per rank: what it holds
  std::vector<std::unique_ptr<Backend>> backends_;   // per rank
  std::unique_ptr<CommunicatorFactory> communicators_;  // when there are several ranks (aborts them on a failure)
  std::unique_ptr<RankThreads> threads_;             // per rank, when there are several
  // Recorded decode per bucket, one fixed step per rank.
  mutable std::map<int64_t, std::vector<std::unique_ptr<FixedStep>>> decode_steps_;
};

}  // namespace megamoe::dsv4
