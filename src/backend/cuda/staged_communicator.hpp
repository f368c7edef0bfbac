// Collectives between CUDA ranks that share one device (NCCL refuses two
// ranks on a device): every collective copies the rank's device buffer to
// pinned host memory on the rank's stream, waits for it, combines through a
// ThreadCommunicator (the CPU's: sums in rank order, bit-identical on every
// rank) and copies the result back. It lets N-rank runs be tested on one GPU
// (docs/parallel.md, "Several ranks on one GPU"); it is not for speed, and a
// CUDA graph cannot capture it (it waits on the host): graph_capturable() is
// false, so such backends run their decode steps eagerly, and a collective
// issued while the stream is capturing throws saying so.
#pragma once

#include <cstdint>
#include <memory>

#include "backend/backend.hpp"

namespace megamoe::cuda {

// The ranks of one process on one device: connect(r, device) on rank r's thread.
std::unique_ptr<CommunicatorFactory> make_staged_communicator_factory(int64_t ranks);

}  // namespace megamoe::cuda
