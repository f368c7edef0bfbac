// The HBM read bandwidth the benches divide by: one kernel streams a buffer
// larger than L2 (int4 loads, one pass, a sum kept so nothing is elided),
// timed over several launches. This is the "~100 MB read kernel" figure that
// the floor of a weight-streaming step uses (docs/decode.md).
#pragma once

#include <cstddef>

namespace megamoe::cuda {

// Median TB/s (1e12 bytes/s) of `iters` reads of a fresh `bytes` buffer.
double measure_hbm_read_tbps(size_t bytes, int iters);

}  // namespace megamoe::cuda::kernels
