// Device-side interface of the fused NVFP4/MXFP4 MoE kernels (sm_90a). Plain
// C++ (no engine headers): one params struct, each pointer commented with its
// logical shape and dtype, and the launch functions the host launcher in
// src/backend/cuda/moe/ calls. Everything is sized for max_tokens at load time,
// so a forward allocates nothing and never synchronises with the host.
//
// Vocabulary: a "pair" p is one (token, slot) row of work. Routed pairs are
// p = t*k + j (token t, slot j < k); shared-expert pairs are p = T*k + t.
// Pairs are sorted by expert (the shared expert is pseudo-expert E) into
// perm_pairs, and cut into tiles of at most `tile_m` pairs of one expert.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace megamoe::cuda::kernels {

enum class ExpertFormat : int { kNvfp4 = 0, kMxfp4 = 1 };

struct MoeParams {
  // ---- shapes ----
  int hidden = 0;        // D
  int intermediate = 0;  // I
  int shared_inter = 0;  // I_s (0 = no shared expert)
  int experts = 0;       // E (routing is always over all E)
  // Expert parallel (docs/parallel.md): this call holds and computes only the
  // routed experts [expert_begin, expert_begin + local_experts); pairs routed
  // to other experts are not permuted, tiled or combined (their rank adds
  // them in the model's all-reduce). local_experts = 0: all E (unsharded).
  // Ids stay global everywhere (topk_ids, tile_expert, act_scale); only the
  // weight arrays (w*, s*, g*) are indexed by e - expert_begin.
  int expert_begin = 0;
  int local_experts = 0;
  int top_k = 0;         // k
  int tokens = 0;        // T (this call)
  int vocab = 0;         // V rows of tid2eid (hash layers)
  int tile_m = 0;        // pairs per tile (moe_gemv_tile_m() / moe_wgmma_tile_m())
  int max_tiles = 0;     // capacity of the tile arrays
  float routed_scaling = 1.0f;
  float swiglu_limit = 10.0f;  // <= 0: no clamp
  ExpertFormat format = ExpertFormat::kNvfp4;

  // ---- router ----
  const uint16_t* gate = nullptr;    // [E, D] bf16
  const float* bias = nullptr;       // [E] fp32 or null
  const int32_t* tid2eid = nullptr;  // [V, k] int32 or null (learned routing)
  const int32_t* token_ids = nullptr;  // [T] int32 (hash routing)

  // ---- routed experts, repacked at load (see "Repacked layouts" below) ----
  // (E = the local experts' count when local_experts > 0)
  const uint32_t* w1 = nullptr;  // [E][I/16][D/64][32][4] E2M1 fragments (gate)
  const uint32_t* w3 = nullptr;  // [E][I/16][D/64][32][4] (up)
  const uint32_t* w2 = nullptr;  // [E][D/16][I/64][32][4] (down)
  const uint16_t* s1 = nullptr;  // [E][I/16][D/64][32] scale exponent bytes (rows g, g+8)
  const uint16_t* s3 = nullptr;
  const uint16_t* s2 = nullptr;
  const float* g1 = nullptr;     // [E] fp32 epilogue factor (global scale * 2^(q_max-1))
  const float* g3 = nullptr;
  const float* g2 = nullptr;

  // ---- shared expert (bf16): natural [rows, K] for the prefill path, fragment order for decode ----
  const uint16_t* sw1 = nullptr;  // [I_s, D] bf16
  const uint16_t* sw3 = nullptr;  // [I_s, D] bf16
  const uint16_t* sw2 = nullptr;  // [D, I_s] bf16
  const uint32_t* sf1 = nullptr;  // [I_s/16][D/64][4][32][4] bf16x2 fragments
  const uint32_t* sf3 = nullptr;
  const uint32_t* sf2 = nullptr;  // [D/16][I_s/64][4][32][4]

  // ---- activations and workspace ----
  const uint16_t* x = nullptr;     // [T, D] bf16 input
  float* scores = nullptr;         // [T, E] fp32 sqrtsoftplus router scores
  int32_t* topk_ids = nullptr;     // [T, k] selected experts
  float* topk_w = nullptr;         // [T, k] routing weights
  int32_t* perm_pairs = nullptr;   // [T*(k+1)] pairs sorted by expert
  int32_t* tile_expert = nullptr;  // [max_tiles] expert of each tile (E = shared)
  int32_t* tile_begin = nullptr;   // [max_tiles] first index into perm_pairs
  int32_t* tile_count = nullptr;   // [max_tiles] pairs in the tile (1..tile_m)
  int32_t* n_tiles = nullptr;      // [1]
  uint16_t* h = nullptr;           // [T*(k+1), max(I, I_s)] bf16 SwiGLU output (weighted unless weight_after_gemm2)
  float* rows = nullptr;           // [T*(k+1), D] fp32 per-pair expert outputs
  uint16_t* y = nullptr;           // [T, D] bf16 output (may be null)
  float* y_f32 = nullptr;          // [T, D] fp32 output (may be null)
  int32_t* error_flag = nullptr;   // [1] set to 1 by a bad token id / tid2eid entry (sticky)
  int32_t* route_counts = nullptr;  // [2 (E+1)] multi-block routing (prefill sizes): expert counts, then the
                                    // scatter's fill counters; zeroed by the scores kernel of each forward

