// FP8 KV storage rounding on the CPU, the oracle of the device kernel
// (kernels/attention/kv_fp8_params.hpp has the definition): non-RoPE channels
// E4M3 with a power-of-two scale per 64, RoPE channels bf16, values kept fp32.
#pragma once

#include <cstdint>

namespace megamoe::dsv4 {

void round_kv_row(float* row, int64_t dim, int64_t rope_dim);

}  // namespace megamoe::dsv4
