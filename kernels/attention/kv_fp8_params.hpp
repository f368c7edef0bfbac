// FP8 KV storage rounding, as the official reference's QAT (dsv4-architecture.md
// §10): of each kv row [d_h] (window KV and main compressor entries, after
// norm and RoPE), the d_h - rope_dim non-RoPE channels are quantized to E4M3
// in blocks of 64 with a power-of-two scale (the smallest 2^e >= amax / 448,
// amax clamped to 1e-4) and dequantized; the rope_dim RoPE channels are
// rounded to bf16. Values keep fp32 storage on both backends (the numerics of
// FP8 storage; the byte saving is the decode-graph issue's).
// CPU oracle: dsv4::round_kv_row (src/backend/cpu/dsv4/kv_round.hpp).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention/attention_params.hpp"

namespace megamoe::cuda::kernels {

struct KvRoundParams {
  int dim = 0, rope_dim = 0;
  // Either dense rows ...
  int rows = 0;
  float* x = nullptr;  // [rows, dim]
  // ... or (x == null) the entries emitted this step: window list + pools.
  StepMeta step;
  int windows = 0;
  const int32_t* window_seq = nullptr;
  const int32_t* window_index = nullptr;
  float* entries = nullptr;  // [S, max_entries, dim]
  int max_entries = 0;
};

void launch_kv_round(const KvRoundParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
