#include "runtime/expert_calibration.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "backend/cpu/load.hpp"
#include "backend/cpu/moe.hpp"
#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "model/deepseek_v4/model.hpp"

namespace megamoe {
namespace {

// The router of one layer in fp32 (what cpu::moe_route needs).
struct LayerRouter {
  Tensor gate, bias;
  std::vector<int32_t> tid2eid;
  cpu::MoeWeights weights;
};

LayerRouter load_router(const Checkpoint& ckpt, int64_t layer) {
  const ModelConfig& c = ckpt.config();
  const std::string prefix = "model.layers." + std::to_string(layer) + ".mlp.";
  LayerRouter r;
  r.gate = cpu::dequantize_weight(ckpt.weight(prefix + "gate", c.n_routed_experts, c.hidden_size));
  if (c.mlp_types.at(layer) == MlpType::kHashMoe) {
    r.tid2eid = cpu::to_index_table(ckpt.get(prefix + "gate.tid2eid", {c.vocab_size, c.num_experts_per_tok}),
                                    c.n_routed_experts);
  } else {
    r.bias = cpu::to_f32(ckpt.get(prefix + "gate.e_score_correction_bias", {c.n_routed_experts}));
  }
  r.weights.dims = cpu::moe_dims(c);
  r.weights.dims.shared_intermediate = 0;  // routing reads no shared expert (it is not quantized)
  r.weights.gate = {r.gate.data<float>(), static_cast<size_t>(r.gate.numel())};
  if (!r.bias.empty()) r.weights.bias = {r.bias.data<float>(), static_cast<size_t>(r.bias.numel())};
  r.weights.tid2eid = r.tid2eid;
  // Routing reads only the router; the experts are read here, one at a time.
  r.weights.load_expert = [](int64_t, std::vector<float>&, std::vector<float>&, std::vector<float>&) {
    MEGAMOE_THROW("calibration: the router does not load experts");
  };
  return r;
}

// Updates one layer's amaxes from its MoE input x [T, D] of one window.
void observe_layer(const Checkpoint& ckpt, int64_t layer, const LayerRouter& router, std::span<const float> x,
                   std::span<const int32_t> ids, LayerActivationAmax& amax) {
  const ModelConfig& c = ckpt.config();
  const int64_t tokens = static_cast<int64_t>(ids.size()), d = c.hidden_size, inter = c.moe_intermediate_size;
  const cpu::Routing routing = cpu::moe_route(router.weights, x, ids, tokens);
  std::map<int32_t, std::vector<int64_t>> rows_of;  // expert -> its tokens
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < routing.top_k; ++j) rows_of[routing.experts[t * routing.top_k + j]].push_back(t);
  for (const auto& [e, rows] : rows_of) {
    const Tensor w1 = cpu::dequantize_weight(ckpt.expert_weight(layer, e, "gate_proj"));
    const Tensor w3 = cpu::dequantize_weight(ckpt.expert_weight(layer, e, "up_proj"));
    const std::span<const float> w1s{w1.data<float>(), static_cast<size_t>(w1.numel())};
    const std::span<const float> w3s{w3.data<float>(), static_cast<size_t>(w3.numel())};
    std::vector<float> h(static_cast<size_t>(inter));
    for (int64_t t : rows) {
      const float* xt = x.data() + t * d;
      for (int64_t i = 0; i < d; ++i) amax.input[e] = std::max(amax.input[e], std::fabs(xt[i]));
      // The reference's hidden, without the routing weight (weight 1, no bf16 rounding).
      cpu::expert_hidden(w1s, w3s, d, inter, xt, 1.0f, router.weights.dims.swiglu_limit, false, h.data());
      for (float v : h) amax.hidden[e] = std::max(amax.hidden[e], std::fabs(v));
    }
    amax.tokens[e] += static_cast<int64_t>(rows.size());
  }
}

void apply_fallback(int64_t layer, LayerActivationAmax& amax) {
  float input = 0.0f, hidden = 0.0f;
  for (size_t e = 0; e < amax.tokens.size(); ++e) {
    if (amax.tokens[e] == 0) continue;
    input = std::max(input, amax.input[e]);
    hidden = std::max(hidden, amax.hidden[e]);
  }
  MEGAMOE_CHECK(input > 0.0f && hidden > 0.0f, "calibration: no token reached any expert of layer ", layer,
                " (give more calibration text)");
  for (size_t e = 0; e < amax.tokens.size(); ++e) {
    if (amax.tokens[e] != 0) continue;
    amax.input[e] = input;
    amax.hidden[e] = hidden;
  }
}

}  // namespace

std::vector<LayerActivationAmax> calibrate_expert_activations(const Checkpoint& ckpt,
                                                              std::span<const std::vector<int32_t>> windows,
                                                              DeviceKind device) {
  MEGAMOE_CHECK(!windows.empty(), "calibration: no calibration windows");
  dsv4::ModelOptions options;
  options.device = device;
  options.backend.max_sequences = 1;
  const auto model = dsv4::Model::load(ckpt.dir(), options);
  const ModelConfig& c = ckpt.config();
  std::vector<LayerRouter> routers;
  std::vector<LayerActivationAmax> amax(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    routers.push_back(load_router(ckpt, l));
    amax[l] = {std::vector<float>(c.n_routed_experts, 0.0f), std::vector<float>(c.n_routed_experts, 0.0f),
               std::vector<int64_t>(c.n_routed_experts, 0)};
  }
  for (const std::vector<int32_t>& ids : windows) {
    MEGAMOE_CHECK(!ids.empty(), "calibration: an empty window");
    // The dump of each layer's MoE input ("layers.L.ffn_in") arrives during the
    // forward, once per chunk where a long window runs as chunked prefill.
    size_t chunk_begin = 0;
    const dsv4::DumpFn observe = [&](const std::string& name, const Shape& shape, std::span<const float> values) {
      constexpr std::string_view kSuffix = ".ffn_in";
      if (!name.starts_with("layers.") || !name.ends_with(kSuffix)) return;
      const int64_t l = std::stoll(name.substr(7, name.size() - 7 - kSuffix.size()));
      const auto rows = static_cast<size_t>(shape.at(0));
      observe_layer(ckpt, l, routers[l], values, std::span(ids).subspan(chunk_begin, rows), amax[l]);
      if (l + 1 == c.num_layers) chunk_begin += rows;
    };
    dsv4::SequenceState state = model->new_sequence();
    dsv4::ForwardOptions forward;
    forward.last_logits_only = true;
    forward.dump = &observe;
    model->forward(ids, state, forward);
  }
  for (int64_t l = 0; l < c.num_layers; ++l) apply_fallback(l, amax[l]);
  return amax;
}

}  // namespace megamoe
