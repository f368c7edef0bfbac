// Test helper: builds checkpoints of the dsv4-architecture.md §12 tiny model in
// a temp dir, in the transformers form (names and shapes from transformers'
// own state_dict, tests/data/configs/tiny-transformers-state-dict.json) or in
// DeepSeek's upstream form (names written from the §3 tables) with FP8-block /
// MXFP4 / NVFP4 storage. Tensor bytes are arbitrary: these checkpoints test
// I/O, naming and format detection, not numerics.
#pragma once

#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.hpp"
#include "core/model_config.hpp"
#include "core/safetensors.hpp"
#include "core/tensor.hpp"

namespace megamoe::testing {

inline const std::filesystem::path kConfigDir = std::filesystem::path(MEGAMOE_TEST_DATA_DIR) / "configs";

struct OwnedTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<unsigned char> bytes;
};

inline OwnedTensor make_tensor(std::string name, DType dtype, Shape shape) {
  OwnedTensor t{std::move(name), dtype, std::move(shape), {}};
  t.bytes.resize(static_cast<size_t>(shape_numel(t.shape)) * dtype_size(dtype));
  uint32_t state = static_cast<uint32_t>(std::hash<std::string>{}(t.name));
  for (auto& b : t.bytes) b = static_cast<unsigned char>((state = state * 1664525u + 1013904223u) >> 24);
  // Random bytes, but finite values (the loader refuses NaN/Inf in non-expert tensors and
  // scales) and expert ids in range (hash-routing tables hold ids < n_routed_experts).
  const size_t size = dtype_size(dtype), n = t.bytes.size() / std::max<size_t>(size, 1);
  for (size_t i = 0; i < n; ++i) {
    unsigned char* e = t.bytes.data() + i * size;
    switch (dtype) {
      case DType::F32: e[3] &= 0xBF; break;      // exponent below all-ones
      case DType::F16: case DType::BF16: e[1] &= 0xBF; break;
      case DType::F8_E4M3: e[0] &= 0xBF; break;  // S.1111.111 is the only NaN
      case DType::F8_E8M0: e[0] &= 0x7F; break;  // 0xFF is NaN
      case DType::I64: case DType::I32: std::memset(e, 0, size); break;
      default: break;
    }
  }
  return t;
}

inline OwnedTensor* find_tensor(std::vector<OwnedTensor>& tensors, const std::string& name) {
  for (auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

inline void erase_tensor(std::vector<OwnedTensor>& tensors, const std::string& name) {
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [&](const OwnedTensor& t) { return t.name == name; }),
                tensors.end());
}

inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// Transformers form: every tensor of transformers' state_dict, F32 (tid2eid I64), stacked experts.
inline std::vector<OwnedTensor> tiny_transformers_tensors() {
  std::vector<OwnedTensor> tensors;
  const nlohmann::json state_dict = read_json_file(kConfigDir / "tiny-transformers-state-dict.json");
  for (const auto& item : state_dict.items()) {
    const bool ids = item.key().find("tid2eid") != std::string::npos;
    tensors.push_back(make_tensor(item.key(), ids ? DType::I64 : DType::F32, item.value().get<Shape>()));
  }
  return tensors;
}

enum class ExpertStorage { kBf16, kMxfp4, kNvfp4 };

// One upstream linear weight [out, in]: FP8-block with `.scale` (E8M0 or F32), or BF16.
inline void add_fp8_linear(std::vector<OwnedTensor>& out_tensors, const std::string& prefix, int64_t out, int64_t in,
                           DType scale_dtype) {
  out_tensors.push_back(make_tensor(prefix + ".weight", DType::F8_E4M3, {out, in}));
  out_tensors.push_back(make_tensor(prefix + ".scale", scale_dtype, {(out + 127) / 128, (in + 127) / 128}));
}

