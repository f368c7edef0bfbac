// Host side of the fused NVFP4/MXFP4 MoE forward on sm_90a (issue 5): uploads
// one layer's weights once, repacked into the tensor-core fragment layout
// (moe_repack.hpp; the bf16 shared expert is kept in both its natural and its
// fragment order), allocates
// every workspace for max_tokens at construction, and runs a forward as five
// launches on one stream with no allocation and no host synchronisation
// (CUDA-graph capturable):
//   router scores -> top-k/hash + permutation + tiles -> GEMM1+SwiGLU -> GEMM2 -> combine.
// Decode sizes use the GEMV path, prefill sizes the tensor-core path
// (kernels/moe/NOTES.md). Tested by tests/kernels/test_sm90_nvfp4_moe.cpp.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "backend/cuda/device.hpp"
#include "backend/cuda/moe/shared_fp8.hpp"
#include "kernels/moe/moe_params.hpp"

namespace megamoe::cuda {

using kernels::ExpertFormat;

struct MoeLayerConfig {
  int hidden = 0;        // D, multiple of 64
  int intermediate = 0;  // I, multiple of 64
  int shared_inter = 0;  // I_s (multiple of 64), 0 = no shared expert
  int experts = 0;       // E <= 1024 (the router's width)
  int top_k = 0;         // k <= min(32, E)
  int max_tokens = 0;    // largest T of any forward (sizes the workspace)
  float routed_scaling = 1.0f;
  float swiglu_limit = 10.0f;
  ExpertFormat format = ExpertFormat::kNvfp4;
  // W4A4: quantize the routed experts' activations to NVFP4 before each GEMM
  // (NVFP4 x NVFP4 math, parity with Blackwell deployments; NVFP4 experts
  // only). Default false: W4A16, bf16 activations.
  bool w4a4 = false;
  // Expert parallel (docs/parallel.md): this layer holds and computes the
  // routed experts [expert_begin, expert_begin + local_experts) only; routing
  // stays over all E (the same top-k as unsharded) and the combine sums the
  // local experts' rows plus the (sliced) shared expert. 0 = all E.
  // (Last, so positional initialisers of the fields above stay valid.)
  int expert_begin = 0;
  int local_experts = 0;
};

// Host copies of the layer's tensors in their checkpoint formats. The routed
// experts' arrays (w*, s*, g*, input_scale_*) hold the local experts only when
// MoeLayerConfig::local_experts > 0 ("E" below is then that count); the
// router (gate, bias, tid2eid) always covers all E.
struct MoeHostWeights {
  std::span<const uint16_t> gate;     // [E, D] bf16 bits
  std::span<const float> bias;        // [E] or empty
  std::span<const int32_t> tid2eid;   // [V, k] or empty (learned routing)
  std::span<const uint8_t> w1, w3;    // [E, I, D/2] packed E2M1
  std::span<const uint8_t> w2;        // [E, D, I/2]
  std::span<const uint8_t> s1, s3;    // [E, I, D/G] E4M3 (G=16) or E8M0 (G=32)
  std::span<const uint8_t> s2;        // [E, D, I/G]
  std::span<const float> g1, g3, g2;  // [E] global scales (NVFP4); empty for MXFP4
  std::span<const uint16_t> shared_w1, shared_w3;  // [I_s, D] bf16 bits
  std::span<const uint16_t> shared_w2;             // [D, I_s] bf16 bits
  // Or an FP8 block-128 shared expert (all three set, shared_w* then empty):
  // converted to bf16 at load (shared_fp8.hpp: exact for E8M0 scales).
  Fp8BlockMatrix shared_fp8_w1, shared_fp8_w3;  // [I_s, D]
  Fp8BlockMatrix shared_fp8_w2;                 // [D, I_s]
  // W4A4: the checkpoint's static activation global scales (`input_scale`,
  // w1/w3 share one) per routed expert, [E] each; empty = dynamic (max|a|/2688
  // of this forward's tensor). Ignored in W4A16.
  std::span<const float> input_scale_w13, input_scale_w2;
};

// kGemv: tensor-core GEMV (decode sizes); kWgmma: WGMMA tiles (prefill
// sizes). kAuto picks by T (choose_path).
enum class MoePath { kAuto, kGemv, kWgmma };

class MoeLayer {
 public:
  MoeLayer(const MoeLayerConfig& config, const MoeHostWeights& weights);

  // x [T, D] bf16 (device), token_ids [T] int32 (device; hash layers only,
  // else may be null), outputs y [T, D] bf16 and/or y_f32 [T, D] (device; one
  // may be null). Enqueues on `stream`; never synchronises or allocates.
  void forward(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y, float* y_f32,
               cudaStream_t stream, MoePath path = MoePath::kAuto) const;

  // forward() with an event recorded before the first launch and after each of
  // the five stages: router scores, select+permute, GEMM1, GEMM2, combine
  // (events[0..5]; in W4A4 a GEMM's stage includes its activation quantization);
  // the bench's per-stage breakdown.
  static constexpr int kStageCount = 5;
  void forward_with_stage_events(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y, float* y_f32,
                                 cudaStream_t stream, MoePath path, cudaEvent_t const (&events)[kStageCount + 1]) const;

  // Reads and clears the sticky device error flag (set by a token id or
  // tid2eid entry out of range). Synchronises the stream: not for the hot path.
  bool take_error_flag(cudaStream_t stream) const;

  // The path and tile shape a forward of `tokens` uses, e.g. "gemv(tile_m=4)".
  std::string describe_path(int tokens, MoePath path = MoePath::kAuto) const;
  MoePath choose_path(int tokens, MoePath path) const;

  const MoeLayerConfig& config() const { return config_; }
  // Device views of the last forward's routing ([T, k]), for tests.
  const int32_t* topk_ids() const { return topk_ids_.as<int32_t>(); }
  const float* topk_weights() const { return topk_w_.as<float>(); }
  // Bytes of routed-expert weights+scales one expert holds (all three matrices).
  size_t expert_bytes() const;
  size_t shared_bytes() const;

 private:
  void run_stages(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y, float* y_f32,
                  cudaStream_t stream, MoePath path, const cudaEvent_t* events) const;
  kernels::MoeParams params(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y, float* y_f32,
                            MoePath path) const;

  MoeLayerConfig config_;
  int vocab_ = 0;
  bool has_bias_ = false, hashed_ = false;
  DeviceBuffer gate_, bias_, tid2eid_, w1_, w3_, w2_, s1_, s3_, s2_, g1_, g3_, g2_, sw1_, sw3_, sw2_, sf1_, sf3_, sf2_;
  DeviceBuffer scores_, topk_ids_, topk_w_, perm_, tile_expert_, tile_begin_, tile_count_, n_tiles_, h_, rows_,
      error_flag_, route_counts_;
  // W4A4 only: quantized routed x rows, [2, E] activation scales, amax partials.
  bool dynamic_scale13_ = false, dynamic_scale2_ = false;
  DeviceBuffer xq_, act_scale_, amax_partials_;
};

}  // namespace megamoe::cuda
