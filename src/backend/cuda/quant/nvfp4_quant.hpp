// Host launcher of the NVFP4 activation quantizer (kernels/quant/
// sm90_nvfp4_act_quant.cuh): validation, launch configuration and the launch.
// It enqueues on the caller's stream, allocates nothing and never
// synchronises, so it can be captured in a CUDA graph. The output bytes equal
// the host megamoe::quantize_nvfp4_activation (src/core/block_quant.hpp) bit
// for bit: tests/kernels/test_sm90_nvfp4_quant.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/quant/sm90_nvfp4_act_quant.cuh"

namespace megamoe::cuda {

using kernels::ActDtype;
using kernels::kNvfp4StatusBadGlobalScale;
using kernels::kNvfp4StatusNonFiniteInput;
using kernels::Nvfp4ScaleMode;

// All pointers are device pointers. Shapes: x [rows, cols] contiguous, cols a
// multiple of 16; packed [rows, cols/2]; block_scales [rows, cols/16].
struct Nvfp4ActQuantArgs {
  const void* x = nullptr;  // bf16 bits or fp32, 16-byte aligned
  ActDtype dtype = ActDtype::kBf16;
  int64_t rows = 0;
  int64_t cols = 0;
  Nvfp4ScaleMode mode = Nvfp4ScaleMode::kDynamic;
  const float* input_scale = nullptr;  // kTensor: [1]; kPerRow: [rows]; kDynamic: must be null
  void* workspace = nullptr;           // kDynamic: >= nvfp4_act_quant_workspace_bytes(), 4-B aligned
  size_t workspace_bytes = 0;
  uint8_t* packed = nullptr;  // 8-byte aligned
  uint8_t* block_scales = nullptr;
  float* global_scale_out = nullptr;  // optional [1] (kDynamic / kTensor)
  float* amax_out = nullptr;          // optional [1] (kDynamic)
  uint32_t* status = nullptr;         // optional [1] sticky error bits (zeroed once by the caller)
};

// Workspace of the dynamic mode (per-CTA partial maxima). Constant, so it can
// be allocated once at load time. One workspace per concurrently running stream.
size_t nvfp4_act_quant_workspace_bytes();

struct Nvfp4ActQuantLaunch {
  int amax_grid = 0;      // pass 1 CTAs (0: pass skipped)
  int quantize_grid = 0;  // pass 2 CTAs
  int threads = kernels::kNvfp4QuantThreads;
};

// Validates `args` (throws megamoe::Error naming the field) and picks the grids:
// enough CTAs for the work, at most one resident wave (sm_count x the kernel's
// resident CTAs per SM; grid-stride loops take the rest). No CUDA call.
Nvfp4ActQuantLaunch plan_nvfp4_act_quant(const Nvfp4ActQuantArgs& args, int sm_count, int amax_ctas_per_sm,
                                         int quantize_ctas_per_sm);
// "nvfp4 act quant: bf16 [7, 4096] dynamic -> amax grid 4 + quantize grid 8 x 256 threads".
std::string describe_nvfp4_act_quant(const Nvfp4ActQuantArgs& args, const Nvfp4ActQuantLaunch& launch);

// Enqueues the quantization (1 launch for kTensor/kPerRow, 2 for kDynamic) on
// `stream`. rows == 0 enqueues nothing and leaves every output untouched.
void quantize_nvfp4_activation_cuda(const Nvfp4ActQuantArgs& args, cudaStream_t stream);

}  // namespace megamoe::cuda
