// Collectives between the ranks of a sharded model. A backend issues them as
// ops on its own stream (so a CUDA graph captures them with the step), on
// buffers in its own memory: host memory for the CPU's ThreadCommunicator,
// device memory for NCCL (src/backend/cuda/nccl_communicator.hpp) and for the
// host-staged communicator of ranks sharing one device (staged_communicator.hpp).
// Every rank must call the same collectives in the same order.
#pragma once

#include <cstddef>
#include <cstdint>

namespace megamoe {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  // data[count] (fp32) = the element-wise sum over ranks, in place. Every rank
  // ends with bit-identical values. stream: the caller's cudaStream_t, or
  // nullptr on the CPU.
  virtual void all_reduce_sum(float* data, size_t count, void* stream) = 0;
  // recv[size() * count] = every rank's send[count], in rank order.
  virtual void all_gather(const float* send, float* recv, size_t count, void* stream) = 0;
  // Wakes every rank blocked in (or later entering) a collective with an
  // error: a rank that failed mid-step calls it so the others do not wait forever.
  virtual void abort() = 0;
  // Whether a CUDA graph can capture the collectives with the step (NCCL's
  // can; the host-staged one of several ranks on one device waits on the host).
  virtual bool graph_capturable() const { return true; }
};

}  // namespace megamoe
