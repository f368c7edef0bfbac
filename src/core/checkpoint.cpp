// Checkpoint directory: config.json + model.safetensors or a sharded set
// (model.safetensors.index.json), names canonicalised (key_names.cpp), and
// per-weight storage format detection with the companion tensors' dtypes and
// shapes checked (nvfp4-format.md §2-3, dsv4-architecture.md §3).
#include "core/checkpoint.hpp"


#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_file.hpp"

namespace megamoe {
namespace {

constexpr const char* kConfigFile = "config.json";
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool is_dense_float(DType dtype) { return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16; }

// weight_map of an index file: tensor name -> shard file name (relative to the directory).
std::map<std::string, std::string> read_weight_map(const std::filesystem::path& index_path) {
  const std::string source = index_path.string();
  const nlohmann::json index = read_json_file(index_path, kMaxIndexBytes);
  MEGAMOE_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), source,
                ": field 'weight_map' is missing or not an object");
  std::map<std::string, std::string> weight_map;
  for (const auto& item : index["weight_map"].items()) {
    MEGAMOE_CHECK(item.value().is_string(), source, ": weight_map entry '", item.key(), "' must name a file");
    const std::string file = item.value().get<std::string>();
    const std::filesystem::path relative(file);
    MEGAMOE_CHECK(!file.empty() && relative.is_relative() && file.find("..") == std::string::npos, source,
                  ": weight_map entry '", item.key(), "' names '", file,
                  "', which is not a file inside the checkpoint directory");
    weight_map[item.key()] = file;
  }
  MEGAMOE_CHECK(!weight_map.empty(), source, ": weight_map is empty");
  return weight_map;
}

std::string expert_prefix(int64_t layer, int64_t expert, const std::string& which) {
  return str_cat("model.layers.", layer, ".mlp.experts.", expert, ".", which);
}

}  // namespace

std::string_view weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kDense: return "dense";
    case WeightFormat::kFp8Block: return "fp8-block";
    case WeightFormat::kMxfp4: return "mxfp4";
    case WeightFormat::kNvfp4: return "nvfp4";
  }
  return "unknown";
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::filesystem::path& dir) {
  const std::string source = dir.string();
  MEGAMOE_CHECK(std::filesystem::is_directory(dir), source, ": not a directory");
  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->dir_ = dir;
  checkpoint->config_ = load_model_config(dir / kConfigFile);

  const auto index_path = dir / kIndexFile;
  std::map<std::string, std::string> weight_map;
  if (std::filesystem::exists(index_path)) {
    weight_map = read_weight_map(index_path);
    std::map<std::string, const SafetensorsFile*> shard_files;
    for (const auto& [tensor, shard] : weight_map) {
      if (shard_files.count(shard) == 0) {
        const auto shard_path = dir / shard;
        MEGAMOE_CHECK(std::filesystem::is_regular_file(shard_path), index_path.string(), ": shard '", shard,
                      "' (listed for tensor '", tensor, "') does not exist: ", shard_path.string());
        checkpoint->files_.push_back(SafetensorsFile::open(shard_path));
        shard_files[shard] = checkpoint->files_.back().get();
      }
      const SafetensorsFile& file = *shard_files.at(shard);
      MEGAMOE_CHECK(file.tensors().count(tensor) == 1, index_path.string(), ": tensor '", tensor,
                    "' is listed in shard '", shard, "' but ", file.path().string(), " does not contain it");
    }
  } else {
    const auto single = dir / kSingleFile;
    MEGAMOE_CHECK(std::filesystem::exists(single), source, ": neither ", kSingleFile, " nor ", kIndexFile,
                  " found");
    checkpoint->files_.push_back(SafetensorsFile::open(single));
  }

  std::map<std::string, std::string> source_of;  // canonical -> "file: stored name", for clash messages
  for (const auto& file : checkpoint->files_) {
    for (const auto& [stored, view] : file->tensors()) {
      const std::string canonical = canonical_name(stored);
      const std::string where = str_cat(file->path().string(), ": '", stored, "'");
      const auto [it, inserted] = source_of.emplace(canonical, where);
      MEGAMOE_CHECK(inserted, where, " and ", it->second, " both resolve to tensor '", canonical, "'");
      checkpoint->by_name_[canonical] = &view;
    }
  }
  checkpoint->build_stacked_expert_views();
  return checkpoint;
}

Checkpoint::~Checkpoint() = default;

bool Checkpoint::has(const std::string& canonical_name) const { return by_name_.count(canonical_name) == 1; }

const TensorView& Checkpoint::get(const std::string& canonical_name) const {
  const auto it = by_name_.find(canonical_name);
  MEGAMOE_CHECK(it != by_name_.end(), dir_.string(), ": tensor '", canonical_name, "' not found in the checkpoint");
  return *it->second;
}

