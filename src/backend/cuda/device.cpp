#include "backend/cuda/device.hpp"

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace megamoe::cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" status
    return 0;
  }
  return count;
}

std::string describe_device(int device) {
  cudaDeviceProp prop{};
  MEGAMOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return str_cat(prop.name, " (sm_", prop.major, prop.minor, ", ", prop.multiProcessorCount, " SMs, ",
                 static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0), " GiB)");
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) MEGAMOE_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* host, size_t bytes, cudaStream_t stream) {
  MEGAMOE_CHECK(bytes <= bytes_, "upload of ", bytes, " bytes into a buffer of ", bytes_);
  MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(ptr_, host, bytes, cudaMemcpyHostToDevice, stream));
  MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void DeviceBuffer::download(void* host, size_t bytes, cudaStream_t stream) const {
  MEGAMOE_CHECK(bytes <= bytes_, "download of ", bytes, " bytes from a buffer of ", bytes_);
  MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(host, ptr_, bytes, cudaMemcpyDeviceToHost, stream));
  MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

Stream::Stream() { MEGAMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(stream_);
}

void Stream::synchronize() const { MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace megamoe::cuda
