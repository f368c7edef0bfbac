// Max calibration of the routed experts' activations, for NVFP4 input_scale:
// the model runs each window of token ids, and at every MoE layer the tokens
// routed to expert e give amax_in[e] = max |x| over their MoE inputs (w1 and w3
// read the same input, so they share it, as ModelOpt fuses them) and
// amax_hidden[e] = max |h| over their clamped-SwiGLU hidden before w2.
//
// h is the hidden WITHOUT the routing weight: our W4A4 quantizes the w2 input
// the way Blackwell deployments do, with the routing weight applied after w2
// (docs/w4a4-routing-order.md). (ModelOpt's DeepSeek-V4 ptq.py calibrated the
// router-weighted hidden of the reference forward instead.)
// Experts that no token reached take the largest amax of the layer's calibrated
// experts, ModelOpt ptq.py's fallback.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.hpp"
#include "core/checkpoint.hpp"

namespace megamoe {

struct LayerActivationAmax {
  std::vector<float> input;   // [E] amax of the w1/w3 input
  std::vector<float> hidden;  // [E] amax of the w2 input
  std::vector<int64_t> tokens;  // [E] routed tokens seen (0: the fallback was used)
};

// One entry per decoder layer: the model runs from ckpt.dir() on `device`, the
// router and experts are read from `ckpt` in fp32. Throws when a layer routed
// no token at all.
std::vector<LayerActivationAmax> calibrate_expert_activations(const Checkpoint& ckpt,
                                                              std::span<const std::vector<int32_t>> windows,
                                                              DeviceKind device);

}  // namespace megamoe
