// DeepSeek-V4 attention for all three layer types (dsv4-architecture.md §5.4,
// §5.5, §8, §9): low-rank queries with per-head unweighted RMSNorm, one shared
// K=V head, interleaved tail RoPE, a sliding window of W keys, compressed
// entries (HCA: all causal ones; CSA: the indexer's top-k), a learned sink
// logit per head, inverse RoPE on the output and the grouped low-rank output
// projection. Processes T consecutive tokens continuing `state`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model_config.hpp"
#include "model/deepseek_v4/dump.hpp"
#include "model/deepseek_v4/rope.hpp"
#include "model/deepseek_v4/state.hpp"
#include "model/deepseek_v4/weights.hpp"

namespace megamoe::dsv4 {

// x [T, D]: the layer's attention input (after input_layernorm) for positions
// pos0 .. pos0 + T - 1. Returns [T, D]. Updates the window and compressor state.
std::vector<float> attention_forward(const ModelConfig& cfg, const LayerWeights& layer, const RopeTable& rope,
                                     const std::vector<float>& x, int64_t tokens, int64_t pos0, LayerState& state,
                                     const DumpFn* dump_fn, const std::string& name);

// The lightning indexer's choice for one query: the top-min(K_I, visible)
// entries by score, ties to the lower index. scores has `visible` values.
std::vector<int64_t> indexer_top_k(const std::vector<float>& scores, int64_t top_k);

}  // namespace megamoe::dsv4
