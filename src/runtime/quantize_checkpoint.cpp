#include "runtime/quantize_checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <list>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>

#include "backend/cpu/load.hpp"
#include "core/block_quant.hpp"
#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/thread_pool.hpp"
#include "runtime/expert_calibration.hpp"

namespace megamoe {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

QuantizeFormat parse_quantize_format(const std::string& text) {
  if (text == "nvfp4") return QuantizeFormat::kNvfp4;
  if (text == "mxfp4") return QuantizeFormat::kMxfp4;
  if (text == "fp8") return QuantizeFormat::kFp8;
  MEGAMOE_THROW("unknown quantization format '", quote_for_message(text, 40), "' (nvfp4, mxfp4 or fp8)");
}

namespace {

const char* format_name(QuantizeFormat f) {
  return f == QuantizeFormat::kNvfp4 ? "nvfp4" : f == QuantizeFormat::kMxfp4 ? "mxfp4" : "fp8";
}

// Output tensors of one shard; blobs keep stable addresses until written.
class ShardWriter {
 public:
  void add(std::string name, DType dtype, Shape shape, std::vector<uint8_t> bytes) {
    std::lock_guard lock(mutex_);
    blobs_.push_back(std::move(bytes));
    tensors_.push_back({std::move(name), dtype, std::move(shape), blobs_.back().data(), blobs_.back().size()});
  }
  void add_view(const TensorView& v) {
    std::lock_guard lock(mutex_);
    tensors_.push_back({v.name, v.dtype, v.shape, v.data, v.nbytes});
  }
  void add_scalar(std::string name, float value) {
    std::vector<uint8_t> bytes(4);
    std::memcpy(bytes.data(), &value, 4);
    add(std::move(name), DType::F32, {}, std::move(bytes));
  }
  // Sorted by name (safetensors' usual order), so the output does not depend on thread timing.
  std::vector<TensorToWrite> sorted() const {
    std::vector<TensorToWrite> out = tensors_;
    std::sort(out.begin(), out.end(), [](const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; });
    return out;
  }

