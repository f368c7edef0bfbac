// A DeepSeek-V4 checkpoint directory: config.json plus one safetensors file or
// a sharded set (model.safetensors.index.json). Tensor names in the
// transformers form and in DeepSeek's upstream form are resolved to one
// canonical naming (the transformers names, dsv4-architecture.md §3.3), and
// each weight's storage format is detected from its dtype and companions.
//
// Canonical names:
//   - transformers names as they are ("model.layers.3.self_attn.q_a_proj.weight");
//   - upstream `X.scale` (E8M0/F32 block scale of an FP8 or MXFP4 weight) -> `X.weight_scale_inv`;
//   - upstream per-expert routed weights `layers.L.ffn.experts.E.w1|w3|w2.*` ->
//     `model.layers.L.mlp.experts.E.gate_proj|up_proj|down_proj.*` (kept per expert; the transformers
//     stacked form `model.layers.L.mlp.experts.gate_up_proj` / `down_proj` stays as it is);
//   - NVFP4 companions `weight_scale` (E4M3), `weight_scale_2`, `input_scale` keep their suffix;
//   - `mtp.*` keys are kept under `mtp.*` (not used by the main model); the decoder-block part of
//     their names gets the same renaming, block-level names (e_proj, norm, hc_head_*) stay as they are;
//   - upstream `embed.*` / `head.*` -> `model.embed_tokens.*` / `lm_head.*`, every other upstream
//     name gets the `model.` prefix.
// Names starting with `lm_head.` are kept verbatim; names under `model.` go through the same renaming
// (transformers' save_pretrained writes upstream-style names under `model.`, e.g.
// `model.layers.1.attn.norm.weight`; the table leaves genuine transformers names unchanged).
//
// Format detection (weight()): F32/BF16/F16 -> dense; F8_E4M3 + weight_scale_inv (F32 or E8M0,
// [ceil(out/B), ceil(in/B)], B = quantization_config.weight_block_size or 128) -> fp8-block;
// U8 [out, in/2] + weight_scale F8_E4M3 [out, in/16] + weight_scale_2 F32 [] (+ input_scale F32 [])
// -> nvfp4; I8/U8 [out, in/2] + weight_scale_inv E8M0 [out, in/32] -> mxfp4. Anything else, or a
// companion with the wrong dtype/shape, throws naming the file and tensor.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/model_config.hpp"
#include "core/safetensors.hpp"

namespace megamoe {

enum class WeightFormat {
  kDense,     // F32 / BF16 / F16
  kFp8Block,  // F8_E4M3 + weight_scale_inv (F32 or E8M0) per 128x128 tile
  kMxfp4,     // packed E2M1 (I8/U8, [out, in/2]) + weight_scale_inv E8M0 per 32
  kNvfp4,     // packed E2M1 (U8, [out, in/2]) + weight_scale E4M3 per 16 + weight_scale_2 F32 (+ input_scale)
};
std::string_view weight_format_name(WeightFormat format);  // "bf16"/"f32" are reported as dense

// One linear weight [out, in] in whatever format it is stored.
struct WeightRef {
  std::string name;             // canonical prefix, e.g. "model.layers.0.self_attn.q_a_proj"
  WeightFormat format = WeightFormat::kDense;
  int64_t out = 0, in = 0;      // logical shape
  const TensorView* weight = nullptr;
  const TensorView* scale = nullptr;         // block scales (fp8/mxfp4/nvfp4), else null
  const TensorView* global_scale = nullptr;  // nvfp4 weight_scale_2, else null
  const TensorView* input_scale = nullptr;   // nvfp4 input_scale if present
};

class Checkpoint {
 public:
  // Opens DIR (config.json + model.safetensors or model.safetensors.index.json).
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& dir);
  ~Checkpoint();

  const std::filesystem::path& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

  // All tensors by canonical name.
  const std::map<std::string, const TensorView*>& tensors() const { return by_name_; }
  bool has(const std::string& canonical_name) const;
  // Throws naming the tensor and the checkpoint directory when missing.
  const TensorView& get(const std::string& canonical_name) const;
  // Like get(), and checks the shape (error names the tensor, expected and found shapes).
  const TensorView& get(const std::string& canonical_name, const Shape& expected_shape) const;

  // The linear weight at canonical prefix (without ".weight"), format detected,
  // logical shape checked against [out, in].
  WeightRef weight(const std::string& prefix, int64_t out, int64_t in) const;
  // Same, with the logical shape taken from the stored tensors (used by `megamoe inspect`).
  WeightRef weight(const std::string& prefix) const;

  // Routed expert e of layer l: which = "gate_proj" | "up_proj" | "down_proj".
  // Works for per-expert tensors (any format) and for the transformers stacked
  // dense form (gate_up_proj [E, 2I, D] / down_proj [E, D, I]), in which case
  // the returned WeightRef points into the stacked tensor (weight is a view).
  WeightRef expert_weight(int64_t layer, int64_t expert, const std::string& which) const;

  // Upstream or transformers name -> canonical name (implemented in key_names.cpp).
  static std::string canonical_name(const std::string& name);

  // "<file>: tensor '<stored name>'" for error messages.
  std::string describe(const TensorView& view) const;

 private:
  Checkpoint() = default;
  void build_stacked_expert_views();
  std::filesystem::path dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
  std::vector<std::unique_ptr<TensorView>> derived_views_;  // expert slices of stacked tensors
  // Canonical per-expert prefix ("model.layers.L.mlp.experts.E.gate_proj") -> slice of the stacked
  // tensor; filled at open() so expert_weight() is const and thread-safe. Not part of tensors().
  std::map<std::string, const TensorView*> stacked_expert_views_;
};

}  // namespace megamoe