inline void add_expert_linear(std::vector<OwnedTensor>& tensors, const std::string& prefix, int64_t out, int64_t in,
                              ExpertStorage storage) {
  switch (storage) {
    case ExpertStorage::kBf16:
      tensors.push_back(make_tensor(prefix + ".weight", DType::BF16, {out, in}));
      return;
    case ExpertStorage::kMxfp4:  // DeepSeek release: int8-packed E2M1 + E8M0 per 32
      tensors.push_back(make_tensor(prefix + ".weight", DType::I8, {out, in / 2}));
      tensors.push_back(make_tensor(prefix + ".scale", DType::F8_E8M0, {out, in / 32}));
      return;
    case ExpertStorage::kNvfp4:  // ModelOpt: U8 E2M1 + E4M3 per 16 + F32 global (+ input scale)
      tensors.push_back(make_tensor(prefix + ".weight", DType::U8, {out, in / 2}));
      tensors.push_back(make_tensor(prefix + ".weight_scale", DType::F8_E4M3, {out, in / 16}));
      tensors.push_back(make_tensor(prefix + ".weight_scale_2", DType::F32, {}));
      tensors.push_back(make_tensor(prefix + ".input_scale", DType::F32, {}));
      return;
  }
}

// Upstream (DeepSeek release) names for config `c`, per dsv4-architecture.md §3.1-3.2. Large attention and
// shared-expert projections are FP8-block (scale dtype `fp8_scale`), routed experts per `storage`.
inline std::vector<OwnedTensor> tiny_upstream_tensors(const ModelConfig& c, ExpertStorage storage,
                                                      DType fp8_scale = DType::F8_E8M0) {
  const int64_t D = c.hidden_size, V = c.vocab_size, n = c.hc_mult, H = c.num_heads, dh = c.head_dim;
  const int64_t rq = c.q_lora_rank, G = c.o_groups, ro = c.o_lora_rank, E = c.n_routed_experts;
  const int64_t I = c.moe_intermediate_size, HI = c.index_n_heads, dI = c.index_head_dim;
  std::vector<OwnedTensor> t;
  t.push_back(make_tensor("embed.weight", DType::BF16, {V, D}));
  t.push_back(make_tensor("hc_head_fn", DType::F32, {n, n * D}));
  t.push_back(make_tensor("hc_head_base", DType::F32, {n}));
  t.push_back(make_tensor("hc_head_scale", DType::F32, {1}));
  t.push_back(make_tensor("norm.weight", DType::BF16, {D}));
  t.push_back(make_tensor("head.weight", DType::BF16, {V, D}));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* hc : {"hc_attn_", "hc_ffn_"}) {
      t.push_back(make_tensor(p + hc + "fn", DType::F32, {(2 + n) * n, n * D}));
      t.push_back(make_tensor(p + hc + "base", DType::F32, {(2 + n) * n}));
      t.push_back(make_tensor(p + hc + "scale", DType::F32, {3}));
    }
    t.push_back(make_tensor(p + "attn_norm.weight", DType::BF16, {D}));
    t.push_back(make_tensor(p + "ffn_norm.weight", DType::BF16, {D}));
    add_fp8_linear(t, p + "attn.wq_a", rq, D, fp8_scale);
    t.push_back(make_tensor(p + "attn.q_norm.weight", DType::BF16, {rq}));
    add_fp8_linear(t, p + "attn.wq_b", H * dh, rq, fp8_scale);
    add_fp8_linear(t, p + "attn.wkv", dh, D, fp8_scale);
    t.push_back(make_tensor(p + "attn.kv_norm.weight", DType::BF16, {dh}));
    add_fp8_linear(t, p + "attn.wo_a", G * ro, H * dh / G, fp8_scale);
    add_fp8_linear(t, p + "attn.wo_b", D, G * ro, fp8_scale);
    t.push_back(make_tensor(p + "attn.attn_sink", DType::F32, {H}));
    const AttentionType type = c.layer_types[l];
    if (type != AttentionType::kSliding) {
      const int64_t overlap = type == AttentionType::kCompressedSparse ? 2 : 1;
      const int64_t m = c.compress_rates[l];
      t.push_back(make_tensor(p + "attn.compressor.wkv.weight", DType::BF16, {overlap * dh, D}));
      t.push_back(make_tensor(p + "attn.compressor.wgate.weight", DType::BF16, {overlap * dh, D}));
      t.push_back(make_tensor(p + "attn.compressor.ape", DType::F32, {m, overlap * dh}));
      t.push_back(make_tensor(p + "attn.compressor.norm.weight", DType::BF16, {dh}));
    }
    if (type == AttentionType::kCompressedSparse) {
      add_fp8_linear(t, p + "attn.indexer.wq_b", HI * dI, rq, fp8_scale);
      t.push_back(make_tensor(p + "attn.indexer.weights_proj.weight", DType::BF16, {HI, D}));
      t.push_back(make_tensor(p + "attn.indexer.compressor.wkv.weight", DType::BF16, {2 * dI, D}));
      t.push_back(make_tensor(p + "attn.indexer.compressor.wgate.weight", DType::BF16, {2 * dI, D}));
      t.push_back(make_tensor(p + "attn.indexer.compressor.ape", DType::F32, {c.compress_rates[l], 2 * dI}));
      t.push_back(make_tensor(p + "attn.indexer.compressor.norm.weight", DType::BF16, {dI}));
    }
    t.push_back(make_tensor(p + "ffn.gate.weight", DType::BF16, {E, D}));
    if (c.mlp_types[l] == MlpType::kHashMoe) {
      t.push_back(make_tensor(p + "ffn.gate.tid2eid", DType::I64, {V, c.num_experts_per_tok}));
    } else {
      t.push_back(make_tensor(p + "ffn.gate.bias", DType::F32, {E}));
    }
    for (int64_t e = 0; e < E; ++e) {
      const std::string ep = p + "ffn.experts." + std::to_string(e) + ".";
      add_expert_linear(t, ep + "w1", I, D, storage);
      add_expert_linear(t, ep + "w3", I, D, storage);
      add_expert_linear(t, ep + "w2", D, I, storage);
    }
    add_fp8_linear(t, p + "ffn.shared_experts.w1", I, D, fp8_scale);
    add_fp8_linear(t, p + "ffn.shared_experts.w3", I, D, fp8_scale);
    add_fp8_linear(t, p + "ffn.shared_experts.w2", D, I, fp8_scale);
  }
  return t;
}

