#include "core/checkpoint_validation.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace megamoe {
namespace {

// Where a value is non-finite, by the bit pattern of its dtype. Blocks of 4096
// values are tested without an early exit (the compiler vectorizes that), and
// only a block that holds one is searched element by element.
template <typename Bits>
int64_t scan(const std::byte* data, int64_t begin, int64_t end, Bits mask, Bits pattern) {
  constexpr int64_t kBlock = 4096;
  Bits block[kBlock];
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t n = std::min(kBlock, end - b);
    std::memcpy(block, data + b * static_cast<int64_t>(sizeof(Bits)), static_cast<size_t>(n) * sizeof(Bits));
    unsigned hit = 0;
    for (int64_t i = 0; i < n; ++i) hit |= static_cast<unsigned>((block[i] & mask) == pattern);
    if (hit == 0) continue;
    for (int64_t i = 0; i < n; ++i) {
      if ((block[i] & mask) == pattern) return b + i;
    }
  }
  return -1;
}

int64_t first_non_finite_in(const TensorView& view, int64_t begin, int64_t end) {
  switch (view.dtype) {
    case DType::F32: return scan<uint32_t>(view.data, begin, end, 0x7F800000u, 0x7F800000u);
    case DType::F16: return scan<uint16_t>(view.data, begin, end, 0x7C00, 0x7C00);
    case DType::BF16: return scan<uint16_t>(view.data, begin, end, 0x7F80, 0x7F80);
    case DType::F8_E4M3: return scan<uint8_t>(view.data, begin, end, 0x7F, 0x7F);  // E4M3FN: only NaN
    case DType::F8_E8M0: return scan<uint8_t>(view.data, begin, end, 0xFF, 0xFF);  // 0xFF is NaN
    default: return -1;
  }
}

class Validator {
 public:
  Validator(const Checkpoint& checkpoint, const ValidationOptions& options)
      : ckpt_(checkpoint), cfg_(checkpoint.config()), options_(options) {}

  CheckpointReport run() {
    const int64_t d = cfg_.hidden_size, v = cfg_.vocab_size, nc = cfg_.hc_mult, mix = (2 + nc) * nc;
    linear("model.embed_tokens", v, d);
    dense("model.hc_head.hc_fn", {nc, nc * d});
    dense("model.hc_head.hc_base", {nc});
    dense("model.hc_head.hc_scale", {1});
    dense("model.norm.weight", {d});
    linear("lm_head", v, d);
    for (int64_t l = 0; l < cfg_.num_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      for (const char* site : {"attn_hc.", "ffn_hc."}) {
        dense(p + site + "fn", {mix, nc * d});
        dense(p + site + "base", {mix});
        dense(p + site + "scale", {3});
      }
      dense(p + "input_layernorm.weight", {d});
      dense(p + "post_attention_layernorm.weight", {d});
      attention(p + "self_attn.", cfg_.layer_types.at(l), cfg_.compress_rates.at(l));
      moe(p + "mlp.", l, cfg_.mlp_types.at(l));
    }
    if (options_.check_finite) scan_finite();
    return std::move(report_);
  }

