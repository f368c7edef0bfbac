// The CUDA backend (sm_90a): every op of backend.hpp on one stream with the
// kernels of kernels/ (mhc, norm, gemm, attention, moe, sample). Weights stay
// in their stored formats on the device (FP8 block-128 and BF16 linears as
// stored, FP4 routed experts repacked for the MoE op); per-sequence state lives
// in pools of slots allocated at load; activations come from a caching arena,
// so a step allocates nothing after warm-up and never waits for the device
// except where the model downloads results (logits).
// Numerics: fp32 activations, norms, mHC, router, attention and state; linear
// layers accumulate in fp32; the FP4 MoE op takes bf16 inputs (the CPU backend
// emulates that with BackendOptions::emulate_gpu_moe_bf16).
#pragma once

#include <memory>

#include "backend/backend.hpp"

namespace megamoe::cuda {

// Builds the backend on device options.device (made current on the calling
// thread); throws with the bytes needed and free when the checkpoint does not fit.
std::unique_ptr<Backend> make_cuda_backend(const Checkpoint& checkpoint, const BackendOptions& options);

}  // namespace megamoe::cuda
