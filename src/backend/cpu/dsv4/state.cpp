#include "backend/cpu/dsv4/state.hpp"

#include <cmath>

namespace megamoe::dsv4 {

CompressorState make_compressor_state(int64_t rate, int64_t width, bool overlap) {
  CompressorState s;
  s.rate = rate;
  s.width = width;
  s.overlap = overlap;
  if (overlap) {
    s.overlap_kv.assign(static_cast<size_t>(rate * width), 0.f);
    s.overlap_gate.assign(static_cast<size_t>(rate * width), -INFINITY);
  }
  return s;
}

std::vector<LayerState> make_layer_states(const ModelConfig& config) {
  std::vector<LayerState> layers(static_cast<size_t>(config.num_layers));
  for (int64_t l = 0; l < config.num_layers; ++l) {
    LayerState& layer = layers[l];
    const AttentionType type = config.layer_types.at(l);
    if (type == AttentionType::kSliding) continue;
    const bool csa = type == AttentionType::kCompressedSparse;
    layer.compressor = make_compressor_state(config.compress_rates.at(l), config.head_dim, csa);
    if (csa) layer.indexer = make_compressor_state(config.compress_rates.at(l), config.index_head_dim, true);
  }
  return layers;
}

}  // namespace megamoe::dsv4
