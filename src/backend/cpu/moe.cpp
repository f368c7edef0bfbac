#include "backend/cpu/moe.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "core/block_quant.hpp"
#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace megamoe::cpu {

float sqrt_softplus(float logit) {
  // torch.nn.functional.softplus (beta 1, threshold 20), then sqrt, in fp32.
  const float softplus = logit > 20.0f ? logit : std::log1p(std::exp(logit));
  return std::sqrt(softplus);
}

MoeDims moe_dims(const ModelConfig& config) {
  MoeDims d;
  d.hidden = config.hidden_size;
  d.intermediate = config.moe_intermediate_size;
  d.n_experts = config.n_routed_experts;
  d.top_k = config.num_experts_per_tok;
  d.shared_intermediate = config.n_shared_experts * config.moe_intermediate_size;
  d.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
  d.swiglu_limit = static_cast<float>(config.swiglu_limit);
  return d;
}

float round_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u) {  // inf stays, NaN stays NaN
    if (bits & 0x007fffffu) bits |= 0x00400000u;
  } else {
    bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  }
  bits &= 0xffff0000u;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

static float clamped_swiglu(float gate, float up, float limit) {
  if (limit > 0.0f) {
    gate = std::min(gate, limit);
    up = std::clamp(up, -limit, limit);
  }
  const float silu = gate / (1.0f + std::exp(-gate));
  return silu * up;
}

void expert_hidden(std::span<const float> w1, std::span<const float> w3, int64_t D, int64_t I, const float* x,
                   float weight, float limit, bool round_hidden, float* h) {
  for (int64_t i = 0; i < I; ++i) {
    const float* r1 = w1.data() + i * D;
    const float* r3 = w3.data() + i * D;
    float g = 0.0f, u = 0.0f;
    for (int64_t c = 0; c < D; ++c) {
      g += r1[c] * x[c];
      u += r3[c] * x[c];
    }
    const float v = clamped_swiglu(g, u, limit) * weight;
    h[i] = round_hidden ? round_to_bf16(v) : v;
  }
}

