// The DeepSeek-V4 forward on the CPU backend in fp32 (dsv4-architecture.md §4):
// embed -> n_c residual streams -> per layer [mHC -> RMSNorm -> attention ->
// mHC post, mHC -> RMSNorm -> MoE -> mHC post] -> hc_head -> RMSNorm -> lm_head.
// forward() processes any number of tokens continuing a SequenceState, so
// full prefill, chunked prefill and one-token decode share one code path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "core/checkpoint.hpp"
#include "model/deepseek_v4/dump.hpp"
#include "model/deepseek_v4/rope.hpp"
#include "model/deepseek_v4/state.hpp"
#include "model/deepseek_v4/weights.hpp"

namespace megamoe::dsv4 {

struct ForwardOptions {
  bool last_logits_only = false;  // logits of the last token only (decode / generation)
  const DumpFn* dump = nullptr;   // per-layer activation dumps
};

class Model {
 public:
  // The model keeps the checkpoint open (lazily loaded experts point into it).
  explicit Model(std::unique_ptr<Checkpoint> checkpoint, const LoadOptions& options = {});
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  SequenceState new_sequence() const { return make_sequence_state(config_); }

  // Runs ids at positions state.position .. + T - 1 and advances the state.
  // Returns logits [T, V] (or [1, V] with last_logits_only). Throws for an
  // empty input or an id outside the vocabulary (checked before the state changes).
  std::vector<float> forward(std::span<const int32_t> ids, SequenceState& state,
                             const ForwardOptions& options = {}) const;

 private:
  // One decoder layer over X [T, n_c, D] in place.
  void layer_forward(int64_t l, std::span<const int32_t> ids, std::vector<float>& streams, int64_t pos0,
                     LayerState& state, const DumpFn* dump_fn) const;
  // MoE block: x [T, D] -> [T, D].
  std::vector<float> moe_forward(const MoeLayerWeights& w, std::span<const int32_t> ids,
                                 const std::vector<float>& x, int64_t tokens) const;

  std::unique_ptr<Checkpoint> checkpoint_;
  ModelConfig config_;
  ModelWeights weights_;
  RopeTable rope_main_, rope_compress_;
};

}  // namespace megamoe::dsv4
