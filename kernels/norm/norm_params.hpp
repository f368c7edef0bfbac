// Device interface of the small row-wise kernels: RMSNorm, interleaved tail
// RoPE, embedding gather, fp32 -> bf16. fp32 activations.
// CPU oracles: cpu::rms_norm_rows (src/backend/cpu/ops.hpp), RopeTable::apply
// (src/backend/cpu/dsv4/rope.hpp), the embedding copy in Model::forward.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

// x [rows, groups * width] in place: each width-wide group of a row is
// normalised, x = x / sqrt(mean(x^2) + eps) * weight (weight [width], or none).
struct RmsNormParams {
  int rows = 0, groups = 1, width = 0;
  float eps = 1e-6f;
  float* x = nullptr;
  const float* weight = nullptr;  // [width] or null (unweighted)
};

// Rotates the last rope_dim channels of every head of every row as adjacent
// pairs (v[2i], v[2i+1]) by angle = float(pos) * omega[i] (fp32 product),
// cos/sin evaluated in double and rounded to float (as the CPU does); inverse
// rotates by -angle. pos = row_pos[row].
struct RopeParams {
  int rows = 0, heads = 0, dim = 0, rope_dim = 0;
  bool inverse = false;
  float* x = nullptr;              // [rows, heads, dim] in place
  const float* omega = nullptr;    // [rope_dim / 2]
  const int32_t* row_pos = nullptr;  // [rows] absolute positions
};

// x [T, n_c, D] = table[ids[t]] copied into each of the n_c streams. An id
// outside [0, vocab) sets *error_flag = 1 and writes zeros (the host checks
// ids before the step; the flag is a second line of defence).
struct EmbedParams {
  int tokens = 0, streams = 0, hidden = 0, vocab = 0;
  bool table_bf16 = false;          // table dtype: bf16 bits (true) or fp32
  const void* table = nullptr;      // [V, D]
  const int32_t* ids = nullptr;     // [T]
  float* x = nullptr;               // [T, n_c, D]
  int32_t* error_flag = nullptr;    // [1] or null
};

// y[i] = bf16(x[i]) round-to-nearest-even (NaN stays NaN), n elements.
struct ToBf16Params {
  int64_t n = 0;
  const float* x = nullptr;
  uint16_t* y = nullptr;
};

void launch_rms_norm(const RmsNormParams& p, cudaStream_t stream);
void launch_rope(const RopeParams& p, cudaStream_t stream);
void launch_embed(const EmbedParams& p, cudaStream_t stream);
void launch_to_bf16(const ToBf16Params& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
