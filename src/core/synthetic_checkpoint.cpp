#include "core/synthetic_checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <list>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "core/float_formats.hpp"
#include "core/safetensors.hpp"

namespace megamoe {
namespace {

struct Widths {
  int64_t d, heads, head_dim, q_rank, groups, o_rank, experts, top_k, inter, vocab, window, index_heads, index_dim,
      index_topk, rope_dim;
  double routed_scaling;
};

Widths widths_of(const std::string& preset) {
  if (preset == "flash") return {4096, 64, 512, 1024, 8, 1024, 256, 6, 2048, 129280, 128, 64, 128, 512, 64, 1.5};
  if (preset == "pro") return {7168, 128, 512, 1536, 16, 1024, 384, 6, 3072, 129280, 128, 64, 128, 1024, 64, 2.5};
  if (preset == "small") return {256, 4, 128, 128, 2, 64, 16, 4, 128, 512, 16, 4, 64, 8, 64, 1.5};
  MEGAMOE_THROW("make-synthetic: unknown preset '", preset, "' (flash, pro or small)");
}

uint64_t splitmix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Deterministic parallel fill: element i depends on (seed, i) only.
template <typename F>
void parallel_for(size_t n, F&& f) {
  const size_t workers = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      for (size_t i = w * n / workers; i < (w + 1) * n / workers; ++i) f(i);
    });
  for (auto& t : pool) t.join();
}

float normal(uint64_t seed, size_t i) {  // Box-Muller on two 24-bit uniforms
  const uint64_t r = splitmix(seed * 0x100000001b3ull + i);
  const float u1 = (static_cast<float>(r >> 40) + 0.5f) * 0x1.0p-24f, u2 = static_cast<float>((r >> 16) & 0xffffff) * 0x1.0p-24f;
  return std::sqrt(-2.f * std::log(u1)) * std::cos(6.2831853f * u2);
}

class Writer {
 public:
  explicit Writer(uint64_t seed) : seed_(seed) {}

  void f32(const std::string& name, Shape shape, float mean, float stddev) {
    const size_t n = static_cast<size_t>(shape_numel(shape));
    std::vector<uint8_t>& b = blob(n * 4);
    const uint64_t s = next_seed();
    parallel_for(n, [&](size_t i) {
      const float v = mean + stddev * normal(s, i);
      std::memcpy(&b[i * 4], &v, 4);
    });
    add(name, DType::F32, std::move(shape));
  }

  void bf16(const std::string& name, Shape shape, float stddev) {
    const size_t n = static_cast<size_t>(shape_numel(shape));
    std::vector<uint8_t>& b = blob(n * 2);
    const uint64_t s = next_seed();
    parallel_for(n, [&](size_t i) {
      const uint16_t v = f32_to_bf16(stddev * normal(s, i));
      std::memcpy(&b[i * 2], &v, 2);
    });
    add(name, DType::BF16, std::move(shape));
  }

  void i64_table(const std::string& name, int64_t rows, int64_t k, int64_t limit) {
    std::vector<uint8_t>& b = blob(static_cast<size_t>(rows * k * 8));
    const uint64_t s = next_seed();
    parallel_for(static_cast<size_t>(rows), [&](size_t r) {
      for (int64_t j = 0; j < k; ++j) {  // k distinct experts per token
        const int64_t v = static_cast<int64_t>((splitmix(s + r) + static_cast<uint64_t>(j) * (limit / k)) % limit);
        std::memcpy(&b[(r * k + j) * 8], &v, 8);
      }
    });
    add(name, DType::I64, {rows, k});
  }

