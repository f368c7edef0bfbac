// NCCL communicators for sharded CUDA backends (docs/parallel.md). The
// collectives are issued on the calling backend's stream, so a decode step's
// CUDA graph captures them. One host: one process, a thread per device, one
// unique id shared in-process; several hosts: rank 0 publishes the id over
// TCP (parallel/tcp_bootstrap.hpp) and every process connects its ranks.
// NCCL's ring and tree all-reduce compute each element once and then copy it,
// so every rank holds bit-identical sums (what identical sampling needs).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.hpp"

namespace megamoe::cuda {

// ncclGetUniqueId's bytes (rank 0 of a job makes it once).
std::vector<uint8_t> nccl_unique_id();

// Rank `rank` of `world` on `device` (set on the calling thread), from the
// shared id; blocks until every rank has connected (ncclCommInitRank).
std::shared_ptr<Communicator> connect_nccl(const std::vector<uint8_t>& unique_id, int64_t rank, int64_t world,
                                           int device);

// The ranks of one process: one id, connect(r, device) on rank r's thread.
std::unique_ptr<CommunicatorFactory> make_nccl_communicator_factory(int64_t ranks);

}  // namespace megamoe::cuda
