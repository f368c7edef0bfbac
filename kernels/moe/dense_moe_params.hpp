// Device interface of the dense-expert MoE (any D, I, E, k; fp32 weights):
// the CUDA path for checkpoints whose routed experts are not FP4 or whose
// widths the FP4 op does not support (the tiny test checkpoints). Same
// numerics as the CPU reference cpu::moe_forward (src/backend/cpu/moe.hpp)
// with MoeOptions{} (no roundings): fp32 router logits x . gate, scores
// sqrtsoftplus, top-k on scores + bias (ties: lower expert id) or tid2eid for
// hash layers, weights = scores of the chosen normalised to sum 1 times
// routed_scaling; each expert: h = weight * clampedSwiGLU(W1 x, W3 x) (gate
// clamped above at limit, up to [-limit, limit]; limit <= 0: no clamp),
// y += W2 h; plus the shared expert (weight 1). Deterministic: one block per
// token, experts accumulated in selection order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

struct DenseMoeParams {
  int tokens = 0, hidden = 0, intermediate = 0, experts = 0, top_k = 0, shared_inter = 0, vocab = 0;
  float routed_scaling = 1.0f, swiglu_limit = 10.0f;
  // Expert parallel (docs/parallel.md): routing over all `experts`, but only
  // the chosen experts in [expert_begin, expert_begin + local_experts) are
  // computed and summed (w1/w3/w2 hold just those); local_experts = 0: all.
  // shared_inter is then this rank's slice of the shared expert.
  int expert_begin = 0;
  int local_experts = 0;
  const float* x = nullptr;          // [T, D]
  const int32_t* token_ids = nullptr;  // [T] (hash routing)
  const float* gate = nullptr;       // [E, D]
  const float* bias = nullptr;       // [E] or null
  const int32_t* tid2eid = nullptr;  // [V, k] or null (learned routing)
  const float* w1 = nullptr;         // [E, I, D] (E = local_experts when set)
  const float* w3 = nullptr;         // [E, I, D]
  const float* w2 = nullptr;         // [E, D, I]
  const float* shared_w1 = nullptr;  // [I_s, D] or null
  const float* shared_w3 = nullptr;  // [I_s, D]
  const float* shared_w2 = nullptr;  // [D, I_s]
  float* y = nullptr;                // [T, D] out
  int32_t* error_flag = nullptr;     // [1]: set to 1 for a token id or tid2eid entry out of range
};

void launch_dense_moe(const DenseMoeParams& p, cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
