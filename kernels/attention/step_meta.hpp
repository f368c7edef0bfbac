// Per-step batch description on the device, shared by every kernel that needs
// to know which sequence a row belongs to (RoPE, compressor, indexer,
// attention). A step runs B sequences; sequence b contributes tokens[b] rows
// starting at row0[b], at absolute positions pos0[b] .. pos0[b] + tokens[b] - 1,
// and owns state slot slot[b] in every per-layer state pool. The host builds
// these arrays for each step (it knows every position without reading the
// device) and uploads them once; kernels only read them.
#pragma once

#include <cstdint>

namespace megamoe::cuda::kernels {

struct StepMeta {
  int rows = 0;                      // T: rows of this step (all sequences)
  int batch = 0;                     // B
  const int32_t* row_seq = nullptr;  // [T] sequence index b of each row
  const int32_t* row_pos = nullptr;  // [T] absolute position of each row
  const int32_t* seq_slot = nullptr;    // [B] state slot of each sequence
  const int32_t* seq_pos0 = nullptr;    // [B] position of its first row
  const int32_t* seq_tokens = nullptr;  // [B] its rows this step
  const int32_t* seq_row0 = nullptr;    // [B] its first row
};

}  // namespace megamoe::cuda::kernels