namespace {

void check_weights(const MoeWeights& w) {
  const MoeDims& d = w.dims;
  MEGAMOE_CHECK(d.hidden > 0 && d.intermediate > 0 && d.n_experts > 0, "moe: hidden, intermediate and n_experts must be > 0");
  MEGAMOE_CHECK(d.top_k > 0 && d.top_k <= d.n_experts, "moe: top_k ", d.top_k, " must be in [1, n_experts=", d.n_experts, "]");
  MEGAMOE_CHECK(d.shared_intermediate >= 0, "moe: shared_intermediate must be >= 0");
  const size_t D = d.hidden, I = d.intermediate, E = d.n_experts, Is = d.shared_intermediate;
  // Hash layers use the gate too: their weights come from the unbiased scores.
  MEGAMOE_CHECK(w.gate.size() == E * D, "moe: router gate has ", w.gate.size(), " values, expected E*D = ", E * D);
  MEGAMOE_CHECK(w.bias.empty() || w.bias.size() == E, "moe: router bias has ", w.bias.size(), " values, expected E = ", E);
  MEGAMOE_CHECK(w.tid2eid.size() % d.top_k == 0, "moe: tid2eid size ", w.tid2eid.size(), " is not a multiple of top_k");
  if (w.w1.empty()) {
    MEGAMOE_CHECK(static_cast<bool>(w.load_expert), "moe: neither expert arrays nor a load_expert callback given");
  } else {
    MEGAMOE_CHECK(w.w1.size() == E * I * D && w.w3.size() == E * I * D, "moe: w1/w3 must hold E*I*D = ", E * I * D, " values");
    MEGAMOE_CHECK(w.w2.size() == E * D * I, "moe: w2 must hold E*D*I = ", E * D * I, " values");
  }
  MEGAMOE_CHECK(w.shared_w1.size() == Is * D && w.shared_w3.size() == Is * D && w.shared_w2.size() == D * Is,
                "moe: shared expert weights must be [I_s, D], [I_s, D], [D, I_s] with I_s = ", Is);
}

// x, rounded as the options ask.
std::vector<float> prepared_input(std::span<const float> x, const MoeOptions& options) {
  std::vector<float> out(x.begin(), x.end());
  if (options.round_input_bf16)
    for (float& v : out) v = round_to_bf16(v);
  return out;
}

// out[D] += W2 · h.
void expert_down(std::span<const float> w2, int64_t D, int64_t I, const float* h, float* out) {
  for (int64_t r = 0; r < D; ++r) {
    const float* row = w2.data() + r * I;
    float acc = 0.0f;
    for (int64_t i = 0; i < I; ++i) acc += row[i] * h[i];
    out[r] += acc;
  }
}

// out[D] += W2 · (weight · swiglu(W1·x, W3·x)) for one token and one expert.
void expert_apply(std::span<const float> w1, std::span<const float> w3, std::span<const float> w2, int64_t D,
                  int64_t I, const float* x, float weight, float limit, bool round_hidden, float* out) {
  std::vector<float> h(I);
  expert_hidden(w1, w3, D, I, x, weight, limit, round_hidden, h.data());
  expert_down(w2, D, I, h.data(), out);
}

// Calls fn(e, w1, w3, w2) for every active expert, in parallel over experts,
// with the expert's fp32 weights (loaded on demand when the arrays are empty).
template <typename Fn>
void for_each_active_expert(const MoeWeights& weights, const std::vector<int64_t>& active, Fn&& fn) {
  const int64_t D = weights.dims.hidden, I = weights.dims.intermediate;
  ThreadPool::global().parallel_for(active.size(), [&](size_t begin, size_t end) {
    std::vector<float> b1, b3, b2;
    for (size_t a = begin; a < end; ++a) {
      const int64_t e = active[a];
      if (weights.w1.empty()) {
        weights.load_expert(e, b1, b3, b2);
        MEGAMOE_CHECK(b1.size() == static_cast<size_t>(I * D) && b3.size() == b1.size() && b2.size() == b1.size(),
                      "moe: load_expert(", e, ") returned wrong sizes");
        fn(e, std::span<const float>(b1), std::span<const float>(b3), std::span<const float>(b2));
      } else {
        fn(e, weights.w1.subspan(e * I * D, I * D), weights.w3.subspan(e * I * D, I * D),
           weights.w2.subspan(e * D * I, D * I));
      }
    }
  });
}

// W4A4: rows x NVFP4-quantized with global scale s2 (nullopt: from their own
// amax) and dequantized, in place. An all-zero input stays zero (the
// quantizer rejects amax 0, which has no scale).
void fake_quantize_nvfp4(float* x, int64_t rows, int64_t cols, std::optional<float> s2) {
  if (!s2 && std::all_of(x, x + rows * cols, [](float v) { return v == 0.0f; })) return;
  const Nvfp4Tensor q = quantize_nvfp4_activation(x, rows, cols, s2);
  dequantize_nvfp4(q.packed.data(), q.block_scales.data(), q.global_scale, rows, cols, x);
}

// The routed experts in W4A4 (see MoeOptions::activations_nvfp4), in the op
// order of the Blackwell NVFP4 MoE deployments (docs/w4a4-routing-order.md):
// h = swiglu(...) is quantized WITHOUT the routing weight, and the weight
// multiplies GEMM2's fp32 output row (TensorRT-LLM's finalize), so w2's
// static input_scale applies to the unweighted h. Every routed h row must
// exist before a dynamic w2 input scale is known, so this runs in two passes
// over the active experts (the weights are loaded twice).
void routed_w4a4(const MoeWeights& weights, const std::vector<float>& x, const Routing& routing,
                 const std::vector<int64_t>& active, const MoeOptions& options, std::vector<float>& per_slot) {
  const MoeDims& d = weights.dims;
  const int64_t D = d.hidden, I = d.intermediate, k = d.top_k, T = routing.tokens;
  std::vector<float> x_dynamic;  // x quantized as one tensor (dynamic global scale)
  if (weights.input_scale_w13.empty()) {
    x_dynamic = x;
    fake_quantize_nvfp4(x_dynamic.data(), T, D, std::nullopt);
  }
  std::vector<float> h(T * k * I, 0.0f);
  auto visit = [&](auto&& per_pair) {
    for_each_active_expert(weights, active, [&](int64_t e, std::span<const float> w1, std::span<const float> w3,
                                                std::span<const float> w2) {
      for (int64_t p = 0; p < T * k; ++p)
        if (routing.experts[p] == e) per_pair(e, p, w1, w3, w2);
    });
  };
  visit([&](int64_t e, int64_t p, std::span<const float> w1, std::span<const float> w3, std::span<const float>) {
    std::vector<float> xq;
    const float* xrow;
    if (x_dynamic.empty()) {  // static scale: this pair's row with its expert's scale
      xq.assign(x.begin() + (p / k) * D, x.begin() + (p / k + 1) * D);
      fake_quantize_nvfp4(xq.data(), 1, D, weights.input_scale_w13[e]);
      xrow = xq.data();
    } else {
      xrow = x_dynamic.data() + (p / k) * D;
    }
    expert_hidden(w1, w3, D, I, xrow, 1.0f, d.swiglu_limit, options.round_hidden_bf16, h.data() + p * I);
  });
  if (weights.input_scale_w2.empty()) fake_quantize_nvfp4(h.data(), T * k, I, std::nullopt);
  visit([&](int64_t e, int64_t p, std::span<const float>, std::span<const float>, std::span<const float> w2) {
    float* hp = h.data() + p * I;
    if (!weights.input_scale_w2.empty()) fake_quantize_nvfp4(hp, 1, I, weights.input_scale_w2[e]);
    float* row = per_slot.data() + p * D;
    expert_down(w2, D, I, hp, row);
    for (int64_t r = 0; r < D; ++r) row[r] *= routing.weights[p];
  });
}

}  // namespace

