// The DeepSeek-V4 model configuration: one typed struct, parsed from a
// config.json in either the transformers form (layer_types, mlp_layer_types,
// compress_rates, rope_parameters / partial_rotary_factor) or DeepSeek's
// upstream form (compress_ratios, num_hash_layers, qk_rope_head_dim,
// rope_scaling, compress_rate_*), with the per-layer schedule resolved.
// Field meanings and values: shared/docs/dsv4-architecture.md §1-2.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace megamoe {

enum class AttentionType { kSliding, kCompressedSparse, kHeavilyCompressed };
enum class MlpType { kHashMoe, kMoe };

std::string_view attention_type_name(AttentionType type);  // "sliding_attention", ...
std::string_view mlp_type_name(MlpType type);              // "hash_moe", "moe"

// One RoPE frequency table (§2.4, §5.1). YaRN scales frequencies only.
struct RopeParams {
  double theta = 10000.0;
  bool yarn = false;
  double factor = 1.0;                 // effective YaRN factor (HF: max_pos / original_max_pos)
  int64_t original_max_position = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
};

// What the checkpoint says about quantization (informational: the actual
// format of each tensor is detected from its dtype and companions at load).
struct QuantizationInfo {
  std::string quant_method;      // "fp8", "modelopt", "" when none
  std::string moe_quant_algo;    // "NVFP4" for ModelOpt expert checkpoints, "" otherwise
  std::string expert_dtype;      // "fp4", "fp8", "" ...
  int64_t weight_block_size = 0; // 128 for DeepSeek FP8 block weights, 0 when absent
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;            // D
  int64_t num_layers = 0;             // L (main decoder layers; MTP excluded)
  int64_t num_heads = 0;              // H
  int64_t head_dim = 0;               // d_h
  int64_t rope_head_dim = 0;          // d_r (trailing rotated channels)
  int64_t q_lora_rank = 0;            // r_q
  int64_t o_groups = 0;               // G
  int64_t o_lora_rank = 0;            // r_o
  int64_t sliding_window = 0;         // W
  int64_t index_n_heads = 0;          // H_I
  int64_t index_head_dim = 0;         // d_I
  int64_t index_topk = 0;             // K_I
  int64_t n_routed_experts = 0;       // E
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;    // k
  int64_t moe_intermediate_size = 0;  // I
  double routed_scaling_factor = 1.0; // rho
  double swiglu_limit = 0.0;          // lambda (0 = no clamp)
  std::string scoring_func;           // "sqrtsoftplus" (the only one supported)
  int64_t hc_mult = 0;                // n_c
  int64_t hc_sinkhorn_iters = 0;
  double hc_eps = 1e-6;
  double rms_norm_eps = 1e-6;
  RopeParams rope_main;               // SWA layers
  RopeParams rope_compress;           // CSA and HCA layers
  int64_t max_position_embeddings = 0;
  int64_t num_nextn_predict_layers = 0;
  int64_t bos_token_id = 0;           // -1 when the config sets it to null
  int64_t eos_token_id = 1;           // first id when the config gives a list; -1 when null
  bool tie_word_embeddings = false;
  QuantizationInfo quantization;

  // Per-layer schedule, size num_layers each.
  std::vector<AttentionType> layer_types;
  std::vector<int64_t> compress_rates;  // 0 (SWA), m_c (CSA) or m_h (HCA) per layer
  std::vector<MlpType> mlp_types;
  int64_t num_hash_layers = 0;        // number of hash_moe layers (they lead the stack in real checkpoints)
  int64_t csa_compress_rate = 4;      // m_c, resolved from compress_rates / compress_rate_csa
  int64_t hca_compress_rate = 128;    // m_h, resolved from compress_rates / compress_rate_hca
  // Attention type of each MTP block, from the trailing upstream compress_ratios
  // slots (empty for the transformers form, which drops them).
  std::vector<AttentionType> mtp_layer_types;

  int64_t nope_head_dim() const { return head_dim - rope_head_dim; }
};

// Parses and validates; `source` names the file in error messages. A missing
// or inconsistent field throws megamoe::Error "<source>: field '<name>' <problem>".
// Where the two forms overlap (layer_types vs compress_ratios, mlp_layer_types
// vs num_hash_layers, qk_rope_head_dim vs partial_rotary_factor, compress_rates
// vs compress_rate_*, rope_parameters vs rope_theta/compress_rope_theta) both
// may be present and must agree. The schedule is never guessed: configs with
// neither layer_types nor compress_ratios (or neither mlp_layer_types nor
// num_hash_layers) are rejected. YaRN factor: the explicit `factor` (as
// transformers 5.17 and the reference use it), derived as max_position_embeddings /
// original_max_position_embeddings only when absent; a contradiction is an error.
ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source);
ModelConfig load_model_config(const std::filesystem::path& config_json);

}  // namespace megamoe
