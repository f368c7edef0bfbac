// The CPU backend's fp32 building blocks (naive and readable; the oracle for
// the CUDA kernels). Row-major everywhere; a linear weight is [out, in] and
// y = x W^T as in PyTorch's nn.Linear. Long loops run on ThreadPool::global();
// results never depend on the thread count (each output has one owner).
#pragma once

#include <cstdint>
#include <span>

#include "core/tensor.hpp"

namespace megamoe::cpu {

// y[rows, out] = x[rows, in] . w[out, in]^T  (fp32 accumulate).
void linear(std::span<const float> x, int64_t rows, const Tensor& w, std::span<float> y);

// Weighted RMSNorm over each row of width n, in place: x = w * x / sqrt(mean(x^2) + eps).
void rms_norm_rows(std::span<float> x, int64_t n, std::span<const float> weight, float eps);
// Unweighted RMSNorm over each row of width n, in place.
void rms_norm_rows(std::span<float> x, int64_t n, float eps);

// Row-wise sums and products used by several blocks.
float dot(const float* a, const float* b, int64_t n);
float sigmoid(float z);

}  // namespace megamoe::cpu