Routing moe_route(const MoeWeights& weights, std::span<const float> x_in, std::span<const int32_t> token_ids,
                  int64_t tokens, const MoeOptions& options) {
  check_weights(weights);
  const MoeDims& d = weights.dims;
  const int64_t D = d.hidden, E = d.n_experts, k = d.top_k;
  MEGAMOE_CHECK(tokens >= 0 && x_in.size() == static_cast<size_t>(tokens * D), "moe_route: x has ", x_in.size(),
                " values, expected T*D = ", tokens * D);
  const bool hashed = !weights.tid2eid.empty();
  const int64_t vocab = hashed ? static_cast<int64_t>(weights.tid2eid.size()) / k : 0;
  if (hashed)
    MEGAMOE_CHECK(token_ids.size() == static_cast<size_t>(tokens), "moe_route: hash routing needs ", tokens,
                  " token ids, got ", token_ids.size());
  const std::vector<float> x = prepared_input(x_in, options);

  Routing routing;
  routing.tokens = tokens;
  routing.top_k = k;
  routing.experts.assign(tokens * k, 0);
  routing.weights.assign(tokens * k, 0.0f);
  ThreadPool::global().parallel_for(static_cast<size_t>(tokens), [&](size_t begin, size_t end) {
    std::vector<float> scores(E);
    std::vector<int32_t> order(E);
    for (size_t t = begin; t < end; ++t) {
      const float* xt = x.data() + t * D;
      // Scores feed the weights in both kinds of layer (hash layers too).
      for (int64_t e = 0; e < E; ++e) {
        const float* g = weights.gate.data() + e * D;
        float acc = 0.0f;
        for (int64_t c = 0; c < D; ++c) acc += g[c] * xt[c];
        scores[e] = sqrt_softplus(acc);
      }
      int32_t* ids = routing.experts.data() + t * k;
      if (hashed) {
        const int32_t tok = token_ids[t];
        MEGAMOE_CHECK(tok >= 0 && tok < vocab, "moe_route: token id ", tok, " out of range [0, ", vocab, ")");
        for (int64_t j = 0; j < k; ++j) {
          const int32_t e = weights.tid2eid[tok * k + j];
          MEGAMOE_CHECK(e >= 0 && e < E, "moe_route: tid2eid[", tok, "][", j, "] = ", e, " out of range [0, ", E, ")");
          ids[j] = e;
        }
      } else {
        for (int64_t e = 0; e < E; ++e) order[e] = static_cast<int32_t>(e);
        auto biased = [&](int32_t e) { return scores[e] + (weights.bias.empty() ? 0.0f : weights.bias[e]); };
        // Highest biased score first; equal scores: lower expert index first.
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
          const float sa = biased(a), sb = biased(b);
          return sa > sb || (sa == sb && a < b);
        });
        for (int64_t j = 0; j < k; ++j) ids[j] = order[j];
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) sum += scores[ids[j]];
      float* w = routing.weights.data() + t * k;
      for (int64_t j = 0; j < k; ++j) w[j] = scores[ids[j]] / sum * d.routed_scaling_factor;
    }
  });
  return routing;
}

