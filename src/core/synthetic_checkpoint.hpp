// A random DeepSeek-V4 checkpoint at real widths, in the official storage
// formats: FP8 block-128 (E4M3 + E8M0 scales) attention projections, indexer
// query projection and shared expert; BF16 embedding, lm_head, router and
// compressor projections (the precision floor); fp32 norms, mHC, sinks;
// NVFP4 (ModelOpt layout: E2M1 + E4M3 per 16 + fp32 weight_scale_2 +
// input_scale) or MXFP4 (E2M1 + E8M0 per 32) routed experts. Layer types
// alternate CSA, HCA (then SWA every third layer beyond two); the first
// layer routes by hash, the rest learn. Weights are drawn so activations stay
// O(1) (normal(0, 1/sqrt(fan_in)) before quantization). For benchmarks and the
// real-width GPU tests (`megamoe make-synthetic`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace megamoe {

struct SyntheticSpec {
  std::string preset = "flash";  // "flash" (V4-Flash widths), "pro" (V4-Pro), "small" (D 256, for tests)
  int64_t layers = 2;
  std::string experts = "nvfp4";  // "nvfp4" or "mxfp4"
  uint64_t seed = 1;
};

// Writes DIR/config.json and DIR/model.safetensors; returns the bytes written.
uint64_t write_synthetic_checkpoint(const std::filesystem::path& dir, const SyntheticSpec& spec);

}  // namespace megamoe
