// Checked CUDA calls: every runtime call goes through MEGAMOE_CUDA_CHECK, and
// every launch is followed by MEGAMOE_CUDA_CHECK_LAUNCH (which also
// synchronises in debug builds so a faulting kernel is named at its launch).
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

#ifdef NDEBUG
#define MEGAMOE_CUDA_CHECK_LAUNCH() MEGAMOE_CUDA_CHECK(cudaGetLastError())
#else
#define MEGAMOE_CUDA_CHECK_LAUNCH()          \
  do {                                       \
    MEGAMOE_CUDA_CHECK(cudaGetLastError());  \
    MEGAMOE_CUDA_CHECK(cudaDeviceSynchronize()); \
  } while (0)
#endif
