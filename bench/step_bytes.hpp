// Bytes a DeepSeek-V4 step must read, from a checkpoint's stored tensors (so
// in the checkpoint's own formats: FP8 block-128, NVFP4 / MXFP4, BF16, fp32),
// grouped as the decode breakdown is (docs/decode.md):
//   per layer: attention projections, compressors + indexer, router, shared
//   expert, mHC and norms, and the routed experts the step's tokens touch
//   (distinct experts expected under uniform routing: E (1 - (1 - k/E)^T));
//   once: lm_head and the final norm, plus T embedding rows;
//   state: what attention and the indexer read per sequence at context C,
//   as this engine stores it (fp32 window KV and compressed entries).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"

namespace megamoe::bench {

struct LayerBytes {
  double attention = 0, compressor = 0, router = 0, shared = 0, mhc = 0;
  double routed = 0;  // all routed experts of the layer
  int64_t experts = 0;
};

struct ModelBytes {
  std::vector<LayerBytes> layers;
  double head = 0;       // lm_head + final norm + hc_head
  double embed_row = 0;  // one row of the embedding
};

ModelBytes weight_bytes(const Checkpoint& checkpoint);

struct StepBytes {
  double weights = 0;  // layers + head + embedding rows
  double state = 0;    // KV / compressed entries read
  double total() const { return weights + state; }
};

// A step of `tokens` rows over `batch` sequences at context `context`.
StepBytes step_bytes(const ModelBytes& model, const ModelConfig& config, int64_t tokens, int64_t batch,
                     int64_t context);

// "1.23 GB" (1e9).
std::string gb(double bytes);

}  // namespace megamoe::bench
