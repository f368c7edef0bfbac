// TEMPORARY placeholder (being replaced by the WGMMA prefill kernel): forwards
// to the WMMA path so that the build and the tests link meanwhile.
#include "kernels/moe/moe_params.hpp"

namespace megamoe::cuda::kernels {

int moe_wgmma_tile_m() { return moe_mma_tile_m(); }

void launch_moe_wgmma_gemm(const MoeParams& p, int gemm, cudaStream_t stream) { launch_moe_mma_gemm(p, gemm, stream); }

}  // namespace megamoe::cuda::kernels
