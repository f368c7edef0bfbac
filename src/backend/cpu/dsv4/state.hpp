// Per-sequence decoding state, exactly the cache of dsv4-architecture.md §9.1.
// Nothing else is cached: queries, indexer queries, mHC weights and MoE are
// per token. A state is advanced by the CPU backend's ops over any number of tokens
// (full prefill, a prefill chunk continuing from the cache, or one decode
// token) with identical results.
#pragma once

#include <cstdint>
#include <vector>

#include "core/model_config.hpp"

namespace megamoe::dsv4 {

// One compressor (HCA main, CSA main or CSA indexer), width d, rate m, c = 2 if overlap.
struct CompressorState {
  int64_t rate = 0, width = 0;
  bool overlap = false;
  // Open window: raw keys K_t and gate logits Z_t + B[t mod m] (the bias is
  // added when storing, like the reference), one row of c*d per buffered token.
  std::vector<float> buffer_kv, buffer_gate;
  int64_t buffered = 0;  // tokens in the open window (< m between calls)
  // Overlap only: the previous closed window's Ca key halves and biased Ca gate
  // halves [m, d]; before any window closed, keys 0 and gates -inf (weight 0).
  std::vector<float> overlap_kv, overlap_gate;
  // Emitted entries C_w (normed + rotated at w*m), append-only [n, d].
  std::vector<float> entries;
  int64_t entry_count() const { return width == 0 ? 0 : static_cast<int64_t>(entries.size()) / width; }
};

struct LayerState {
  // Last min(W - 1, seen) rotated, normalised kv vectors [rows, d_h], oldest first.
  std::vector<float> window;
  CompressorState compressor;  // CSA / HCA
  CompressorState indexer;     // CSA only
};


// The fresh per-layer state of one sequence.
std::vector<LayerState> make_layer_states(const ModelConfig& config);
CompressorState make_compressor_state(int64_t rate, int64_t width, bool overlap);

}  // namespace megamoe::dsv4
