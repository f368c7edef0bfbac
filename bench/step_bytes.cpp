#include "bench/step_bytes.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/safetensors.hpp"

namespace megamoe::bench {
namespace {

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// The layer number after "layers.", or -1.
int64_t layer_of(const std::string& name) {
  const size_t at = name.find("layers.");
  if (at == std::string::npos) return -1;
  return std::stoll(name.substr(at + 7));
}

}  // namespace

ModelBytes weight_bytes(const Checkpoint& checkpoint) {
  const ModelConfig& c = checkpoint.config();
  ModelBytes m;
  m.layers.resize(static_cast<size_t>(c.num_layers));
  for (const auto& [name, view] : checkpoint.tensors()) {
    const auto bytes = static_cast<double>(view->nbytes);
    const int64_t l = layer_of(name);
    if (l < 0) {
      if (has(name, "embed")) {
        m.embed_row = bytes / static_cast<double>(std::max<int64_t>(c.vocab_size, 1));
      } else {
        m.head += bytes;  // lm_head, norm, hc_head
      }
      continue;
    }
    if (l >= c.num_layers) continue;  // MTP layers are not run
    LayerBytes& b = m.layers[static_cast<size_t>(l)];
    if (has(name, "compressor") || has(name, "indexer")) {
      b.compressor += bytes;
    } else if (has(name, "shared_expert")) {
      b.shared += bytes;
    } else if (has(name, "experts")) {
      b.routed += bytes;
    } else if (has(name, ".gate.") || has(name, "tid2eid")) {
      b.router += bytes;
    } else if (has(name, "hc")) {
      b.mhc += bytes;
    } else {
      b.attention += bytes;  // projections, their norms, sinks, the layer norms
    }
  }
  for (LayerBytes& b : m.layers) b.experts = c.n_routed_experts;
  return m;
}

StepBytes step_bytes(const ModelBytes& model, const ModelConfig& c, int64_t tokens, int64_t batch, int64_t context) {
  StepBytes s;
  const double e = static_cast<double>(c.n_routed_experts), k = static_cast<double>(c.num_experts_per_tok);
  const double distinct = e > 0 ? e * (1.0 - std::pow(1.0 - k / e, static_cast<double>(tokens))) : 0.0;
  const double f = 4.0;  // fp32 state storage
  for (size_t l = 0; l < model.layers.size(); ++l) {
    const LayerBytes& b = model.layers[l];
    s.weights += b.attention + b.compressor + b.router + b.shared + b.mhc;
    if (b.experts > 0) s.weights += b.routed / static_cast<double>(b.experts) * distinct;
    // Per sequence: the window, then the compressed entries attention and the indexer read.
    double per_seq = static_cast<double>(std::min(context, c.sliding_window) * c.head_dim) * f;
    const AttentionType type = c.layer_types.at(l);
    if (type != AttentionType::kSliding) {
      const int64_t entries = context / std::max<int64_t>(c.compress_rates.at(l), 1);
      if (type == AttentionType::kCompressedSparse) {
        per_seq += static_cast<double>(entries * c.index_head_dim) * f;                            // indexer keys
        per_seq += static_cast<double>(std::min(entries, c.index_topk) * c.head_dim) * f;          // selected
      } else {
        per_seq += static_cast<double>(entries * c.head_dim) * f;
      }
    }
    s.state += per_seq * static_cast<double>(batch);
  }
  s.weights += model.head + model.embed_row * static_cast<double>(tokens);
  return s;
}

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f GB", bytes / 1e9);
  return buf;
}

}  // namespace megamoe::bench
