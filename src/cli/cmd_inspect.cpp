// `megamoe inspect DIR`: opens a checkpoint with full validation and describes
// it: config summary, per-layer schedule, tensor count, per-format counts and
// bytes, total size, and the detected quantization of the routed experts and
// of the other linear weights. Any malformed input ends in one error line
// naming the file (thrown as megamoe::Error, printed by main).
#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <set>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "core/checkpoint.hpp"
#include "core/checkpoint_validation.hpp"

namespace {

using megamoe::Checkpoint;
using megamoe::DType;
using megamoe::TensorView;
using megamoe::WeightFormat;
using megamoe::WeightRef;

// Storage categories of the format table.
enum Category { kBf16, kF16, kF32, kFp8Block, kMxfp4, kNvfp4, kOther, kCategoryCount };
constexpr std::array<const char*, kCategoryCount> kCategoryNames = {
    "bf16 (dense)", "f16 (dense)", "f32 (dense)", "fp8-block", "mxfp4", "nvfp4", "other"};

Category dense_category(DType dtype) {
  switch (dtype) {
    case DType::BF16: return kBf16;
    case DType::F16: return kF16;
    case DType::F32: return kF32;
    default: return kOther;
  }
}

Category weight_category(const WeightRef& ref) {
  switch (ref.format) {
    case WeightFormat::kDense: return dense_category(ref.weight->dtype);
    case WeightFormat::kFp8Block: return kFp8Block;
    case WeightFormat::kMxfp4: return kMxfp4;
    case WeightFormat::kNvfp4: return kNvfp4;
  }
  return kOther;
}

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.2f %s", value, units[unit]);
  return text;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "nvfp4 (1536)" or "fp8-block (120), bf16 (dense) (40)"; "none" when empty.
std::string format_mix(const std::map<Category, int64_t>& counts) {
  std::string text;
  for (const auto& [category, count] : counts) {
    if (!text.empty()) text += ", ";
    text += std::string(kCategoryNames[category]) + " x" + std::to_string(count);
  }
  return text.empty() ? "none" : text;
}

void print_config(const Checkpoint& checkpoint) {
  const megamoe::ModelConfig& c = checkpoint.config();
  std::printf("config:\n");
  std::printf("  vocab %lld, hidden %lld, layers %lld (+%lld MTP), heads %lld x %lld (rope %lld), kv heads 1\n",
              (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.num_layers,
              (long long)c.num_nextn_predict_layers, (long long)c.num_heads, (long long)c.head_dim,
              (long long)c.rope_head_dim);
  std::printf("  q_lora_rank %lld, o_groups %lld x o_lora_rank %lld, sliding_window %lld\n", (long long)c.q_lora_rank,
              (long long)c.o_groups, (long long)c.o_lora_rank, (long long)c.sliding_window);
  std::printf("  indexer %lld heads x %lld, top-k %lld; compress rates CSA %lld, HCA %lld\n",
              (long long)c.index_n_heads, (long long)c.index_head_dim, (long long)c.index_topk,
              (long long)c.csa_compress_rate, (long long)c.hca_compress_rate);
  std::printf("  experts %lld routed (top-%lld, %s, scale %g) + %lld shared, intermediate %lld, swiglu_limit %g\n",
              (long long)c.n_routed_experts, (long long)c.num_experts_per_tok, c.scoring_func.c_str(),
              c.routed_scaling_factor, (long long)c.n_shared_experts, (long long)c.moe_intermediate_size,
              c.swiglu_limit);
  std::printf("  mHC %lld streams, %lld Sinkhorn iterations; rms_norm_eps %g\n", (long long)c.hc_mult,
              (long long)c.hc_sinkhorn_iters, c.rms_norm_eps);
  std::printf("  rope main: theta %g%s\n", c.rope_main.theta, c.rope_main.yarn ? " (yarn)" : "");
  if (c.rope_compress.yarn) {
    std::printf("  rope compress: theta %g, yarn factor %g, original %lld, beta %g/%g\n", c.rope_compress.theta,
                c.rope_compress.factor, (long long)c.rope_compress.original_max_position, c.rope_compress.beta_fast,
                c.rope_compress.beta_slow);
  } else {
    std::printf("  rope compress: theta %g\n", c.rope_compress.theta);
  }
  std::printf("  max_position_embeddings %lld, bos %lld, eos %lld, tied embeddings %s\n",
              (long long)c.max_position_embeddings, (long long)c.bos_token_id, (long long)c.eos_token_id,
              c.tie_word_embeddings ? "yes" : "no");
  const megamoe::QuantizationInfo& q = c.quantization;
  std::printf("  quantization_config: method %s, moe_quant_algo %s, expert_dtype %s, block %lld\n",
              q.quant_method.empty() ? "-" : q.quant_method.c_str(),
              q.moe_quant_algo.empty() ? "-" : q.moe_quant_algo.c_str(),
              q.expert_dtype.empty() ? "-" : q.expert_dtype.c_str(), (long long)q.weight_block_size);
}

void print_schedule(const megamoe::ModelConfig& c) {
  std::printf("layer schedule:\n  %-5s %-30s %5s  %s\n", "layer", "attention", "rate", "mlp");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto attention = megamoe::attention_type_name(c.layer_types[l]);
    const auto mlp = megamoe::mlp_type_name(c.mlp_types[l]);
    std::printf("  %-5lld %-30.*s %5lld  %.*s\n", (long long)l, (int)attention.size(), attention.data(),
                (long long)c.compress_rates[l], (int)mlp.size(), mlp.data());
  }
  for (size_t i = 0; i < c.mtp_layer_types.size(); ++i) {
    const auto attention = megamoe::attention_type_name(c.mtp_layer_types[i]);
    std::printf("  mtp.%zu %-30.*s %5s  moe\n", i, (int)attention.size(), attention.data(), "");
  }
  const auto count_attention = [&](megamoe::AttentionType type) {
    return (long long)std::count(c.layer_types.begin(), c.layer_types.end(), type);
  };
  std::printf("  totals: %lld sliding, %lld CSA, %lld HCA; %lld hash_moe, %lld moe\n",
              count_attention(megamoe::AttentionType::kSliding),
              count_attention(megamoe::AttentionType::kCompressedSparse),
              count_attention(megamoe::AttentionType::kHeavilyCompressed), (long long)c.num_hash_layers,
              (long long)(c.num_layers - c.num_hash_layers));
}

int run_inspect(int argc, char** argv) {
  CLI::App app{"describe a DeepSeek-V4 checkpoint directory (validates every header and companion tensor)", argv[0]};
  std::string dir;
  app.add_option("dir", dir, "checkpoint directory (config.json + model.safetensors[.index.json])")->required();
  CLI11_PARSE(app, argc, argv);

  const auto checkpoint = Checkpoint::open(dir);
  const megamoe::ModelConfig& config = checkpoint->config();
  // The model loader's validation (make_backend runs the same function); every problem is listed.
  const megamoe::CheckpointReport report = megamoe::validate_checkpoint(*checkpoint);
  if (!report.problems.empty()) {
    for (const std::string& problem : report.problems) std::fprintf(stderr, "megamoe inspect: error: %s\n", problem.c_str());
    if (report.problems.size() > 1) {
      std::fprintf(stderr, "megamoe inspect: %s: %zu problems; the model would not load\n", dir.c_str(),
                   report.problems.size());
    }
    return 1;
  }

  // Attribute every tensor to a storage category: linear weights with their companions take the
  // weight's format; everything else goes by dtype.
  std::array<int64_t, kCategoryCount> counts{};
  std::array<uint64_t, kCategoryCount> bytes{};
  std::map<Category, int64_t> expert_formats, mtp_expert_formats, other_formats;
  std::set<const TensorView*> attributed;
  for (const auto& [name, view] : checkpoint->tensors()) {
    if (!ends_with(name, ".weight") || view->shape.size() != 2 ||
        !(view->dtype == DType::BF16 || view->dtype == DType::F16 || view->dtype == DType::F32 ||
          view->dtype == DType::F8_E4M3 || view->dtype == DType::U8 || view->dtype == DType::I8)) {
      continue;
    }
    const WeightRef ref = checkpoint->weight(name.substr(0, name.size() - 7));
    const Category category = weight_category(ref);
    for (const TensorView* part : {ref.weight, ref.scale, ref.global_scale, ref.input_scale}) {
      if (part == nullptr || !attributed.insert(part).second) continue;
      ++counts[category];
      bytes[category] += part->nbytes;
    }
    const bool routed_expert = name.find(".mlp.experts.") != std::string::npos;
    const bool mtp = name.rfind("mtp.", 0) == 0;
    ++(routed_expert ? (mtp ? mtp_expert_formats : expert_formats) : other_formats)[category];
  }
  for (const auto& [name, view] : checkpoint->tensors()) {
    if (attributed.count(view) != 0) continue;
    const Category category = dense_category(view->dtype);
    ++counts[category];
    bytes[category] += view->nbytes;
    // Transformers' stacked dense experts (gate_up_proj / down_proj) are routed expert weights too.
    if (name.rfind("model.layers.", 0) == 0 &&
        (ends_with(name, ".mlp.experts.gate_up_proj") || ends_with(name, ".mlp.experts.down_proj"))) {
      ++expert_formats[category];
    }
  }
  // Every routed expert weight of every layer must resolve with the config's shapes.
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (int64_t e = 0; e < config.n_routed_experts; ++e) {
      for (const char* which : {"gate_proj", "up_proj", "down_proj"}) checkpoint->expert_weight(l, e, which);
    }
  }

