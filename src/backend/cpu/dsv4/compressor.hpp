// The KV compressor of CSA/HCA layers and of the lightning indexer
// (dsv4-architecture.md §5.3, decode form §9.2): tokens are buffered per
// window of m absolute positions; when a window closes its m (or, with
// overlap, 2m) slots are pooled per channel with a softmax over the biased
// gate logits, RMS-normalised and rotated at the window's first position.
#pragma once

#include <cstdint>

#include "backend/cpu/dsv4/rope.hpp"
#include "backend/cpu/dsv4/state.hpp"
#include "backend/cpu/dsv4/weights.hpp"

namespace megamoe::dsv4 {

// Adds token `pos` (K = x kv_proj^T, Z = x gate_proj^T, both [c d]) to the
// open window; when (pos + 1) % m == 0 emits entry pos / m. Returns whether an
// entry was emitted. Throws if pos is not the next position of this state.
bool compressor_push(CompressorState& state, const CompressorWeights& w, const float* k, const float* z,
                     int64_t pos, const RopeTable& rope, float rms_eps);

}  // namespace megamoe::dsv4
