// Checked CUDA calls: every runtime call goes through MEGAMOE_CUDA_CHECK, and
// every launch is followed by MEGAMOE_CUDA_CHECK_LAUNCH(stream).
#pragma once

#include <cuda_runtime.h>

#include "core/error.hpp"

#define MEGAMOE_CUDA_CHECK(call)                                                             \
  do {                                                                                       \
    const cudaError_t megamoe_status_ = (call);                                              \
    if (megamoe_status_ != cudaSuccess)                                                      \
      MEGAMOE_THROW("CUDA error ", cudaGetErrorName(megamoe_status_), " (",                  \
                    cudaGetErrorString(megamoe_status_), ") in ", #call);                    \
  } while (0)

namespace megamoe::cuda {
// After a launch: surface launch errors; in debug builds also wait for the
// stream so a faulting kernel is named at its launch, except while the stream
// is being captured into a CUDA graph (synchronising would break the capture).
inline void check_launch(cudaStream_t stream, const char* file, int line) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    ::megamoe::throw_error(file, line, ::megamoe::str_cat("CUDA launch failed: ", cudaGetErrorName(status), " (",
                                                          cudaGetErrorString(status), ")"));
#ifndef NDEBUG
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone) {
    const cudaError_t sync = cudaStreamSynchronize(stream);
    if (sync != cudaSuccess)
      ::megamoe::throw_error(file, line, ::megamoe::str_cat("CUDA kernel failed: ", cudaGetErrorName(sync), " (",
                                                            cudaGetErrorString(sync), ")"));
  }
#endif
}
}  // namespace megamoe::cuda

#define MEGAMOE_CUDA_CHECK_LAUNCH(stream) ::megamoe::cuda::check_launch((stream), __FILE__, __LINE__)
