// `megamoe quantize`: a BF16/FP32 DeepSeek-V4 checkpoint rewritten with its
// routed experts (and, where asked, its dense projections) in an official
// low-precision layout:
//   nvfp4  NVIDIA ModelOpt's NVFP4 (U8 weight, E4M3 weight_scale per 16, F32
//          weight_scale_2 with w1/w3 sharing one, F32 input_scale from
//          calibration), per-expert tensors as ModelOpt's HF export writes them,
//          plus its quantization_config and hf_quant_config.json;
//   mxfp4  DeepSeek's MXFP4 (I8 packed E2M1, E8M0 scale per 32), ModelOpt's
//          MXFP4 quantizer;
//   fp8    DeepSeek's FP8 block-128 (E4M3, E8M0 scale per 128x128 tile).
// dense_fp8 also stores the attention projections and the shared expert as FP8
// block-128, as DeepSeek's releases do; the precision floor (embedding,
// lm_head, router, compressor and indexer key/gate/weights projections) always
// stays as it is. Every other tensor and file is copied unchanged; each input
// shard becomes an output shard of the same name (the index is rewritten).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.hpp"

namespace megamoe {

enum class QuantizeFormat { kNvfp4, kMxfp4, kFp8 };
QuantizeFormat parse_quantize_format(const std::string& text);  // "nvfp4" | "mxfp4" | "fp8"

struct QuantizeOptions {
  QuantizeFormat format = QuantizeFormat::kNvfp4;
  bool dense_fp8 = false;
  // NVFP4 only: token windows (each a forward of its own) on which the expert
  // inputs are calibrated for input_scale; empty = no input_scale (ModelOpt's
  // W4A16 form; W4A4 then quantizes activations with dynamic global scales).
  std::vector<std::vector<int32_t>> calibration;
  DeviceKind calibration_device = DeviceKind::kCpu;
  std::function<void(const std::string&)> progress;  // one line per step, or empty
};

struct QuantizeSummary {
  int64_t experts = 0;        // routed expert matrices quantized (3 per expert)
  int64_t dense = 0;          // dense projections stored as FP8
  int64_t calibrated_tokens = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // tensor bytes
};

// Writes the quantized checkpoint into `out` (created; must not hold a
// checkpoint already, and must not be `in`). Throws for experts that are not
// dense, for shapes the format cannot hold, and for any file problem.
QuantizeSummary quantize_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                    const QuantizeOptions& options);

}  // namespace megamoe
