// DeepSeek-V4 parameters as fp32 host tensors, loaded (and dequantized) from a
// checkpoint by their canonical transformers names, every shape checked
// against the config (dsv4-architecture.md §3). Symbols follow §1:
// D hidden, H heads, d_h head dim, r_q q rank, G groups, r_o group rank,
// n_c hc_mult, E experts, I expert width, m compress rate, d_I indexer dim.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/model_config.hpp"
#include "core/tensor.hpp"
#include "parallel/shard.hpp"

namespace megamoe::dsv4 {

// One mHC site (attn_hc / ffn_hc): fn [(2+n_c)n_c, n_c D], base [(2+n_c)n_c], scale [3].
// For hc_head: fn [n_c, n_c D], base [n_c], scale [1].
struct HyperConnectionWeights {
  Tensor fn, base, scale;
};

// A KV compressor (§5.3): rate m, output width d, overlap (c = 2) or not (c = 1).
struct CompressorWeights {
  int64_t rate = 0;       // m
  int64_t width = 0;      // d (d_h for the main branch, d_I for the indexer)
  bool overlap = false;   // c = 2 (CSA main and indexer) or c = 1 (HCA)
  Tensor kv_proj;         // [c d, D]
  Tensor gate_proj;       // [c d, D]
  Tensor position_bias;   // [m, c d]
  Tensor kv_norm;         // [d]
};

// The lightning indexer of a CSA layer (§5.5).
struct IndexerWeights {
  Tensor q_b_proj;       // [H_I d_I, r_q]
  Tensor weights_proj;   // [H_I, D]
  CompressorWeights compressor;  // m_c, d_I, overlap
};

struct AttentionWeights {
  Tensor sinks;      // [H]
  Tensor q_a_proj;   // [r_q, D]
  Tensor q_a_norm;   // [r_q]
  Tensor q_b_proj;   // [H d_h, r_q]
  Tensor kv_proj;    // [d_h, D]
  Tensor kv_norm;    // [d_h]
  Tensor o_a_proj;   // [G r_o, H d_h / G]
  Tensor o_b_proj;   // [D, G r_o]
  std::optional<CompressorWeights> compressor;  // CSA and HCA layers
  std::optional<IndexerWeights> indexer;        // CSA layers
};

struct MoeLayerWeights {
  Tensor gate;                   // [E, D] router
  Tensor bias;                   // [E] selection bias (learned routing), else empty
  std::vector<int32_t> tid2eid;  // [V, k] (hash routing), else empty
  Tensor w1, w3;                 // [E, I, D] routed experts (gate, up), dequantized
  Tensor w2;                     // [E, D, I]
  // Lazy experts (when the dequantized experts would not fit the load budget):
  // per expert {gate_proj, up_proj, down_proj} in their stored format, dequantized
  // on use. They point into the checkpoint, which must outlive these weights.
  std::vector<std::array<WeightRef, 3>> expert_refs;
  Tensor shared_w1, shared_w3;   // [I_s, D]
  Tensor shared_w2;              // [D, I_s]
};

struct LayerWeights {
  AttentionType attention_type = AttentionType::kSliding;
  MlpType mlp_type = MlpType::kMoe;
  HyperConnectionWeights attn_hc, ffn_hc;
  Tensor input_layernorm;           // [D]
  Tensor post_attention_layernorm;  // [D]
  AttentionWeights attention;
  MoeLayerWeights moe;
};

struct ModelWeights {
  Tensor embed;    // [V, D]
  HyperConnectionWeights hc_head;
  Tensor norm;     // [D]
  Tensor lm_head;  // [V, D]
  std::vector<LayerWeights> layers;
};

struct LoadOptions {
  // Routed experts are dequantized at load while all layers' fp32 experts fit
  // in this many bytes; beyond it they stay in the checkpoint and are
  // dequantized when a token routes to them (real Flash/Pro sizes).
  int64_t eager_expert_bytes = int64_t{4} << 30;
  // Only this rank's part (parallel/shard.hpp): sinks and q_b rows of its
  // heads, o_a rows and o_b columns of its groups, its routed experts (index
  // e - experts.begin), its shared-expert slice and its lm_head rows.
  ShardSpec shard;
};

// Loads every parameter the config needs (of options.shard's part); a missing
// tensor or a wrong shape throws naming the tensor and the checkpoint.
ModelWeights load_model_weights(const Checkpoint& checkpoint, const LoadOptions& options = {});

}  // namespace megamoe::dsv4
