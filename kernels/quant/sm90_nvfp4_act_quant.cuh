// Device-side interface of the NVFP4 activation quantizer (sm_90a), issue 5
// item 2: amax -> global scale -> quantize, entirely on the device, no host
// synchronisation, no allocation, CUDA-graph capturable.
//
// Algorithm (kernels/quant/NOTES.md has the byte budget and the reasoning):
//   pass 1 (dynamic mode only) nvfp4_amax_partials: CTA i writes the max of
//     |x| (as FP32 bits, integer max) over its grid-stride share into
//     amax_partials[i]. Every slot < num_partials is written on every launch,
//     so the workspace needs no reset, and an integer max is exact and
//     order-independent, so the result is deterministic for any grid.
//   pass 2 nvfp4_act_quantize: every CTA first reduces the num_partials slots
//     (<= 1024, an L2 hit) to the same amax and s2 = amax / 2688 (IEEE div),
//     or reads the given input scale; then one thread per 16-element block
//     computes the E4M3 block scale and the 16 E2M1 codes in the exact FP32
//     op order of the host quantize_nvfp4_activation (src/core/block_quant.hpp).
// Plain C++ (no device code): the host launcher in src/backend/cuda/quant/
// includes it. Test: tests/kernels/test_sm90_nvfp4_quant.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

enum class ActDtype : int { kBf16 = 0, kF32 = 1 };

// Where the FP32 global scale s2 (the multiplier, = amax / 2688) comes from.
enum class Nvfp4ScaleMode : int {
  kDynamic = 0,  // s2 = max|x| / 2688 of this tensor (pass 1 + pass 2)
  kTensor = 1,   // s2 = input_scale[0] (a checkpoint's static input_scale)
  kPerRow = 2,   // s2 of row r = input_scale[r] (e.g. per-expert scales of permuted rows)
};

// Sticky error bits OR-ed into *status (the caller zeroes it once; never reset here).
inline constexpr uint32_t kNvfp4StatusNonFiniteInput = 1u;  // some x is inf/NaN (codes undefined)
// s2 unusable: dynamic amax == 0 (all-zero tensor), amax/2688 underflows, or a
// given scale <= 0 / non-finite. The affected blocks get code 0 and scale byte
// 0x00 (they decode to zeros); the host quantizer throws in these cases.
inline constexpr uint32_t kNvfp4StatusBadGlobalScale = 2u;

inline constexpr int kNvfp4QuantThreads = 256;
inline constexpr int kNvfp4MaxAmaxPartials = 1024;  // workspace = 4 KiB

struct Nvfp4ActQuantParams {
  int64_t rows = 0;  // R >= 1
  int64_t cols = 0;  // C, multiple of 16
  ActDtype dtype = ActDtype::kBf16;
  Nvfp4ScaleMode mode = Nvfp4ScaleMode::kDynamic;

  // [R, C] bf16 (uint16 bits) or fp32, row-major, contiguous, 16-byte aligned.
  const void* x = nullptr;
  // kTensor: [1] fp32; kPerRow: [R] fp32; kDynamic: unused.
  const float* input_scale = nullptr;
  // kDynamic: [num_partials] uint32 workspace, FP32 bits of each pass-1 CTA's max|x|.
  uint32_t* amax_partials = nullptr;
  // kDynamic: the grid of pass 1, 1..kNvfp4MaxAmaxPartials.
  int num_partials = 0;

  // [R, C/2] E2M1 codes: byte j = element 2j (low nibble) | element 2j+1 (high); 8-byte aligned.
  uint8_t* packed = nullptr;
  // [R, C/16] E4M3FN block-scale bytes, linear row-major (not swizzled).
  uint8_t* block_scales = nullptr;
  // [1] fp32: the s2 used (kDynamic, kTensor; untouched in kPerRow), or null.
  float* global_scale_out = nullptr;
  // [1] fp32: max|x| (kDynamic only), or null.
  float* amax_out = nullptr;
  // [1] uint32: sticky kNvfp4Status* bits, or null.
  uint32_t* status = nullptr;
};

// CTAs of each kernel resident per SM (cudaOccupancy..., cached): the launcher
// sizes its grid-stride grids to exactly one resident wave.
int nvfp4_amax_partials_ctas_per_sm(ActDtype dtype);
int nvfp4_act_quantize_ctas_per_sm(ActDtype dtype);

// Pass 1 on `grid` == p.num_partials CTAs of kNvfp4QuantThreads threads.
void launch_nvfp4_amax_partials(const Nvfp4ActQuantParams& p, int grid, cudaStream_t stream);
// Pass 2 on `grid` CTAs of kNvfp4QuantThreads threads (grid-stride over 16-blocks).
void launch_nvfp4_act_quantize(const Nvfp4ActQuantParams& p, int grid, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
