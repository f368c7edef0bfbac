// Collectives between N rank threads of one process over host memory: the
// CPU backend's communicator, so CI runs the sharded forward without GPUs.
// Each collective is two barriers: ranks publish their buffers, every rank
// reads all of them (sums in rank order, so every rank computes the same
// additions and holds bit-identical results), and the second barrier keeps
// the buffers alive until everyone has read them.
#pragma once

#include <memory>
#include <vector>

#include "parallel/communicator.hpp"

namespace megamoe {

// One communicator per rank, sharing one group; hand communicator r to rank r's thread.
std::vector<std::shared_ptr<Communicator>> make_thread_communicators(int64_t ranks);

}  // namespace megamoe
