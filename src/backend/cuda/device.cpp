#include "backend/cuda/device.hpp"

#include <filesystem>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace megamoe::cuda {

int device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaSuccess) return count;
  cudaGetLastError();  // clear the sticky status
  // No GPU here at all (no NVIDIA device node): genuinely none. A machine that
  // has the device nodes but whose runtime fails is broken, and must not read
  // as "no GPU" (every gpu test would skip and the run would look green).
  if (!std::filesystem::exists("/dev/nvidiactl") && !std::filesystem::exists("/dev/nvidia0")) return 0;
  MEGAMOE_THROW("CUDA runtime error on a machine with NVIDIA devices: cudaGetDeviceCount failed with ",
                cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
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
