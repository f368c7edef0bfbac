// Loading a DeepSeek-V4 checkpoint onto the GPU in its stored formats: BF16
// and F32 linears as stored, FP8 block-128 linears as E4M3 codes plus their
// scales (never widened), FP4 routed experts repacked for the MoE op, small
// fp32 parameters (norms, mHC, sinks, position biases) as fp32. Shapes are
// checked against the config like the CPU loader does (names and shapes come
// from the same Checkpoint::weight / get calls).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cuda/device.hpp"
#include "backend/cuda/moe/nvfp4_moe.hpp"
#include "core/checkpoint.hpp"
#include "kernels/gemm/linear_params.hpp"

namespace megamoe::cuda {

struct DeviceLinear {
  kernels::LinearWeight view;  // what the kernel reads
  DeviceBuffer w, scale;
};

struct DeviceCompressor {
  int rate = 0, width = 0;
  bool overlap = false;
  DeviceLinear kv, gate;
  DeviceBuffer position_bias;  // [m, c d] fp32
  DeviceBuffer norm;           // [d] fp32
};

struct DeviceHc {
  DeviceBuffer fn, base, scale;  // fp32
};

// The dense-expert MoE fallback (any widths; experts in fp32 on the device).
struct DenseMoeWeights {
  DeviceBuffer gate, bias, tid2eid, w1, w3, w2, shared_w1, shared_w3, shared_w2;
};

struct DeviceLayer {
  AttentionType type = AttentionType::kSliding;
  DeviceHc attn_hc, ffn_hc;
  DeviceBuffer input_norm, post_attention_norm, q_a_norm, kv_norm, sinks;
  DeviceLinear q_a, q_b, kv, o_a, o_b;
  std::optional<DeviceCompressor> compressor, indexer;
  DeviceLinear indexer_q_b, indexer_weights;
  std::unique_ptr<MoeLayer> moe;         // FP4 experts at supported widths
  std::unique_ptr<DenseMoeWeights> dense_moe;  // otherwise (sharded: this rank's experts and shared slice)
  bool hashed = false;
};

struct DeviceModel {
  DeviceLinear embed, lm_head;
  DeviceHc hc_head;
  DeviceBuffer norm;
  std::vector<DeviceLayer> layers;
  double bytes = 0;  // uploaded weight bytes
};

// Uploads every weight the config needs; max_tokens sizes the MoE workspaces.
// Throws naming the bytes needed and free before copying when it cannot fit.
// W4A4 (moe_activations) sets up the FP4 MoE op's NVFP4-activation mode with
// the checkpoint's input_scale; it throws for experts that are not NVFP4 or
// that would run on the dense fallback (which has no W4A4 mode).
// shard: load only that rank's part (parallel/shard.hpp), as the CPU loader
// computes it: its heads' q_b rows and sinks, its o_a groups and o_b columns,
// its routed experts, its shared-expert slice and lm_head vocabulary rows, all
// in their stored formats (FP8 block-128 slices on whole scale tiles, else an
// error naming the tensor); everything else whole.
DeviceModel load_device_model(const Checkpoint& checkpoint, int64_t max_tokens, bool progress,
                              MoeActivationFormat moe_activations = MoeActivationFormat::kW4A16,
                              const ShardSpec& shard = {});

}  // namespace megamoe::cuda