  // FP8 block-128: normal(0, stddev) quantized per 128x128 tile with an E8M0 (power-of-two) scale.
  void fp8(const std::string& prefix, int64_t rows, int64_t cols, float stddev) {
    const int64_t rb = (rows + 127) / 128, cb = (cols + 127) / 128;
    std::vector<uint8_t>& codes = blob(static_cast<size_t>(rows * cols));
    std::vector<uint8_t>& scales = blob(static_cast<size_t>(rb * cb));
    const uint64_t s = next_seed();
    parallel_for(static_cast<size_t>(rb * cb), [&](size_t tile) {
      const int64_t r0 = static_cast<int64_t>(tile) / cb * 128, c0 = static_cast<int64_t>(tile) % cb * 128;
      const int64_t r1 = std::min(rows, r0 + 128), c1 = std::min(cols, c0 + 128);
      float amax = 0.f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(stddev * normal(s, r * cols + c)));
      const int e = amax > 0.f ? static_cast<int>(std::ceil(std::log2(amax / 448.f))) : 0;
      scales[tile] = static_cast<uint8_t>(std::clamp(e + 127, 1, 254));
      const float inv = std::ldexp(1.f, -(scales[tile] - 127));
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) codes[r * cols + c] = f32_to_e4m3(stddev * normal(s, r * cols + c) * inv);
    });
    add(prefix + ".weight", DType::F8_E4M3, {rows, cols}, codes);
    add(prefix + ".scale", DType::F8_E8M0, {rb, cb}, scales);
  }

  // FP4 expert matrix [rows, cols]: random E2M1 codes, block scales near 1, and
  // a global scale giving weights ~ 1/sqrt(cols).
  void fp4(const std::string& prefix, int64_t rows, int64_t cols, bool nvfp4) {
    const int64_t group = nvfp4 ? 16 : 32;
    std::vector<uint8_t>& codes = blob(static_cast<size_t>(rows * cols / 2));
    std::vector<uint8_t>& scales = blob(static_cast<size_t>(rows * cols / group));
    const uint64_t s = next_seed();
    parallel_for(codes.size(), [&](size_t i) { codes[i] = static_cast<uint8_t>(splitmix(s + i)); });
    // E2M1 values have rms ~2.9; target weight rms 1/sqrt(cols).
    const float target = 1.f / (2.9f * std::sqrt(static_cast<float>(cols)));
    if (nvfp4) {
      // E4M3 block scales in [0.5, 1) (bytes 0x30..0x37), global = target.
      parallel_for(scales.size(), [&](size_t i) { scales[i] = static_cast<uint8_t>(0x30 + splitmix(s ^ (i + 1)) % 8); });
      add(prefix + ".weight", DType::U8, {rows, cols / 2}, codes);
      add(prefix + ".weight_scale", DType::F8_E4M3, {rows, cols / group}, scales);
      scalar(prefix + ".weight_scale_2", target);
      scalar(prefix + ".input_scale", 4.f / 2688.f);
    } else {
      const int e = static_cast<int>(std::round(std::log2(target)));
      parallel_for(scales.size(), [&](size_t i) { scales[i] = static_cast<uint8_t>(127 + e - static_cast<int>(splitmix(s ^ (i + 1)) % 2)); });
      add(prefix + ".weight", DType::I8, {rows, cols / 2}, codes);
      add(prefix + ".scale", DType::F8_E8M0, {rows, cols / group}, scales);
    }
  }

  void scalar(const std::string& name, float v) {
    std::vector<uint8_t>& b = blob(4);
    std::memcpy(b.data(), &v, 4);
    add(name, DType::F32, {});
  }

  uint64_t write(const std::filesystem::path& path) const {
    std::vector<TensorToWrite> list;
    uint64_t bytes = 0;
    auto blob_it = blobs_.begin();
    for (const Entry& e : entries_) {
      list.push_back({e.name, e.dtype, e.shape, e.data->data(), e.data->size()});
      bytes += e.data->size();
    }
    (void)blob_it;
    write_safetensors(path, list);
    return bytes;
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    const std::vector<uint8_t>* data;
  };
  std::vector<uint8_t>& blob(size_t n) {
    blobs_.emplace_back(n);
    last_ = &blobs_.back();
    return blobs_.back();
  }
  void add(const std::string& name, DType dtype, Shape shape) { add(name, dtype, std::move(shape), *last_); }
  void add(const std::string& name, DType dtype, Shape shape, const std::vector<uint8_t>& data) {
    entries_.push_back({name, dtype, std::move(shape), &data});
  }
  uint64_t next_seed() { return splitmix(seed_ + ++counter_); }

  uint64_t seed_, counter_ = 0;
  std::list<std::vector<uint8_t>> blobs_;  // stable addresses
  std::vector<uint8_t>* last_ = nullptr;
  std::vector<Entry> entries_;
};

}  // namespace

