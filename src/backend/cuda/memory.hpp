// Host-side memory of the CUDA backend: the device arena activations come
// from and the pinned staging that uploads go through (both per backend, one
// stream).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace megamoe::cuda {

// Device buffers recycled by size: freed tensors go back to their pool's free
// list, so a step allocates nothing once every size it uses has been seen.
// All work runs on one stream, so a buffer freed by the host can be reused by
// later work. A recorded step allocates from a private pool that lives as
// long as the recording: its buffers are baked into the graph's kernels, so
// no eager step may take them.
class Arena {
 public:
  struct Pool {
    std::mutex mutex;
    std::map<size_t, std::vector<void*>> free;
    ~Pool() {
      for (auto& [bytes, list] : free)
        for (void* p : list) cudaFree(p);
    }
  };

  std::shared_ptr<void> get(size_t bytes) {
    bytes = round_up(std::max<size_t>(bytes, 256));
    std::shared_ptr<Pool> pool = current_;
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(pool->mutex);
      auto& list = pool->free[bytes];
      if (!list.empty()) {
        p = list.back();
        list.pop_back();
      }
    }
    if (p == nullptr) MEGAMOE_CUDA_CHECK(cudaMalloc(&p, bytes));
    return std::shared_ptr<void>(p, [pool, bytes](void* q) {
      std::lock_guard<std::mutex> lock(pool->mutex);
      pool->free[bytes].push_back(q);
    });
  }
  // Allocations go to a fresh private pool until end_private().
  std::shared_ptr<Pool> begin_private() { return current_ = std::make_shared<Pool>(); }
  void end_private() { current_ = shared_; }

 private:
  static size_t round_up(size_t n) {  // powers of two and their halves: < 33% waste
    size_t p = 256;
    while (p < n) p <<= 1;
    return (p / 4) * 3 >= n ? (p / 4) * 3 : p;
  }
  std::shared_ptr<Pool> shared_ = std::make_shared<Pool>(), current_ = shared_;
};

// Pinned host staging for the small uploads of a step (ids, step metadata,
// sampler rows): copies are issued asynchronously from it, so a step never
// waits for the device to upload. A bump allocator, rewound whenever the
// stream is known idle (after a download); when full it waits once and rewinds.
class PinnedStaging {
 public:
  explicit PinnedStaging(size_t bytes) : capacity_(bytes) { MEGAMOE_CUDA_CHECK(cudaMallocHost(&base_, bytes)); }
  ~PinnedStaging() { cudaFreeHost(base_); }
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  // Copies host bytes to device memory `dst` in stream order.
  void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    if (bytes == 0) return;
    MEGAMOE_CHECK(!recording_, "cuda: a host upload inside a recorded step (inputs are written before replay)");
    if (bytes > capacity_) {  // too large to stage: a plain synchronous copy
      MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
      MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
      return;
    }
    if (used_ + bytes > capacity_) {
      MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
      used_ = 0;
    }
    char* slot = static_cast<char*>(base_) + used_;
    std::memcpy(slot, src, bytes);
    MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, stream));
    used_ += (bytes + 255) / 256 * 256;
  }
  void rewind() { used_ = 0; }  // only when the stream is idle
  void* base() const { return base_; }
  size_t capacity() const { return capacity_; }
  void set_recording(bool on) { recording_ = on; }

 private:
  bool recording_ = false;
  // Profiling: events from a pool reused by every profile, and the marks of this one.
  bool profiling_ = false;
  std::vector<cudaEvent_t> events_;
  size_t used_events_ = 0;
  std::vector<std::pair<cudaEvent_t, Stage>> marks_;
  void* base_ = nullptr;
  size_t capacity_ = 0, used_ = 0;
};

}  // namespace megamoe::cuda
