// CPU reference of the DeepSeek-V4 MoE block (dsv4-architecture.md §5.6) with
// the official reference numerics (§10): router logits and sqrtsoftplus in
// fp32, top-k on the biased scores (or tid2eid for hash layers), weights from
// the unbiased scores normalised to sum 1 then times routed_scaling_factor,
// experts as clamped SwiGLU (gate clamped above at swiglu_limit, up clamped to
// [-limit, limit]), the routing weight applied before w2 (W4A4: after w2, see
// MoeOptions::activations_nvfp4), and routed + shared accumulated in fp32.
//
// Top-k tie rule: between equal biased scores the lower expert index wins.
// Weights are dequantized fp32 (the CPU oracle; the GPU path reads FP4).
// Expert weights can be given as whole [E, ...] arrays or produced on demand by
// a callback (so a full-size layer need not be dequantized at once).
// Tested by tests/cpu/test_moe_reference.cpp; the oracle of the GPU MoE tests.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/model_config.hpp"

namespace megamoe::cpu {

struct MoeDims {
  int64_t hidden = 0;               // D
  int64_t intermediate = 0;         // I, width of one routed expert
  int64_t n_experts = 0;            // E
  int64_t top_k = 0;                // k
  int64_t shared_intermediate = 0;  // I_s = n_shared * I; 0 = no shared expert
  float routed_scaling_factor = 1.0f;
  float swiglu_limit = 10.0f;  // <= 0 disables the clamp
};

// One routed expert's fp32 weights: w1/w3 [I, D] row-major, w2 [D, I].
struct ExpertWeightsView {
  std::span<const float> w1, w3, w2;
};

struct MoeWeights {
  MoeDims dims;
  std::span<const float> gate;       // [E, D] router weight (fp32 values)
  std::span<const float> bias;       // [E] selection bias, or empty
  std::span<const int32_t> tid2eid;  // [V, k] hash routing table, or empty (learned routing)
  // Routed experts, either all of them:
  std::span<const float> w1, w3;  // [E, I, D]
  std::span<const float> w2;      // [E, D, I]
  // ... or (when w1 is empty) this callback fills the three [I,D]/[I,D]/[D,I]
  // vectors of expert e. It may be called from several threads at once.
  std::function<void(int64_t e, std::vector<float>& w1, std::vector<float>& w3, std::vector<float>& w2)>
      load_expert;
  // Shared expert (empty when dims.shared_intermediate == 0).
  std::span<const float> shared_w1, shared_w3;  // [I_s, D]
  std::span<const float> shared_w2;             // [D, I_s]
  // W4A4 only (MoeOptions::activations_nvfp4): static activation global scales
  // (a checkpoint's `input_scale`, the multiplier = calibrated amax / 2688) of
  // each routed expert's w1/w3 input and w2 input, [E] each; empty = dynamic
  // (max |activation| / 2688 over the whole tensor of this forward).
  std::span<const float> input_scale_w13, input_scale_w2;
};

// Knobs that let GPU tests reproduce the GPU's roundings exactly. All false is
// the plain fp32 reference.
struct MoeOptions {
  bool round_input_bf16 = false;       // x -> bf16 before the router and the experts
  bool round_hidden_bf16 = false;      // SwiGLU output h -> bf16 before w2 (the reference's cast)
  bool round_output_bf16 = false;      // y -> bf16 at the end
  // W4A4: the routed experts' inputs (x before w1/w3, the SwiGLU output h
  // before w2) are NVFP4 fake-quantized with the host quantizer
  // (block_quant.hpp, per-16 dynamic E4M3 block scales, global scale from
  // MoeWeights::input_scale_* or dynamic), matching NVFP4 x NVFP4 GEMMs. The
  // routing weight then follows the Blackwell deployments, not the reference:
  // h is quantized unweighted and the weight multiplies w2's output row
  // (docs/w4a4-routing-order.md). The shared expert keeps its inputs. An
  // all-zero tensor quantizes to zeros.
  bool activations_nvfp4 = false;
};

struct Routing {
  int64_t tokens = 0, top_k = 0;
  std::vector<int32_t> experts;  // [T, k] selected expert ids, in selection order
  std::vector<float> weights;    // [T, k] routing weights (normalised, times routed_scaling_factor)
};

// Router only. x [T, D]; token_ids [T] (needed only for hash routing).
// Throws on inconsistent shapes or an out-of-range token id / tid2eid entry.
Routing moe_route(const MoeWeights& weights, std::span<const float> x, std::span<const int32_t> token_ids,
                  int64_t tokens, const MoeOptions& options = {});

// y [T, D] = MoE(x). token_ids may be empty for learned routing.
void moe_forward(const MoeWeights& weights, std::span<const float> x, std::span<const int32_t> token_ids,
                 int64_t tokens, std::span<float> y, const MoeOptions& options = {});

// Same, with routing already decided (e.g. by the GPU) so that a test can
// compare the expert math alone. routing.experts/weights are [T, k]; an
// expert id of -1 drops its slot (expert parallel: another rank holds it).
void moe_forward_routed(const MoeWeights& weights, std::span<const float> x, const Routing& routing,
                        std::span<float> y, const MoeOptions& options = {});

// The MoE dimensions of a model config (the whole shared expert).
MoeDims moe_dims(const ModelConfig& config);

// h[I] = weight · clamped_swiglu(W1·x, W3·x) for one token x [D] and one
// expert (w1, w3 [I, D]), rounded to bf16 when asked (the reference's cast
// before w2). Also used by expert calibration (runtime/expert_calibration.cpp).
void expert_hidden(std::span<const float> w1, std::span<const float> w3, int64_t D, int64_t I, const float* x,
                   float weight, float limit, bool round_hidden, float* h);

// Helpers shared with the tests.
float sqrt_softplus(float logit);      // sqrt(log1p(exp(g))) computed stably in fp32
float round_to_bf16(float value);      // round-to-nearest-even to bf16, returned as fp32

}  // namespace megamoe::cpu