uint64_t write_synthetic_checkpoint(const std::filesystem::path& dir, const SyntheticSpec& spec) {
  const Widths w = widths_of(spec.preset);
  MEGAMOE_CHECK(spec.layers >= 1 && spec.layers <= 128, "make-synthetic: --layers must be in [1, 128]");
  MEGAMOE_CHECK(spec.experts == "nvfp4" || spec.experts == "mxfp4", "make-synthetic: --experts must be nvfp4 or mxfp4");
  const bool nvfp4 = spec.experts == "nvfp4";
  const int64_t d = w.d, nc = 4, mix = (2 + nc) * nc;
  std::vector<int64_t> ratios;
  for (int64_t l = 0; l < spec.layers; ++l) ratios.push_back(l >= 2 && l % 3 == 2 ? 0 : (l % 2 == 0 ? 4 : 128));
  Writer out(spec.seed);
  const float sd = 1.f / std::sqrt(static_cast<float>(d));
  out.bf16("embed.weight", {w.vocab, d}, 1.f);
  out.bf16("head.weight", {w.vocab, d}, sd);
  out.f32("norm.weight", {d}, 1.f, 0.05f);
  out.f32("hc_head_fn", {nc, nc * d}, 0.f, 1.f / std::sqrt(static_cast<float>(nc * d)));
  out.f32("hc_head_base", {nc}, 0.f, 0.5f);
  out.f32("hc_head_scale", {1}, 1.f, 0.1f);
  for (int64_t l = 0; l < spec.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* site : {"attn", "ffn"}) {
      out.f32(p + "hc_" + site + "_fn", {mix, nc * d}, 0.f, 1.f / std::sqrt(static_cast<float>(nc * d)));
      out.f32(p + "hc_" + site + "_base", {mix}, 0.f, 0.5f);
      out.f32(p + "hc_" + site + "_scale", {3}, 1.f, 0.1f);
    }
    out.f32(p + "attn_norm.weight", {d}, 1.f, 0.05f);
    out.f32(p + "ffn_norm.weight", {d}, 1.f, 0.05f);
    const std::string a = p + "attn.";
    out.f32(a + "attn_sink", {w.heads}, 0.f, 1.f);
    out.fp8(a + "wq_a", w.q_rank, d, sd);
    out.f32(a + "q_norm.weight", {w.q_rank}, 1.f, 0.05f);
    out.fp8(a + "wq_b", w.heads * w.head_dim, w.q_rank, 1.f / std::sqrt(static_cast<float>(w.q_rank)));
    out.fp8(a + "wkv", w.head_dim, d, sd);
    out.f32(a + "kv_norm.weight", {w.head_dim}, 1.f, 0.05f);
    const int64_t group_in = w.heads * w.head_dim / w.groups;
    out.fp8(a + "wo_a", w.groups * w.o_rank, group_in, 1.f / std::sqrt(static_cast<float>(group_in)));
    out.fp8(a + "wo_b", d, w.groups * w.o_rank, 1.f / std::sqrt(static_cast<float>(w.groups * w.o_rank)));
    const int64_t m = ratios[l];
    if (m > 0) {
      const int64_t c = m == 4 ? 2 : 1;
      out.bf16(a + "compressor.wkv.weight", {c * w.head_dim, d}, sd);
      out.bf16(a + "compressor.wgate.weight", {c * w.head_dim, d}, sd);
      out.f32(a + "compressor.ape", {m, c * w.head_dim}, 0.f, 0.5f);
      out.f32(a + "compressor.norm.weight", {w.head_dim}, 1.f, 0.05f);
      if (m == 4) {
        out.bf16(a + "indexer.compressor.wkv.weight", {2 * w.index_dim, d}, sd);
        out.bf16(a + "indexer.compressor.wgate.weight", {2 * w.index_dim, d}, sd);
        out.f32(a + "indexer.compressor.ape", {m, 2 * w.index_dim}, 0.f, 0.5f);
        out.f32(a + "indexer.compressor.norm.weight", {w.index_dim}, 1.f, 0.05f);
        out.fp8(a + "indexer.wq_b", w.index_heads * w.index_dim, w.q_rank, 1.f / std::sqrt(static_cast<float>(w.q_rank)));
        out.bf16(a + "indexer.weights_proj.weight", {w.index_heads, d}, sd);
      }
    }
    const std::string f = p + "ffn.";
    out.bf16(f + "gate.weight", {w.experts, d}, sd);
    if (l == 0) {
      out.i64_table(f + "gate.tid2eid", w.vocab, w.top_k, w.experts);
    } else {
      out.f32(f + "gate.bias", {w.experts}, 0.f, 0.1f);
    }
    for (int64_t e = 0; e < w.experts; ++e) {
      const std::string x = f + "experts." + std::to_string(e) + ".";
      out.fp4(x + "w1", w.inter, d, nvfp4);
      out.fp4(x + "w3", w.inter, d, nvfp4);
      out.fp4(x + "w2", d, w.inter, nvfp4);
    }
    out.fp8(f + "shared_experts.w1", w.inter, d, sd);
    out.fp8(f + "shared_experts.w3", w.inter, d, sd);
    out.fp8(f + "shared_experts.w2", d, w.inter, 1.f / std::sqrt(static_cast<float>(w.inter)));
  }

  std::filesystem::create_directories(dir);
  nlohmann::ordered_json cfg = {
      {"architectures", {"DeepseekV4ForCausalLM"}}, {"model_type", "deepseek_v4"},
      {"vocab_size", w.vocab}, {"hidden_size", d}, {"num_hidden_layers", spec.layers},
      {"num_attention_heads", w.heads}, {"num_key_value_heads", 1}, {"head_dim", w.head_dim},
      {"q_lora_rank", w.q_rank}, {"o_groups", w.groups}, {"o_lora_rank", w.o_rank},
      {"n_routed_experts", w.experts}, {"n_shared_experts", 1}, {"num_experts_per_tok", w.top_k},
      {"moe_intermediate_size", w.inter}, {"routed_scaling_factor", w.routed_scaling},
      {"scoring_func", "sqrtsoftplus"}, {"swiglu_limit", 10.0}, {"sliding_window", w.window},
      {"index_n_heads", w.index_heads}, {"index_head_dim", w.index_dim}, {"index_topk", w.index_topk},
      {"hc_mult", nc}, {"hc_sinkhorn_iters", 20}, {"hc_eps", 1e-6}, {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0}, {"compress_rope_theta", 160000.0},
      {"rope_scaling",
       {{"type", "yarn"}, {"factor", 16.0}, {"original_max_position_embeddings", 65536}, {"beta_fast", 32}, {"beta_slow", 1}}},
      {"max_position_embeddings", 1048576}, {"num_nextn_predict_layers", 0}, {"tie_word_embeddings", false},
      {"compress_ratios", ratios}, {"num_hash_layers", 1}, {"qk_rope_head_dim", w.rope_dim},
      {"topk_method", "noaux_tc"}, {"norm_topk_prob", true}, {"hidden_act", "silu"}, {"bos_token_id", 0},
      {"eos_token_id", 1}, {"torch_dtype", "bfloat16"}};
  std::ofstream(dir / "config.json") << cfg.dump(2) << "\n";
  return out.write(dir / "model.safetensors");
}

}  // namespace megamoe