const TensorView& Checkpoint::get(const std::string& canonical_name, const Shape& expected_shape) const {
  const TensorView& view = get(canonical_name);
  MEGAMOE_CHECK(view.shape == expected_shape, describe(view), ": expected shape ", shape_str(expected_shape),
                ", found ", shape_str(view.shape));
  return view;
}

std::string Checkpoint::describe(const TensorView& view) const {
  return str_cat(view.file != nullptr ? view.file->string() : dir_.string(), ": tensor '", view.name, "'");
}

WeightRef Checkpoint::weight(const std::string& prefix) const {
  WeightRef ref;
  ref.name = prefix;
  const TensorView& w = get(prefix + ".weight");
  ref.weight = &w;
  auto companion = [&](const char* suffix) -> const TensorView* {
    const auto it = by_name_.find(prefix + suffix);
    return it == by_name_.end() ? nullptr : it->second;
  };
  auto check = [&](bool ok, const TensorView& view, const std::string& problem) {
    MEGAMOE_CHECK(ok, describe(view), ": ", problem);
  };
  check(w.shape.size() == 2, w, str_cat("a linear weight must be 2-D, found shape ", shape_str(w.shape)));
  const int64_t rows = w.shape[0];
  const int64_t cols = w.shape[1];

  if (is_dense_float(w.dtype)) {
    ref.format = WeightFormat::kDense;
    ref.out = rows;
    ref.in = cols;
    return ref;
  }
  if (w.dtype == DType::F8_E4M3) {
    ref.format = WeightFormat::kFp8Block;
    ref.out = rows;
    ref.in = cols;
    const TensorView* scale = companion(".weight_scale_inv");
    MEGAMOE_CHECK(scale != nullptr, describe(w), ": FP8 weight without its block scale '", prefix,
                  ".weight_scale_inv' (upstream '.scale')");
    const int64_t block = config_.quantization.weight_block_size > 0 ? config_.quantization.weight_block_size : 128;
    check(scale->dtype == DType::F32 || scale->dtype == DType::F8_E8M0, *scale,
          str_cat("FP8 block scale must be F32 or F8_E8M0, found ", dtype_name(scale->dtype)));
    const Shape expected{ceil_div(rows, block), ceil_div(cols, block)};
    check(scale->shape == expected, *scale,
          str_cat("FP8 block scale of a ", shape_str(w.shape), " weight must have shape ", shape_str(expected),
                  " (one per ", block, "x", block, " tile), found ", shape_str(scale->shape)));
    ref.scale = scale;
    return ref;
  }
  check(w.dtype == DType::U8 || w.dtype == DType::I8, w,
        str_cat("dtype ", dtype_name(w.dtype), " is not a linear weight format (dense, FP8 or packed FP4)"));
  ref.out = rows;
  ref.in = cols * 2;  // two E2M1 codes per byte
  if (const TensorView* scale = companion(".weight_scale")) {
    ref.format = WeightFormat::kNvfp4;
    check(w.dtype == DType::U8, w, str_cat("NVFP4 packed weight must be U8, found ", dtype_name(w.dtype)));
    check(ref.in % 16 == 0, w, str_cat("NVFP4 input size ", ref.in, " is not a multiple of 16"));
    const Shape expected{ref.out, ref.in / 16};
    check(scale->dtype == DType::F8_E4M3, *scale,
          str_cat("NVFP4 block scale must be F8_E4M3, found ", dtype_name(scale->dtype)));
    check(scale->shape == expected, *scale,
          str_cat("NVFP4 block scale of a ", shape_str(w.shape), " packed weight must have shape ",
                  shape_str(expected), ", found ", shape_str(scale->shape)));
    const TensorView* global = companion(".weight_scale_2");
    MEGAMOE_CHECK(global != nullptr, describe(w), ": NVFP4 weight without its global scale '", prefix,
                  ".weight_scale_2'");
    check(global->dtype == DType::F32 && global->shape.empty(), *global,
          str_cat("NVFP4 global scale must be a F32 scalar [], found ", dtype_name(global->dtype), " ",
                  shape_str(global->shape)));
    const TensorView* input = companion(".input_scale");
    if (input != nullptr) {
      check(input->dtype == DType::F32 && input->shape.empty(), *input,
            str_cat("NVFP4 input scale must be a F32 scalar [], found ", dtype_name(input->dtype), " ",
                    shape_str(input->shape)));
    }
    ref.scale = scale;
    ref.global_scale = global;
    ref.input_scale = input;
    return ref;
  }
  const TensorView* scale = companion(".weight_scale_inv");
  MEGAMOE_CHECK(scale != nullptr, describe(w), ": packed FP4 weight without a block scale (expected '", prefix,
                ".weight_scale' for NVFP4 or '", prefix, ".weight_scale_inv' / upstream '.scale' for MXFP4)");
  ref.format = WeightFormat::kMxfp4;
  check(ref.in % 32 == 0, w, str_cat("MXFP4 input size ", ref.in, " is not a multiple of 32"));
  check(scale->dtype == DType::F8_E8M0, *scale,
        str_cat("MXFP4 block scale must be F8_E8M0, found ", dtype_name(scale->dtype)));
  const Shape expected{ref.out, ref.in / 32};
  check(scale->shape == expected, *scale,
        str_cat("MXFP4 block scale of a ", shape_str(w.shape), " packed weight must have shape ", shape_str(expected),
                ", found ", shape_str(scale->shape)));
  ref.scale = scale;
  return ref;
}