  // ---- W4A4 mode (both null = W4A16, the default) ----
  // Routed activations NVFP4-quantized before each GEMM (kernels/moe/sm90_moe_act_quant.cu):
  // GEMM1's routed tiles read pair p's row of xq instead of x's token row;
  // GEMM2's routed rows of h are quantized in place. Both hold e2m1 x E4M3
  // block scale as bf16 (exact); the activation global scale s2 (the
  // multiplier, = input_scale) is applied to the fp32 accumulators of a
  // routed tile of expert e: GEMM1 x act_scale[e], GEMM2 x act_scale[E + e].
  // The shared expert stays W4A16 (its weights are not 4-bit).
  const uint16_t* xq = nullptr;      // [T*k, D] bf16 (W4A4) or null
  const float* act_scale = nullptr;  // [2, E] fp32 (W4A4) or null
  // Where the routing weight goes. false (W4A16, the DeepSeek reference):
  // GEMM1's epilogue writes h = weight x SwiGLU. true (W4A4, the Blackwell
  // deployments' order, docs/w4a4-routing-order.md): h is the unweighted
  // SwiGLU (so w2's input_scale quantizes what it was meant for) and the
  // combine multiplies each routed GEMM2 row by its weight, as TensorRT-LLM's
  // finalizeMoeRoutingKernel does.
  bool weight_after_gemm2 = false;
};

// Expert parallel: whether pairs of expert e are computed by this call.
__host__ __device__ inline bool moe_expert_is_local(const MoeParams& p, int e) {
  return p.local_experts == 0 || (e >= p.expert_begin && e < p.expert_begin + p.local_experts);
}
// The index of a local expert e into the weight arrays.
__host__ __device__ inline int moe_local_expert(const MoeParams& p, int e) { return e - p.expert_begin; }

// Repacked layouts (src/backend/cuda/moe/moe_repack.cpp writes them). mma.sync
// m16n8k16 with the weight rows as A: lane = 4*g + t holds rows g and g+8 of a
// 16-row tile. Within each 64-wide K chunk, k-step j of lane t covers the
// physical columns k0 = 16t + 4j .. k0+3 (a permutation of K applied to A and
// B alike, so that a lane's B values for 4 k-steps are 16 contiguous bf16 and
// its block scale is one 16-column group). 4-bit word j of a lane: nibble i is
// the low half of fragment register a_i, nibble i+4 its high half (a0 = row g
// cols k0,k0+1; a1 = row g+8 same cols; a2 = row g cols k0+2,k0+3; a3 = row
// g+8). The scale byte is E'<<3 | m: the bf16 with exponent field 224+E' and
// mantissa m<<4, i.e. block_scale * 2^(126 - c) for the matrix's shift c; the
// decoded fragment (E2M1 bits placed as a bf16, = value * 2^-126) times it is
// exact, and g* = global * 2^c is applied to the fp32 result. Zero scales
// zero their codes, negative scales flip the codes' signs.

// Pairs per tile each path expects in MoeParams::tile_m.
int moe_gemv_tile_m();
int moe_wgmma_tile_m();

// One launch per stage, in this order; all enqueue on `stream` and return immediately.
void launch_moe_route_scores(const MoeParams& p, cudaStream_t stream);  // router scores
void launch_moe_route_select(const MoeParams& p, cudaStream_t stream);  // top-k / hash, permutation, tiles
// gemm 1 = GEMM1 + clamped SwiGLU (x routing weight in W4A16), gemm 2 = GEMM2; decode (gemv) or prefill (wgmma) path.
void launch_moe_gemv_gemm(const MoeParams& p, int gemm, cudaStream_t stream);
void launch_moe_wgmma_gemm(const MoeParams& p, int gemm, cudaStream_t stream);  // prefill, WGMMA (sm_90a)
void launch_moe_combine(const MoeParams& p, cudaStream_t stream);  // y = sum of routed rows + shared row

// W4A4 mode, before GEMM `gemm`: NVFP4-quantizes the routed activations (x into
// p.xq, or h in place). dynamic: s2 = max|a|/2688, written to act_scale[(gemm-1)*E ..];
// else act_scale holds the static per-expert scales. amax_partials: kMoeActAmaxPartials uint32.
inline constexpr int kMoeActAmaxPartials = 1024;
void launch_moe_act_quant(const MoeParams& p, int gemm, float* act_scale, uint32_t* amax_partials, bool dynamic,
                          cudaStream_t stream);

}  // namespace megamoe::cuda::kernels
