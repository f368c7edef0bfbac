#include "backend/cuda/nccl_communicator.hpp"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <mutex>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

#define MEGAMOE_NCCL_CHECK(call)                                                              \
  do {                                                                                        \
    const ncclResult_t nccl_result_ = (call);                                                 \
    MEGAMOE_CHECK(nccl_result_ == ncclSuccess, "nccl: ", #call, " failed: ",                  \
                  ncclGetErrorString(nccl_result_), " (NCCL_DEBUG=WARN says more)");         \
  } while (0)

namespace megamoe::cuda {
namespace {

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int64_t rank, int64_t size) : comm_(comm), rank_(rank), size_(size) {}
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }
  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }

  void all_reduce_sum(float* data, size_t count, void* stream) override {
    MEGAMOE_NCCL_CHECK(
        ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, static_cast<cudaStream_t>(stream)));
  }
  void all_gather(const float* send, float* recv, size_t count, void* stream) override {
    MEGAMOE_NCCL_CHECK(ncclAllGather(send, recv, count, ncclFloat32, comm_, static_cast<cudaStream_t>(stream)));
  }
  void abort() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (comm_ != nullptr) {
      ncclCommAbort(comm_);  // wakes kernels of this communicator that wait for a failed peer
      comm_ = nullptr;
    }
  }

 private:
  std::mutex mutex_;
  ncclComm_t comm_;
  int64_t rank_, size_;
};

class NcclFactory : public CommunicatorFactory {
 public:
  explicit NcclFactory(int64_t ranks) : ranks_(ranks), id_(nccl_unique_id()), comms_(static_cast<size_t>(ranks)) {}
  std::shared_ptr<Communicator> connect(int64_t rank, int device) override {
    auto comm = connect_nccl(id_, rank, ranks_, device);
    std::lock_guard<std::mutex> lock(mutex_);
    comms_.at(static_cast<size_t>(rank)) = comm;
    return comm;
  }
  void abort() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& weak : comms_)
      if (auto comm = weak.lock()) comm->abort();
  }

 private:
  int64_t ranks_;
  std::vector<uint8_t> id_;
  std::mutex mutex_;
  std::vector<std::weak_ptr<Communicator>> comms_;
};

}  // namespace

std::vector<uint8_t> nccl_unique_id() {
  ncclUniqueId id;
  MEGAMOE_NCCL_CHECK(ncclGetUniqueId(&id));
  std::vector<uint8_t> bytes(sizeof(id.internal));
  std::memcpy(bytes.data(), id.internal, bytes.size());
  return bytes;
}

std::shared_ptr<Communicator> connect_nccl(const std::vector<uint8_t>& unique_id, int64_t rank, int64_t world,
                                           int device) {
  ncclUniqueId id;
  MEGAMOE_CHECK(unique_id.size() == sizeof(id.internal), "nccl: a unique id has ", sizeof(id.internal),
                " bytes, got ", unique_id.size());
  std::memcpy(id.internal, unique_id.data(), unique_id.size());
  MEGAMOE_CUDA_CHECK(cudaSetDevice(device));
  ncclComm_t comm = nullptr;
  MEGAMOE_NCCL_CHECK(ncclCommInitRank(&comm, static_cast<int>(world), id, static_cast<int>(rank)));
  return std::make_shared<NcclCommunicator>(comm, rank, world);
}

std::unique_ptr<CommunicatorFactory> make_nccl_communicator_factory(int64_t ranks) {
  return std::make_unique<NcclFactory>(ranks);
}

}  // namespace megamoe::cuda
