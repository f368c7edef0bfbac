// Load-time repacking of 4-bit routed experts (and the bf16 shared expert)
// into the tensor-core fragment layout the MoE kernels read (the layout is
// specified in kernels/moe/moe_params.hpp, "Repacked layouts"). Host code,
// multithreaded over experts; exact: every weight keeps its value
// e2m1 * block_scale * global_scale, only the bookkeeping of the scale moves
// (the block scale becomes a bf16-exponent byte relative to the expert
// matrix's largest block scale, the rest goes into an fp32 epilogue factor).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/moe/moe_params.hpp"

namespace megamoe::cuda {

struct RepackedMatrix {
  std::vector<uint32_t> codes;   // [E][N/16][K/64][32 lanes][4 words]
  std::vector<uint16_t> scales;  // [E][N/16][K/64][32 lanes] (lo byte row g, hi byte row g+8)
  std::vector<float> epilogue;   // [E] global scale * 2^(q_max - 1)
};

// q: [E, N, K/2] packed E2M1 (low nibble = even k); s: [E, N, K/G] E4M3
// (G=16) or E8M0 (G=32); global: [E] (NVFP4) or empty (MXFP4). Throws
// megamoe::Error naming `name` for a NaN block scale, or (MXFP4) block scales
// of one expert matrix spanning more than 2^30.
RepackedMatrix repack_fp4_matrix(std::span<const uint8_t> q, std::span<const uint8_t> s, std::span<const float> global,
                                 int experts, int rows, int cols, kernels::ExpertFormat format, const std::string& name);

// bf16 [N, K] -> [N/16][K/64][4 k-steps][32 lanes][4 words] (one mma A fragment per lane and k-step).
std::vector<uint32_t> repack_bf16_matrix(std::span<const uint16_t> w, int rows, int cols);

}  // namespace megamoe::cuda