// Writes config.json (a copy of `config_source`) and the tensors as one file or `shards` shards
// with model.safetensors.index.json.
inline void write_checkpoint(const std::filesystem::path& dir, const std::filesystem::path& config_source,
                             const std::vector<OwnedTensor>& tensors, int shards = 1) {
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(config_source, dir / "config.json", std::filesystem::copy_options::overwrite_existing);
  auto to_write = [](const std::vector<const OwnedTensor*>& part) {
    std::vector<TensorToWrite> list;
    for (const OwnedTensor* t : part) list.push_back({t->name, t->dtype, t->shape, t->bytes.data(), t->bytes.size()});
    return list;
  };
  if (shards == 1) {
    std::vector<const OwnedTensor*> all;
    for (const auto& t : tensors) all.push_back(&t);
    write_safetensors(dir / "model.safetensors", to_write(all));
    return;
  }
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  std::vector<std::vector<const OwnedTensor*>> parts(shards);
  for (size_t i = 0; i < tensors.size(); ++i) parts[i % shards].push_back(&tensors[i]);
  for (int s = 0; s < shards; ++s) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, shards);
    write_safetensors(dir / file, to_write(parts[s]));
    for (const OwnedTensor* t : parts[s]) index["weight_map"][t->name] = file;
  }
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
}

}  // namespace megamoe::testing
