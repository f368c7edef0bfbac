// Path control for the linear kernels of sm90_linear.cu, for tests and
// benchmarks (the engine calls launch_linear(p, stream) of linear_params.hpp,
// which is launch_linear(p, LinearPath::kAuto, stream)).
#pragma once

#include <cuda_runtime.h>

#include "kernels/gemm/linear_params.hpp"

namespace megamoe::cuda::kernels {

enum class LinearPath : int {
  kAuto = 0,   // the launcher's choice (linear_auto_path)
  kGemv = 1,   // weight-streaming GEMV; T > 16 runs as passes of 16 tokens
  kTiled = 2,  // shared-memory tiled kernel, any T
};

// What kAuto runs for this problem: kGemv for T <= 16, and for T <= 256 when
// the tiled grid would not fill the GPU (small N); otherwise kTiled.
LinearPath linear_auto_path(const LinearParams& p);

// launch_linear with the kernel forced; same contract, same results up to
// fp32 summation order.
void launch_linear(const LinearParams& p, LinearPath path, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