 private:
  template <typename Fn>
  void attempt(Fn&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      report_.problems.push_back(e.what());
    }
  }

  void dense(const std::string& name, const Shape& shape) {
    attempt([&] { to_scan_.push_back(&ckpt_.get(name, shape)); });
  }

  void linear(const std::string& prefix, int64_t out, int64_t in, bool expert = false) {
    attempt([&] { add_weight(ckpt_.weight(prefix, out, in), expert); });
  }

  void add_weight(const WeightRef& ref, bool expert) {
    if (!expert) to_scan_.push_back(ref.weight);
    for (const TensorView* part : {ref.scale, ref.global_scale, ref.input_scale}) {
      if (part != nullptr) to_scan_.push_back(part);
    }
  }

  void compressor(const std::string& prefix, int64_t rate, int64_t width, bool overlap) {
    const int64_t c = overlap ? 2 : 1, d = cfg_.hidden_size;
    linear(prefix + "kv_proj", c * width, d);
    linear(prefix + "gate_proj", c * width, d);
    dense(prefix + "position_bias", {rate, c * width});
    dense(prefix + "kv_norm.weight", {width});
  }

  void attention(const std::string& p, AttentionType type, int64_t rate) {
    const int64_t d = cfg_.hidden_size, h = cfg_.num_heads, dh = cfg_.head_dim, rq = cfg_.q_lora_rank;
    const int64_t g = cfg_.o_groups, ro = cfg_.o_lora_rank;
    dense(p + "sinks", {h});
    linear(p + "q_a_proj", rq, d);
    dense(p + "q_a_norm.weight", {rq});
    linear(p + "q_b_proj", h * dh, rq);
    linear(p + "kv_proj", dh, d);
    dense(p + "kv_norm.weight", {dh});
    linear(p + "o_a_proj", g * ro, h * dh / g);
    linear(p + "o_b_proj", d, g * ro);
    if (type == AttentionType::kSliding) return;
    const bool csa = type == AttentionType::kCompressedSparse;
    compressor(p + "compressor.", rate, dh, csa);
    if (!csa) return;
    const std::string ip = p + "compressor.indexer.";
    linear(ip + "q_b_proj", cfg_.index_n_heads * cfg_.index_head_dim, rq);
    linear(ip + "scorer.weights_proj", cfg_.index_n_heads, d);
    compressor(ip, rate, cfg_.index_head_dim, /*overlap=*/true);
  }

  void hash_table(const std::string& name) {
    attempt([&] {
      const TensorView& view = ckpt_.get(name, {cfg_.vocab_size, cfg_.num_experts_per_tok});
      MEGAMOE_CHECK(view.dtype == DType::I64 || view.dtype == DType::I32, ckpt_.describe(view), ": dtype ",
                    dtype_name(view.dtype), ", expected I64 or I32 expert ids");
      const int64_t n = view.numel();
      for (int64_t i = 0; i < n; ++i) {
        int64_t value;
        if (view.dtype == DType::I64) {
          std::memcpy(&value, view.data + 8 * i, 8);
        } else {
          int32_t v32;
          std::memcpy(&v32, view.data + 4 * i, 4);
          value = v32;
        }
        MEGAMOE_CHECK(value >= 0 && value < cfg_.n_routed_experts, ckpt_.describe(view), ": holds ", value,
                      " at index ", i, ", expected expert ids in [0, ", cfg_.n_routed_experts, ")");
      }
    });
  }

  void moe(const std::string& p, int64_t layer, MlpType type) {
    const int64_t d = cfg_.hidden_size, e = cfg_.n_routed_experts, inter = cfg_.moe_intermediate_size;
    linear(p + "gate", e, d);
    if (type == MlpType::kHashMoe) {
      hash_table(p + "gate.tid2eid");
    } else {
      dense(p + "gate.e_score_correction_bias", {e});
    }
    for (int64_t ex = 0; ex < e; ++ex) {
      for (const char* which : {"gate_proj", "up_proj", "down_proj"}) {
        attempt([&] { add_weight(ckpt_.expert_weight(layer, ex, which), /*expert=*/true); });
      }
    }
    const int64_t shared = cfg_.n_shared_experts * inter;
    if (shared > 0) {
      linear(p + "shared_experts.gate_proj", shared, d);
      linear(p + "shared_experts.up_proj", shared, d);
      linear(p + "shared_experts.down_proj", d, shared);
    }
  }

  // Every listed tensor once, in blocks of 4M elements over the thread pool;
  // one problem per tensor, in the order the tensors were listed.
  void scan_finite() {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<const TensorView*> tensors;
    std::set<const TensorView*> seen;
    for (const TensorView* t : to_scan_) {
      if (seen.insert(t).second) tensors.push_back(t);
    }
    struct Block {
      size_t tensor;
      int64_t begin, end;
    };
    constexpr int64_t kBlock = int64_t{1} << 22;
    std::vector<Block> blocks;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const int64_t n = tensors[i]->numel();
      for (int64_t b = 0; b < n; b += kBlock) blocks.push_back({i, b, std::min(n, b + kBlock)});
      report_.finite_bytes += tensors[i]->nbytes;
    }
    report_.finite_tensors = static_cast<int64_t>(tensors.size());
    std::vector<int64_t> first(tensors.size(), -1);
    std::mutex mutex;
    ThreadPool::global().parallel_for(blocks.size(), [&](size_t begin, size_t end) {
      for (size_t b = begin; b < end; ++b) {
        const Block& block = blocks[b];
        const int64_t at = first_non_finite_in(*tensors[block.tensor], block.begin, block.end);
        if (at < 0) continue;
        std::lock_guard<std::mutex> lock(mutex);
        int64_t& slot = first[block.tensor];
        if (slot < 0 || at < slot) slot = at;
      }
    });
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (first[i] < 0) continue;
      report_.problems.push_back(str_cat(ckpt_.describe(*tensors[i]), ": non-finite value (NaN or Inf) at element ",
                                         first[i], " of ", tensors[i]->numel()));
    }
    report_.finite_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  const Checkpoint& ckpt_;
  const ModelConfig& cfg_;
  ValidationOptions options_;
  std::vector<const TensorView*> to_scan_;
  CheckpointReport report_;
};

}  // namespace

int64_t first_non_finite(const TensorView& view) { return first_non_finite_in(view, 0, view.numel()); }

CheckpointReport validate_checkpoint(const Checkpoint& checkpoint, const ValidationOptions& options) {
  return Validator(checkpoint, options).run();
}

void require_valid_checkpoint(const Checkpoint& checkpoint, const ValidationOptions& options) {
  const CheckpointReport report = validate_checkpoint(checkpoint, options);
  if (report.problems.empty()) return;
  const size_t more = report.problems.size() - 1;
  MEGAMOE_THROW(report.problems.front(),
                more == 0 ? std::string() : str_cat(" (and ", more, " more problem", more == 1 ? "" : "s",
                                                    "; `megamoe inspect` lists them all)"));
}

}  // namespace megamoe
