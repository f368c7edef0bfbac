// Device basics: how many GPUs there are (0 without a driver, never throws),
// a description of one, an owning device buffer and an owning stream.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>

namespace megamoe::cuda {

// Number of usable CUDA devices; 0 where the machine has no NVIDIA device
// (no /dev/nvidia* node). Throws when the devices exist but the runtime fails.
int device_count();

// "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)".
std::string describe_device(int device);

// Owning device allocation. Allocation happens at construction (load time),
// never inside a forward step.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

  void upload(const void* host, size_t bytes, cudaStream_t stream = nullptr);
  void download(void* host, size_t bytes, cudaStream_t stream = nullptr) const;

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace megamoe::cuda