 private:
  std::mutex mutex_;
  std::list<std::vector<uint8_t>> blobs_;
  std::vector<TensorToWrite> tensors_;
};

bool is_dense(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

// Where a routed expert's three matrices are stored and under which names they are written.
struct ExpertSite {
  int64_t layer = 0, expert = 0;
  std::string base[3];  // stored-name prefixes of gate_proj, up_proj, down_proj (without ".weight")
  bool upstream = false;  // DeepSeek's names: block scales are `.scale`, not `.weight_scale_inv`
};

constexpr const char* kExpertParts[3] = {"gate_proj", "up_proj", "down_proj"};

class Quantizer {
 public:
  Quantizer(const Checkpoint& ckpt, const QuantizeOptions& options,
            const std::vector<LayerActivationAmax>* amax, QuantizeSummary& summary)
      : ckpt_(ckpt), options_(options), amax_(amax), summary_(summary) {}

  void expert(const ExpertSite& site, ShardWriter& out) {
    const ModelConfig& c = ckpt_.config();
    const int64_t d = c.hidden_size, inter = c.moe_intermediate_size;
    Tensor w[3];
    for (int i = 0; i < 3; ++i) {
      const WeightRef ref = ckpt_.expert_weight(site.layer, site.expert, kExpertParts[i]);
      MEGAMOE_CHECK(ref.format == WeightFormat::kDense, "quantize: expert ", site.expert, " of layer ", site.layer,
                    " (", ref.name, ") is already ", weight_format_name(ref.format),
                    "; quantize from a BF16 / FP32 checkpoint");
      w[i] = cpu::dequantize_weight(ref);
    }
    const int64_t rows[3] = {inter, inter, d}, cols[3] = {d, d, inter};
    const std::string scale_suffix = site.upstream ? ".scale" : ".weight_scale_inv";
    switch (options_.format) {
      case QuantizeFormat::kNvfp4: {
        check_multiple(site, kNvfp4BlockSize);
        // w1 and w3 share weight_scale_2 (and input_scale): ModelOpt fuses their amax.
        float joint = 0.0f;
        for (int i = 0; i < 2; ++i)
          for (int64_t k = 0; k < w[i].numel(); ++k) joint = std::max(joint, std::fabs(w[i].data<float>()[k]));
        for (int i = 0; i < 3; ++i) {
          Nvfp4Tensor q =
              quantize_nvfp4_weight(w[i].data<float>(), rows[i], cols[i], i < 2 ? std::optional(joint) : std::nullopt);
          const std::string& b = site.base[i];
          out.add(b + ".weight", DType::U8, {rows[i], cols[i] / 2}, std::move(q.packed));
          out.add(b + ".weight_scale", DType::F8_E4M3, {rows[i], cols[i] / kNvfp4BlockSize}, std::move(q.block_scales));
          out.add_scalar(b + ".weight_scale_2", q.global_scale);
          if (amax_ != nullptr) {
            const LayerActivationAmax& a = amax_->at(static_cast<size_t>(site.layer));
            out.add_scalar(b + ".input_scale", (i < 2 ? a.input : a.hidden).at(site.expert) / kNvfp4AmaxDivisor);
          }
        }
        break;
      }
      case QuantizeFormat::kMxfp4:
        check_multiple(site, kMxfp4BlockSize);
        for (int i = 0; i < 3; ++i) {
          Mxfp4Tensor q = quantize_mxfp4_weight(w[i].data<float>(), rows[i], cols[i]);
          out.add(site.base[i] + ".weight", DType::I8, {rows[i], cols[i] / 2}, std::move(q.packed));
          out.add(site.base[i] + scale_suffix, DType::F8_E8M0, {rows[i], cols[i] / kMxfp4BlockSize},
                  std::move(q.scales));
        }
        break;
      case QuantizeFormat::kFp8:
        for (int i = 0; i < 3; ++i) write_fp8(site.base[i], scale_suffix, w[i], out);
        break;
    }
    std::lock_guard lock(mutex_);
    summary_.experts += 3;
  }

  void dense_fp8(const TensorView& view, bool upstream, ShardWriter& out) {
    MEGAMOE_CHECK(view.shape.size() == 2, "quantize: ", ckpt_.describe(view), " is not a matrix");
    const Tensor w = cpu::to_f32(view);
    const std::string base = view.name.substr(0, view.name.size() - std::string(".weight").size());
    write_fp8(base, upstream ? ".scale" : ".weight_scale_inv", w, out);
    std::lock_guard lock(mutex_);
    ++summary_.dense;
  }

 private:
  void check_multiple(const ExpertSite& site, int64_t block) const {
    const ModelConfig& c = ckpt_.config();
    MEGAMOE_CHECK(c.hidden_size % block == 0 && c.moe_intermediate_size % block == 0, "quantize: ",
                  format_name(options_.format), " needs hidden_size (", c.hidden_size, ") and moe_intermediate_size (",
                  c.moe_intermediate_size, ") to be multiples of ", block, " (layer ", site.layer, ")");
  }
  static void write_fp8(const std::string& base, const std::string& scale_suffix, const Tensor& w, ShardWriter& out) {
    const int64_t rows = w.shape().at(0), cols = w.shape().at(1);
    Fp8BlockTensor q = quantize_fp8_block_weight(w.data<float>(), rows, cols);
    out.add(base + ".weight", DType::F8_E4M3, {rows, cols}, std::move(q.values));
    out.add(base + scale_suffix, DType::F8_E8M0,
            {(rows + kFp8BlockSize - 1) / kFp8BlockSize, (cols + kFp8BlockSize - 1) / kFp8BlockSize},
            std::move(q.scales));
  }

  const Checkpoint& ckpt_;
  const QuantizeOptions& options_;
  const std::vector<LayerActivationAmax>* amax_;
  QuantizeSummary& summary_;
  std::mutex mutex_;
};

// Dense projections stored as FP8 block-128 with dense_fp8 (the precision floor stays as it is).
bool is_dense_fp8_target(const std::string& canonical) {
  static const std::regex pattern(
      R"(model\.layers\.\d+\.(self_attn\.(q_a_proj|q_b_proj|kv_proj|o_a_proj|o_b_proj|compressor\.indexer\.q_b_proj)|)"
      R"(mlp\.shared_experts\.(gate_proj|up_proj|down_proj))\.weight)");
  return std::regex_match(canonical, pattern);
}

void check_output_dir(const fs::path& in, const fs::path& out) {
  MEGAMOE_CHECK(!fs::exists(out) || !fs::equivalent(in, out), "quantize: --out ", out.string(),
                " is the input directory");
  if (!fs::exists(out)) return;
  MEGAMOE_CHECK(fs::is_directory(out), "quantize: --out ", out.string(), " exists and is not a directory");
  for (const auto& entry : fs::directory_iterator(out)) {
    const std::string name = entry.path().filename().string();
    MEGAMOE_CHECK(name != "config.json" && !name.ends_with(".safetensors") && name != "model.safetensors.index.json",
                  "quantize: --out ", out.string(), " already holds a checkpoint (", name, "); choose an empty directory");
  }
}

json fp8_block_config() {
  return json{{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"scale_fmt", "ue8m0"},
              {"weight_block_size", {128, 128}}};
}

// config.json with the quantization recorded as the official releases do.
json quantized_config(const fs::path& in, const ModelConfig& cfg, const QuantizeOptions& options, bool upstream,
                      bool dense_is_fp8, json* hf_quant_config) {
  std::ifstream file(in / "config.json");
  json config = json::parse(file);
  json quant = dense_is_fp8 ? fp8_block_config() : json::object();
  if (config.contains("quantization_config") && config["quantization_config"].is_object())
    quant.update(config["quantization_config"]);  // keep what the source already declares
  config["expert_dtype"] = options.format == QuantizeFormat::kFp8 ? "fp8" : "fp4";
  if (options.format == QuantizeFormat::kFp8) {
    quant.update(fp8_block_config());
  } else if (options.format == QuantizeFormat::kNvfp4) {
    // ModelOpt's mixed-precision form of nvidia/DeepSeek-V4-*-NVFP4 (nvfp4-format.md §3.4).
    const json producer = {{"name", "megamoe"}, {"version", "quantize-1"}};
    const json ignore = upstream ? json{"*.attn.*", "*.ffn.shared_experts.*", "*.ffn.gate", "head", "mtp.*"}
                                 : json{"*.self_attn.*", "*.mlp.shared_experts.*", "*.mlp.gate", "lm_head", "mtp.*"};
    json layers = json::object();
    for (int64_t l = 0; l < cfg.num_layers; ++l) {
      const std::string name = upstream ? "layers." + std::to_string(l) + ".ffn.experts"
                                        : "model.layers." + std::to_string(l) + ".mlp.experts";
      layers[name] = {{"quant_algo", "NVFP4"}, {"group_size", 16}};
    }
    const json nvfp4 = {{"num_bits", 4}, {"type", "float"}, {"group_size", 16}, {"dynamic", false}};
    if (!dense_is_fp8) quant["quant_method"] = "modelopt";
    quant["quant_algo"] = "MIXED_PRECISION";
    quant["moe_quant_algo"] = "NVFP4";
    quant["kv_cache_quant_algo"] = nullptr;
    quant["group_size"] = 16;
    quant["producer"] = producer;
    quant["config_groups"] = {{"group_0", {{"weights", nvfp4},
                                           {"input_activations", options.calibration.empty() ? json(nullptr) : nvfp4},
                                           {"targets", {"Linear"}}}}};
    quant["quantized_layers"] = layers;
    quant["ignore"] = ignore;
    *hf_quant_config = {{"producer", producer},
                        {"quantization", {{"quant_algo", "MIXED_PRECISION"}, {"kv_cache_quant_algo", nullptr},
                                          {"group_size", 16}, {"quantized_layers", layers},
                                          {"exclude_modules", ignore}}}};
  }
  if (!quant.empty()) config["quantization_config"] = quant;
  return config;
}

void write_json(const fs::path& path, const json& value) {
  std::ofstream out(path);
  out << value.dump(2) << "\n";
  MEGAMOE_CHECK(out.good(), "quantize: cannot write ", path.string());
}

}  // namespace

QuantizeSummary quantize_checkpoint(const fs::path& in, const fs::path& out, const QuantizeOptions& options) {
  const auto ckpt = Checkpoint::open(in);
  const ModelConfig& cfg = ckpt->config();
  check_output_dir(in, out);
  auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  MEGAMOE_CHECK(options.calibration.empty() || options.format == QuantizeFormat::kNvfp4,
                "quantize: calibration (input_scale) applies to nvfp4 only");

  QuantizeSummary summary;
  std::optional<std::vector<LayerActivationAmax>> amax;
  if (!options.calibration.empty()) {
    for (const auto& w : options.calibration) summary.calibrated_tokens += static_cast<int64_t>(w.size());
    say("calibrating expert inputs on " + std::to_string(options.calibration.size()) + " windows (" +
        std::to_string(summary.calibrated_tokens) + " tokens)");
    amax = calibrate_expert_activations(*ckpt, options.calibration, options.calibration_device);
  }
  Quantizer quantizer(*ckpt, options, amax ? &*amax : nullptr, summary);

  static const std::regex stacked(R"(model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj))");
  static const std::regex per_expert(R"(model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.\w+)");
  bool upstream_names = false, dense_is_fp8 = options.dense_fp8 || cfg.quantization.quant_method == "fp8";
  fs::create_directories(out);
  json weight_map = json::object();
  for (const auto& file : ckpt->files()) {
    ShardWriter writer;
    std::vector<ExpertSite> sites;
    for (const auto& [stored, view] : file->tensors()) {
      summary.bytes_in += view.nbytes;
      const std::string canonical = Checkpoint::canonical_name(stored);
      const bool upstream = !stored.starts_with("model.") && !stored.starts_with("lm_head.");
      upstream_names = upstream_names || upstream;
      std::smatch m;
      if (std::regex_match(canonical, m, stacked)) {
        if (m[2] != "gate_up_proj") continue;  // written with its expert's gate/up
        const std::string prefix = stored.substr(0, stored.size() - std::string("gate_up_proj").size());
        for (int64_t e = 0; e < cfg.n_routed_experts; ++e) {
          ExpertSite site{std::stoll(m[1]), e, {}, upstream};
          for (int i = 0; i < 3; ++i) site.base[i] = prefix + std::to_string(e) + "." + kExpertParts[i];
          sites.push_back(site);
        }
      } else if (std::regex_match(canonical, m, per_expert)) {
        if (m[3] != "gate_proj" || !canonical.ends_with(".weight")) continue;  // companions follow gate_proj.weight
        ExpertSite site{std::stoll(m[1]), std::stoll(m[2]), {}, upstream};
        for (int i = 0; i < 3; ++i) {
          const std::string& name = ckpt->expert_weight(site.layer, site.expert, kExpertParts[i]).weight->name;
          site.base[i] = name.substr(0, name.size() - std::string(".weight").size());
        }
        sites.push_back(site);
      } else if (options.dense_fp8 && is_dense(view.dtype) && is_dense_fp8_target(canonical)) {
        quantizer.dense_fp8(view, upstream, writer);
      } else {
        writer.add_view(view);
      }
    }
    ThreadPool::global().parallel_for(sites.size(), [&](size_t begin, size_t end) {
      for (size_t s = begin; s < end; ++s) quantizer.expert(sites[s], writer);
    });
    if (!sites.empty()) {
      say(file->path().filename().string() + ": " + std::to_string(sites.size()) + " experts of layers " +
          std::to_string(sites.front().layer) + ".." + std::to_string(sites.back().layer) + " -> " +
          format_name(options.format));
    }
    const std::vector<TensorToWrite> tensors = writer.sorted();
    const std::string shard = file->path().filename().string();
    for (const TensorToWrite& t : tensors) {
      weight_map[t.name] = shard;
      summary.bytes_out += t.nbytes;
    }
    write_safetensors(out / shard, tensors, file->metadata());
  }

  json hf_quant_config;
  write_json(out / "config.json", quantized_config(in, cfg, options, upstream_names, dense_is_fp8, &hf_quant_config));
  if (!hf_quant_config.is_null()) write_json(out / "hf_quant_config.json", hf_quant_config);
  if (fs::exists(in / "model.safetensors.index.json")) {
    write_json(out / "model.safetensors.index.json",
               json{{"metadata", {{"total_size", summary.bytes_out}}}, {"weight_map", weight_map}});
  }
  // Everything else (tokenizer, generation config, README, ...) travels along.
  static const std::set<std::string> replaced = {"config.json", "hf_quant_config.json", "model.safetensors.index.json"};
  for (const auto& entry : fs::directory_iterator(in)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || replaced.contains(name) || name.ends_with(".safetensors")) continue;
    fs::copy_file(entry.path(), out / name, fs::copy_options::overwrite_existing);
  }
  say("wrote " + out.string());
  return summary;
}

}  // namespace megamoe
