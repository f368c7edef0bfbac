// Checkpoint::canonical_name: DeepSeek upstream tensor names -> transformers
// names. The table reproduces transformers 5.17 conversion_mapping["deepseek_v4"]
// (dsv4-architecture.md §3.3) as literal substitutions applied in order, each
// to its first occurrence, as transformers' WeightRenaming does. The order
// matters: e.g. `.attn.` must become `.self_attn.` before `.self_attn.wq_b.`
// is matched, and `.indexer.compressor.` must be swapped before `.wkv.`.
#include <array>
#include <cctype>
#include <string>
#include <string_view>

#include "core/checkpoint.hpp"

namespace megamoe {
namespace {

enum class Anchor {
  kAnywhere,  // substring
  kWhole,     // ^pattern$
  kSuffix,    // pattern$
  kPrefix,    // ^pattern
};

struct Renaming {
  std::string_view from;
  std::string_view to;
  Anchor anchor;
};

constexpr std::array<Renaming, 32> kRenamings = {{
    {".attn.", ".self_attn.", Anchor::kAnywhere},
    {".ffn.", ".mlp.", Anchor::kAnywhere},
    {".indexer.compressor.", ".compressor.indexer.", Anchor::kAnywhere},
    // transformers renames only ^embed.weight$ / ^head.weight$; a prefix rule also carries an
    // FP8 head's scale along (head.weight_scale_inv -> lm_head.weight_scale_inv).
    {"embed.", "embed_tokens.", Anchor::kPrefix},
    {"head.", "lm_head.", Anchor::kPrefix},
    {"hc_head_fn", "hc_head.hc_fn", Anchor::kWhole},
    {"hc_head_base", "hc_head.hc_base", Anchor::kWhole},
    {"hc_head_scale", "hc_head.hc_scale", Anchor::kWhole},
    {".attn_norm.", ".input_layernorm.", Anchor::kAnywhere},
    {".ffn_norm.", ".post_attention_layernorm.", Anchor::kAnywhere},
    {".hc_attn_fn", ".attn_hc.fn", Anchor::kSuffix},
    {".hc_attn_base", ".attn_hc.base", Anchor::kSuffix},
    {".hc_attn_scale", ".attn_hc.scale", Anchor::kSuffix},
    {".hc_ffn_fn", ".ffn_hc.fn", Anchor::kSuffix},
    {".hc_ffn_base", ".ffn_hc.base", Anchor::kSuffix},
    {".hc_ffn_scale", ".ffn_hc.scale", Anchor::kSuffix},
    {".attn_sink", ".sinks", Anchor::kSuffix},
    {".indexer.weights_proj.", ".compressor.indexer.scorer.weights_proj.", Anchor::kAnywhere},
    {".indexer.wq_b.", ".compressor.indexer.q_b_proj.", Anchor::kAnywhere},
    {".norm.", ".kv_norm.", Anchor::kAnywhere},  // compressor norms (the only `norm` after a dot)
    {".ape", ".position_bias", Anchor::kSuffix},
    {".wq_a.", ".q_a_proj.", Anchor::kAnywhere},
    {".self_attn.wq_b.", ".self_attn.q_b_proj.", Anchor::kAnywhere},
    {".wkv.", ".kv_proj.", Anchor::kAnywhere},
    {".wgate.", ".gate_proj.", Anchor::kAnywhere},
    {".wo_a.", ".o_a_proj.", Anchor::kAnywhere},
    {".wo_b.", ".o_b_proj.", Anchor::kAnywhere},
    {".q_norm.", ".q_a_norm.", Anchor::kAnywhere},
    {".gate.bias", ".gate.e_score_correction_bias", Anchor::kSuffix},
    {".shared_experts.w1.", ".shared_experts.gate_proj.", Anchor::kAnywhere},
    {".shared_experts.w2.", ".shared_experts.down_proj.", Anchor::kAnywhere},
    {".shared_experts.w3.", ".shared_experts.up_proj.", Anchor::kAnywhere},
}};

void apply(const Renaming& rule, std::string& name) {
  switch (rule.anchor) {
    case Anchor::kWhole:
      if (name == rule.from) name = std::string(rule.to);
      return;
    case Anchor::kSuffix:
      if (name.size() >= rule.from.size() && std::string_view(name).substr(name.size() - rule.from.size()) == rule.from) {
        name.replace(name.size() - rule.from.size(), rule.from.size(), rule.to);
      }
      return;
    case Anchor::kPrefix:
      if (name.rfind(rule.from, 0) == 0) name.replace(0, rule.from.size(), rule.to);
      return;
    case Anchor::kAnywhere:
      if (const size_t at = name.find(rule.from); at != std::string::npos) name.replace(at, rule.from.size(), rule.to);
      return;
  }
}

// `.experts.<E>.w1.` -> `.experts.<E>.gate_proj.` (w3 -> up_proj, w2 -> down_proj).
void rename_routed_expert(std::string& name) {
  constexpr std::string_view kExperts = ".experts.";
  const size_t at = name.find(kExperts);
  if (at == std::string::npos) return;
  size_t pos = at + kExperts.size();
  const size_t digits_begin = pos;
  while (pos < name.size() && std::isdigit(static_cast<unsigned char>(name[pos]))) ++pos;
  if (pos == digits_begin || pos + 4 > name.size() || name[pos] != '.') return;
  const std::string_view which = std::string_view(name).substr(pos + 1, 3);
  std::string_view replacement;
  if (which == "w1.") replacement = "gate_proj.";
  if (which == "w3.") replacement = "up_proj.";
  if (which == "w2.") replacement = "down_proj.";
  if (!replacement.empty()) name.replace(pos + 1, 3, replacement);
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// MTP block-level tensors (`mtp.<k>.e_proj.weight`, `mtp.<k>.norm.weight`, ...) are not decoder-block
// tensors: they keep their names (only the scale suffix is normalised).
bool is_mtp_block_level(std::string_view name) {
  if (name.substr(0, 4) != "mtp.") return false;
  size_t pos = 4;
  while (pos < name.size() && std::isdigit(static_cast<unsigned char>(name[pos]))) ++pos;
  if (pos == 4 || pos >= name.size() || name[pos] != '.') return false;
  const std::string_view rest = name.substr(pos + 1);
  for (std::string_view component : {"e_proj.", "h_proj.", "enorm.", "hnorm.", "norm.", "emb.", "head."}) {
    if (rest.substr(0, component.size()) == component) return true;
  }
  return rest.substr(0, 8) == "hc_head_";
}

}  // namespace

std::string Checkpoint::canonical_name(const std::string& name) {
  if (name.rfind("lm_head.", 0) == 0) return name;
  // transformers' save_pretrained writes a hybrid: it reverses its renaming under the `model.` prefix
  // (e.g. `model.layers.1.attn.norm.weight`, `model.layers.1.ffn.experts.0.w1.weight`) but keeps
  // `model.embed_tokens` / `model.hc_head.*`. So `model.` names go through the same table: the table is
  // idempotent on transformers names (none of its patterns occurs in one), which the tests check.
  std::string out = name.rfind("model.", 0) == 0 ? name.substr(6) : name;
  // Upstream block scales `X.scale` (FP8 128x128 or MXFP4 per-32, E8M0 or F32) are transformers'
  // `X.weight_scale_inv`. Done first, on the raw name; the mHC scales (`hc_attn_scale`, transformers
  // `attn_hc.scale` / `ffn_hc.scale`) are parameters, not block scales.
  if (ends_with(out, ".scale") && !ends_with(out, "_hc.scale")) out.replace(out.size() - 6, 6, ".weight_scale_inv");
  if (is_mtp_block_level(out)) return out;
  for (const Renaming& rule : kRenamings) apply(rule, out);
  // Not in transformers (it stacks routed experts on load); we keep them per expert.
  rename_routed_expert(out);
  if (out.rfind("lm_head.", 0) == 0 || out.rfind("mtp.", 0) == 0) return out;
  return "model." + out;
}

}  // namespace megamoe
