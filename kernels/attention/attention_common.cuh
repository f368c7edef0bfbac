// Shared by the attention kernels (sm90_compressor.cu, sm90_indexer.cu,
// sm90_attention.cu): the tail RoPE with the CPU's exact rounding, fixed-order
// block reductions, and the once-per-device opt-in to large dynamic shared
// memory. Device code only; nothing from src/.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <mutex>

#include "kernels/common/warp_reduce.cuh"

namespace megamoe::cuda::kernels::attention_detail {

// Rotates pair i of the tail (v[base + 2i], v[base + 2i + 1]) at position pos,
// exactly like RopeTable::apply: the angle float(pos) * omega in fp32, cos and
// sin in double rounded to float, and the rotation without FMA contraction so
// that every product is rounded like the host's.
__device__ __forceinline__ void rope_pair(float* v, int base, int i, int pos, float omega) {
  const float angle = __fmul_rn(static_cast<float>(pos), omega);
  const float c = static_cast<float>(cos(static_cast<double>(angle)));
  const float s = static_cast<float>(sin(static_cast<double>(angle)));
  const float a = v[base + 2 * i], b = v[base + 2 * i + 1];
  v[base + 2 * i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  v[base + 2 * i + 1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

// Block-wide sum / max in a fixed order (warp butterfly, then warp 0 over the
// warps), result returned to every thread. `red` holds >= 32 values; the call
// begins and ends with a __syncthreads so `red` can be reused right away.
// blockDim.x must be a multiple of 32.
template <typename T>
__device__ T block_sum(T v, T* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? red[lane] : T(0);
    w = warp_sum(w);
    if (lane == 0) red[0] = w;
  }
  __syncthreads();
  const T out = red[0];
  __syncthreads();
  return out;
}

__device__ __forceinline__ float block_max(float v, float* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? red[lane] : -INFINITY;
    w = warp_max(w);
    if (lane == 0) red[0] = w;
  }
  __syncthreads();
  const float out = red[0];
  __syncthreads();
  return out;
}

// Host: the largest dynamic shared memory one block of `kernel` may use on the
// current device. The first call per device opts the kernel in to the device's
// maximum (cudaFuncSetAttribute); later calls only read the cached value.
// Errors are not thrown: a failed query gives the default 48 KiB, and a launch
// that then asks for more fails with a launch error the caller checks.
class SmemOptIn {
 public:
  int limit(const void* kernel) {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return kDefault;
    std::lock_guard<std::mutex> lock(mutex_);
    if (limit_[device] == 0) {
      const cudaError_t pending = cudaPeekAtLastError();
      int optin = kDefault;
      if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
        optin = kDefault;
      cudaFuncAttributes attrs{};
      const size_t static_bytes =
          cudaFuncGetAttributes(&attrs, kernel) == cudaSuccess ? attrs.sharedSizeBytes : size_t{0};
      int dynamic = optin - static_cast<int>(static_bytes);
      if (dynamic > kDefault &&
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic) != cudaSuccess)
        dynamic = kDefault;
      if (dynamic < 0) dynamic = 0;
      limit_[device] = dynamic > 0 ? dynamic : -1;
      // A failed query must not look like the next launch's error (an error
      // already pending from the caller's earlier work is left in place).
      if (pending == cudaSuccess) (void)cudaGetLastError();
    }
    return limit_[device] > 0 ? limit_[device] : 0;
  }

 private:
  static constexpr int kMaxDevices = 64;
  static constexpr int kDefault = 48 * 1024;
  std::mutex mutex_;
  int limit_[kMaxDevices] = {};
};

__host__ __device__ inline int round_up(int v, int to) { return (v + to - 1) / to * to; }

}  // namespace megamoe::cuda::kernels::attention_detail
