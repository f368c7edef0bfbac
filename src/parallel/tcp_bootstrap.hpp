// Bootstrap of a communicator over several processes (one per host): rank 0
// publishes a small blob (NCCL's ncclUniqueId) and every other rank fetches
// it over TCP from MASTER_ADDR:MASTER_PORT, the variables torchrun and most
// launchers set. Every wait is bounded: an unreachable master, a rank that
// never joins or a peer that stops talking end in an Error, never a hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace megamoe {

struct BootstrapEnv {
  int64_t rank = 0;        // RANK: this process's rank, [0, world_size)
  int64_t world_size = 1;  // WORLD_SIZE
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR: host name or address of rank 0
  int port = 29500;                       // MASTER_PORT
};

// RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment. WORLD_SIZE
// unset means one process (rank 0 of 1); a malformed or out-of-range value
// throws naming the variable.
BootstrapEnv bootstrap_env_from_environment();

// Rank 0 serves `blob` to the world_size - 1 other ranks and returns it; the
// others connect (retrying while the master is not up yet) and return the
// blob rank 0 sent. Throws when the exchange does not finish within `timeout`.
std::vector<uint8_t> exchange_bootstrap_blob(const BootstrapEnv& env, const std::vector<uint8_t>& blob,
                                             std::chrono::milliseconds timeout);

}  // namespace megamoe
