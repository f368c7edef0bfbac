// Turning checkpoint tensors into the CPU backend's fp32 tensors: dense
// F32/BF16/F16 are widened, FP8 block-128, MXFP4 and NVFP4 weights are
// dequantized at load (the CPU backend computes in fp32 only).
#pragma once

#include <cstdint>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/safetensors.hpp"
#include "core/tensor.hpp"

namespace megamoe::cpu {

// F32 copy of a dense (F32/BF16/F16) tensor with its shape; throws naming the
// tensor for any other dtype.
Tensor to_f32(const TensorView& view);

// The linear weight [out, in] as fp32, whatever its storage format.
Tensor dequantize_weight(const WeightRef& ref);

// An integer table (I64 or I32) as int32, every value checked to lie in [0, limit).
std::vector<int32_t> to_index_table(const TensorView& view, int64_t limit);

// W4A4's static activation global scales of layer `layer`'s routed experts:
// ModelOpt's per-weight `input_scale` (F32 scalar). w1 and w3 read the same
// input, so ModelOpt gives them one scale; w13 [E] holds it (w1's and w3's
// must be equal), w2 [E] the down projection's. A list is empty when no
// expert has that scale (dynamic scales). Shared by the CPU and CUDA loaders.
// Throws naming the tensor when an expert is not NVFP4 (W4A4 applies to NVFP4
// experts only), when only some experts have a scale, when w1's and w3's
// differ, or when a scale is not finite and positive.
struct ExpertInputScales {
  std::vector<float> w13, w2;
};
ExpertInputScales read_expert_input_scales(const Checkpoint& checkpoint, int64_t layer);

}  // namespace megamoe::cpu