WeightRef Checkpoint::weight(const std::string& prefix, int64_t out, int64_t in) const {
  WeightRef ref = weight(prefix);
  MEGAMOE_CHECK(ref.out == out && ref.in == in, describe(*ref.weight), ": expected a [", out, ", ", in, "] ",
                "weight, found logical shape [", ref.out, ", ", ref.in, "] (", weight_format_name(ref.format),
                ", stored ", dtype_name(ref.weight->dtype), " ", shape_str(ref.weight->shape), ")");
  return ref;
}

// The transformers stacked dense form (gate_up_proj [E, 2I, D], down_proj [E, D, I]) is sliced
// into per-expert views once, at open time, so that expert_weight() stays const and thread-safe.
void Checkpoint::build_stacked_expert_views() {
  const int64_t experts = config_.n_routed_experts;
  const int64_t inter = config_.moe_intermediate_size;
  const int64_t hidden = config_.hidden_size;
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    const std::string base = str_cat("model.layers.", layer, ".mlp.experts.");
    struct Part {
      std::string stacked;
      int64_t rows;  // rows of one expert's slice
      int64_t cols;
      std::vector<std::pair<std::string, int64_t>> slices;  // which -> first row within the expert
    };
    const Part parts[] = {
        {"gate_up_proj", 2 * inter, hidden, {{"gate_proj", 0}, {"up_proj", inter}}},
        {"down_proj", hidden, inter, {{"down_proj", 0}}},
    };
    for (const Part& part : parts) {
      const auto it = by_name_.find(base + part.stacked);
      if (it == by_name_.end()) continue;
      const TensorView& stacked = *it->second;
      MEGAMOE_CHECK(is_dense_float(stacked.dtype), describe(stacked), ": stacked experts must be dense (F32/BF16/F16),",
                    " found ", dtype_name(stacked.dtype));
      const Shape expected{experts, part.rows, part.cols};
      MEGAMOE_CHECK(stacked.shape == expected, describe(stacked), ": expected shape ", shape_str(expected),
                    " from config.json, found ", shape_str(stacked.shape));
      const size_t element = dtype_size(stacked.dtype);
      for (int64_t e = 0; e < experts; ++e) {
        for (const auto& [which, first_row] : part.slices) {
          auto view = std::make_unique<TensorView>();
          view->name = stacked.name;
          view->dtype = stacked.dtype;
          view->shape = {part.slices.size() == 1 ? part.rows : inter, part.cols};
          const size_t offset = static_cast<size_t>((e * part.rows + first_row) * part.cols) * element;
          view->data = stacked.data + offset;
          view->data_offset = stacked.data_offset + offset;
          view->nbytes = static_cast<size_t>(view->numel()) * element;
          view->file = stacked.file;
          stacked_expert_views_[expert_prefix(layer, e, which)] = view.get();
          derived_views_.push_back(std::move(view));
        }
      }
    }
  }
}

WeightRef Checkpoint::expert_weight(int64_t layer, int64_t expert, const std::string& which) const {
  MEGAMOE_CHECK(which == "gate_proj" || which == "up_proj" || which == "down_proj", "expert_weight: unknown part '",
                which, "' (gate_proj, up_proj or down_proj)");
  MEGAMOE_CHECK(layer >= 0 && layer < config_.num_layers && expert >= 0 && expert < config_.n_routed_experts,
                "expert_weight: layer ", layer, " / expert ", expert, " out of range");
  const int64_t out = which == "down_proj" ? config_.hidden_size : config_.moe_intermediate_size;
  const int64_t in = which == "down_proj" ? config_.moe_intermediate_size : config_.hidden_size;
  const std::string prefix = expert_prefix(layer, expert, which);
  if (has(prefix + ".weight")) return weight(prefix, out, in);
  const auto it = stacked_expert_views_.find(prefix);
  MEGAMOE_CHECK(it != stacked_expert_views_.end(), dir_.string(), ": routed expert weight '", prefix,
                ".weight' not found (neither per-expert nor stacked model.layers.", layer,
                ".mlp.experts.gate_up_proj / down_proj)");
  WeightRef ref;
  ref.name = prefix;
  ref.format = WeightFormat::kDense;
  ref.out = out;
  ref.in = in;
  ref.weight = it->second;
  return ref;
}

}  // namespace megamoe
