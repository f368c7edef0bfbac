#include "backend/cuda/staged_communicator.hpp"

#include <cuda_runtime.h>

#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"
#include "parallel/thread_communicator.hpp"

namespace megamoe::cuda {
namespace {

// Pinned host memory that grows to the largest collective seen.
class PinnedBuffer {
 public:
  ~PinnedBuffer() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  float* reserve(size_t count) {
    if (count > capacity_) {
      if (data_ != nullptr) MEGAMOE_CUDA_CHECK(cudaFreeHost(data_));
      data_ = nullptr;
      MEGAMOE_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&data_), count * sizeof(float)));
      capacity_ = count;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

class StagedCommunicator : public Communicator {
 public:
  explicit StagedCommunicator(std::shared_ptr<Communicator> host) : host_(std::move(host)) {}
  int64_t rank() const override { return host_->rank(); }
  int64_t size() const override { return host_->size(); }
  bool graph_capturable() const override { return false; }

  void all_reduce_sum(float* data, size_t count, void* stream) override {
    const auto s = static_cast<cudaStream_t>(stream);
    refuse_capture(s);
    float* host = send_.reserve(count);
    to_host(host, data, count, s);
    host_->all_reduce_sum(host, count, nullptr);
    MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(data, host, count * sizeof(float), cudaMemcpyHostToDevice, s));
    MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(s));  // the pinned buffer is reused by the next collective
  }

  void all_gather(const float* send, float* recv, size_t count, void* stream) override {
    const auto s = static_cast<cudaStream_t>(stream);
    refuse_capture(s);
    float* host_send = send_.reserve(count);
    float* host_recv = recv_.reserve(count * static_cast<size_t>(size()));
    to_host(host_send, send, count, s);
    host_->all_gather(host_send, host_recv, count, nullptr);
    MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(recv, host_recv, count * static_cast<size_t>(size()) * sizeof(float),
                                       cudaMemcpyHostToDevice, s));
    MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  void abort() override { host_->abort(); }

 private:
  static void refuse_capture(cudaStream_t s) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    MEGAMOE_CUDA_CHECK(cudaStreamIsCapturing(s, &status));
    MEGAMOE_CHECK(status == cudaStreamCaptureStatusNone,
                  "cuda: the host-staged communicator (several ranks on one device) cannot be captured in a CUDA "
                  "graph; run its steps eagerly (docs/parallel.md)");
  }
  // The rank's device values, once its stream has produced them.
  static void to_host(float* host, const float* device, size_t count, cudaStream_t s) {
    MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(host, device, count * sizeof(float), cudaMemcpyDeviceToHost, s));
    MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  std::shared_ptr<Communicator> host_;
  PinnedBuffer send_, recv_;
};

class StagedFactory : public CommunicatorFactory {
 public:
  explicit StagedFactory(int64_t ranks) : host_(make_thread_communicators(ranks)) {}
  std::shared_ptr<Communicator> connect(int64_t rank, int device) override {
    MEGAMOE_CUDA_CHECK(cudaSetDevice(device));
    return std::make_shared<StagedCommunicator>(host_.at(static_cast<size_t>(rank)));
  }
  void abort() override { host_.front()->abort(); }  // one thread group: aborting one aborts all

 private:
  std::vector<std::shared_ptr<Communicator>> host_;
};

}  // namespace

std::unique_ptr<CommunicatorFactory> make_staged_communicator_factory(int64_t ranks) {
  return std::make_unique<StagedFactory>(ranks);
}

}  // namespace megamoe::cuda