  uint64_t file_bytes = 0;
  for (const auto& file : checkpoint->files()) file_bytes += std::filesystem::file_size(file->path());
  std::printf("checkpoint: %s\n", checkpoint->dir().string().c_str());
  std::printf("files: %zu safetensors file%s, %s total (%llu bytes)\n", checkpoint->files().size(),
              checkpoint->files().size() == 1 ? "" : "s", human_bytes(file_bytes).c_str(),
              (unsigned long long)file_bytes);
  print_config(*checkpoint);
  print_schedule(config);
  std::printf("tensors: %zu\n", checkpoint->tensors().size());
  std::printf("  %-14s %8s %16s  %s\n", "format", "tensors", "bytes", "");
  uint64_t tensor_bytes = 0;
  for (int c = 0; c < kCategoryCount; ++c) {
    if (counts[c] == 0) continue;
    std::printf("  %-14s %8lld %16llu  %s\n", kCategoryNames[c], (long long)counts[c], (unsigned long long)bytes[c],
                human_bytes(bytes[c]).c_str());
    tensor_bytes += bytes[c];
  }
  std::printf("  %-14s %8zu %16llu  %s\n", "total", checkpoint->tensors().size(), (unsigned long long)tensor_bytes,
              human_bytes(tensor_bytes).c_str());
  std::printf("quantization:\n");
  std::printf("  routed experts: %s (all %lld x %lld x 3 expert weights resolved)\n",
              format_mix(expert_formats).c_str(), (long long)config.num_layers, (long long)config.n_routed_experts);
  if (!mtp_expert_formats.empty()) std::printf("  mtp routed experts: %s\n", format_mix(mtp_expert_formats).c_str());
  std::printf("  other linear weights: %s\n", format_mix(other_formats).c_str());
  std::printf("validation: every tensor the model reads matches config.json; NaN/Inf scan of %lld tensors (%s) in "
              "%.1f ms: none\n",
              (long long)report.finite_tensors, human_bytes(report.finite_bytes).c_str(), report.finite_seconds * 1e3);
  return 0;
}

const megamoe::cli::Registration kInspect{"inspect", "describe a checkpoint directory", run_inspect};

}  // namespace
