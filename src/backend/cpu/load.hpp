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

}  // namespace megamoe::cpu
