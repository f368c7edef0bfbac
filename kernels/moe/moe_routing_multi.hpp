// Host side of the multi-block routing for prefill sizes
// (sm90_moe_routing_multi.cu); launch_moe_route_scores / _select dispatch to it.
#pragma once

#include <cuda_runtime.h>

#include "kernels/moe/moe_params.hpp"

namespace megamoe::cuda::kernels {

// From these token counts on (kernels/moe/NOTES.md, version 9): the multi-block
// top-k and permutation, and the tensor-core scores. Measured at T = 256 with
// the CUDA-core scores: select 88 -> 15 us (Flash), while those scores took 68
// us (Flash) / 145 (Pro) against 32 / 71 for the tensor-core kernel at T = 1024
// with the same per-warp chain, hence both from 256.
inline constexpr int kMultiSelectMinTokens = 256;
inline constexpr int kMmaScoresMinTokens = 256;

// False when the environment sets MEGAMOE_MOE_ROUTING=single (read once): the
// single-block routing at every T, for A/B measurements.
bool multi_block_routing_enabled();
// Whether this call routes with the multi-block kernels.
bool moe_multi_block_routing(const MoeParams& p);
// Launches the tensor-core scores kernel and returns true where it applies.
bool launch_moe_route_scores_mma(const MoeParams& p, cudaStream_t stream);
// The top-k and permute kernels (when moe_multi_block_routing(p)).
void launch_moe_route_select_multi(const MoeParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
