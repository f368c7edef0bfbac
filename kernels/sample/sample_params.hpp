// Device interface of the token sampler. The same choice as megamoe::Sampler
// (src/runtime/sampler.hpp) from the same logits and the same uniform draw:
//   greedy (temperature <= 0): argmax, ties to the lower id;
//   else candidates by descending logit (ties: lower id first), keep top_k
//   (0 = all), probs_i = exp((l_i - l_max) / T) in double, nucleus = smallest
//   prefix whose cumulative prob / total >= top_p, mass = sum of the nucleus,
//   pick the first i with u01 * mass < cumulative sum of probs (double,
//   summed in candidate order, as the CPU does).
// The uniform u01 in [0, 1) is drawn on the host (the RNG never depends on
// the logits), so no host sync is needed and the CPU and GPU pick the same id.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

struct SampleRow {
  double temperature = 0.0;  // <= 0: greedy (double: the CPU sampler's precision)
  int top_k = 0;
  double top_p = 1.0;
  double u01 = 0.0;          // uniform draw in [0, 1)
};

struct SampleParams {
  int rows = 0, vocab = 0;
  const float* logits = nullptr;     // [rows, V]
  const SampleRow* row_params = nullptr;  // [rows] (device)
  int32_t* ids = nullptr;            // [rows] out
  // Scratch for the sort of candidates (sampled rows only), sized by
  // sample_workspace_bytes(rows, vocab) at load time.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

size_t sample_workspace_bytes(int rows, int vocab);
void launch_sample(const SampleParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