void moe_forward_routed(const MoeWeights& weights, std::span<const float> x_in, const Routing& routing,
                        std::span<float> y, const MoeOptions& options) {
  check_weights(weights);
  const MoeDims& d = weights.dims;
  const int64_t D = d.hidden, I = d.intermediate, E = d.n_experts, k = d.top_k, Is = d.shared_intermediate;
  const int64_t T = routing.tokens;
  MEGAMOE_CHECK(routing.top_k == k && routing.experts.size() == static_cast<size_t>(T * k) &&
                    routing.weights.size() == static_cast<size_t>(T * k),
                "moe_forward: routing does not match T=", T, " k=", k);
  MEGAMOE_CHECK(x_in.size() == static_cast<size_t>(T * D) && y.size() == static_cast<size_t>(T * D),
                "moe_forward: x and y must hold T*D = ", T * D, " values");
  // -1: a slot whose expert another rank holds (expert parallel); it contributes nothing here.
  for (int32_t e : routing.experts)
    MEGAMOE_CHECK(e >= -1 && e < E, "moe_forward: routed expert id ", e, " out of range");
  const std::vector<float> x = prepared_input(x_in, options);

  // Expert weights are visited expert by expert (so that an on-demand loader
  // dequantizes each expert once); each (token, slot) result lands in its own
  // row and the rows are summed per token in slot order below.
  std::vector<char> used(E, 0);
  for (int32_t e : routing.experts)
    if (e >= 0) used[e] = 1;
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e)
    if (used[e]) active.push_back(e);
  std::vector<float> per_slot(T * k * D, 0.0f);
  if (options.activations_nvfp4) {
    MEGAMOE_CHECK(weights.input_scale_w13.empty() || weights.input_scale_w13.size() == static_cast<size_t>(E),
                  "moe: input_scale_w13 has ", weights.input_scale_w13.size(), " values, expected E = ", E);
    MEGAMOE_CHECK(weights.input_scale_w2.empty() || weights.input_scale_w2.size() == static_cast<size_t>(E),
                  "moe: input_scale_w2 has ", weights.input_scale_w2.size(), " values, expected E = ", E);
    routed_w4a4(weights, x, routing, active, options, per_slot);
  } else {
    for_each_active_expert(weights, active, [&](int64_t e, std::span<const float> w1, std::span<const float> w3,
                                                std::span<const float> w2) {
      for (int64_t p = 0; p < T * k; ++p)
        if (routing.experts[p] == e)
          expert_apply(w1, w3, w2, D, I, x.data() + (p / k) * D, routing.weights[p], d.swiglu_limit,
                       options.round_hidden_bf16, per_slot.data() + p * D);
    });
  }
  std::vector<float> shared(T * D, 0.0f);
  if (Is > 0) {
    ThreadPool::global().parallel_for(static_cast<size_t>(T), [&](size_t begin, size_t end) {
      for (size_t t = begin; t < end; ++t)
        expert_apply(weights.shared_w1, weights.shared_w3, weights.shared_w2, D, Is, x.data() + t * D, 1.0f,
                     d.swiglu_limit, options.round_hidden_bf16, shared.data() + t * D);
    });
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < D; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) acc += per_slot[(t * k + j) * D + c];
      acc += shared[t * D + c];
      y[t * D + c] = options.round_output_bf16 ? round_to_bf16(acc) : acc;
    }
}

void moe_forward(const MoeWeights& weights, std::span<const float> x, std::span<const int32_t> token_ids,
                 int64_t tokens, std::span<float> y, const MoeOptions& options) {
  const Routing routing = moe_route(weights, x, token_ids, tokens, options);
  moe_forward_routed(weights, x, routing, y, options);
}

}  // namespace megamoe::cpu
