// Testing hook of the lightning indexer (sm90_indexer.cu): caps the number of
// (score, index) keys one block holds in shared memory, so that the chunked
// top-k path (more visible entries than keys) runs at small entry counts. Not
// part of the engine's interface; 0 (the default) means no cap. The cap is
// rounded down to a power of two and raised above top_k where needed.
#pragma once

namespace megamoe::cuda::kernels {

void set_indexer_key_capacity_for_testing(int keys);

}  // namespace megamoe::cuda::kernels
