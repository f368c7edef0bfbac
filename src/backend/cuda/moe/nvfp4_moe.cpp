#include "backend/cuda/moe/nvfp4_moe.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/moe/moe_repack.hpp"
#include "core/error.hpp"

namespace megamoe::cuda {
namespace {

template <typename T>
DeviceBuffer upload(std::span<const T> host) {
  if (host.empty()) return DeviceBuffer();
  DeviceBuffer buffer(host.size_bytes());
  buffer.upload(host.data(), host.size_bytes());
  return buffer;
}

void check_size(size_t got, size_t want, const char* name) {
  MEGAMOE_CHECK(got == want, "MoeLayer: weight '", name, "' has ", got, " elements, expected ", want);
}

}  // namespace

MoeLayer::MoeLayer(const MoeLayerConfig& c, const MoeHostWeights& w) : config_(c) {
  MEGAMOE_CHECK(c.hidden > 0 && c.hidden % 64 == 0, "MoeLayer: hidden ", c.hidden, " must be a positive multiple of 64");
  MEGAMOE_CHECK(c.intermediate > 0 && c.intermediate % 64 == 0, "MoeLayer: intermediate ", c.intermediate,
                " must be a positive multiple of 64");
  MEGAMOE_CHECK(c.shared_inter >= 0 && c.shared_inter % 64 == 0, "MoeLayer: shared_inter ", c.shared_inter,
                " must be a multiple of 64");
  MEGAMOE_CHECK(c.experts > 0 && c.experts <= 1024, "MoeLayer: experts ", c.experts, " must be in [1, 1024]");
  MEGAMOE_CHECK(c.top_k > 0 && c.top_k <= std::min(32, c.experts), "MoeLayer: top_k ", c.top_k,
                " must be in [1, min(32, experts)]");
  MEGAMOE_CHECK(c.max_tokens > 0, "MoeLayer: max_tokens must be > 0");
  MEGAMOE_CHECK(c.local_experts >= 0 && c.expert_begin >= 0 && c.expert_begin + c.local_experts <= c.experts &&
                    (c.local_experts > 0 || c.expert_begin == 0),
                "MoeLayer: local experts [", c.expert_begin, ", ", c.expert_begin + c.local_experts,
                ") are not a range of the ", c.experts, " experts");
  const size_t D = c.hidden, I = c.intermediate, Is = c.shared_inter, k = c.top_k;
  const size_t E_router = c.experts;  // the router scores every expert
  const size_t E = c.local_experts > 0 ? c.local_experts : c.experts;  // the experts whose weights are held
  const size_t G = c.format == ExpertFormat::kMxfp4 ? 32 : 16;
  check_size(w.gate.size(), E_router * D, "gate");
  MEGAMOE_CHECK(w.bias.empty() || w.bias.size() == E_router, "MoeLayer: bias has ", w.bias.size(),
                " values, expected ", E_router);
  MEGAMOE_CHECK(w.tid2eid.size() % k == 0, "MoeLayer: tid2eid size is not a multiple of top_k");
  check_size(w.w1.size(), E * I * D / 2, "w1");
  check_size(w.w3.size(), E * I * D / 2, "w3");
  check_size(w.w2.size(), E * D * I / 2, "w2");
  check_size(w.s1.size(), E * I * D / G, "w1 scales");
  check_size(w.s3.size(), E * I * D / G, "w3 scales");
  check_size(w.s2.size(), E * D * I / G, "w2 scales");
  std::vector<float> ones(E, 1.0f);
  std::span<const float> g1 = w.g1, g3 = w.g3, g2 = w.g2;
  if (c.format == ExpertFormat::kMxfp4) {
    MEGAMOE_CHECK(g1.empty() && g3.empty() && g2.empty(), "MoeLayer: MXFP4 experts take no global scales");
    g1 = g3 = g2 = ones;
  }
  check_size(g1.size(), E, "w1 global scale");
  check_size(g3.size(), E, "w3 global scale");
  check_size(g2.size(), E, "w2 global scale");
  // An FP8 shared expert is dequantized to bf16 here (exact for E8M0 scales).
  std::vector<uint16_t> fp8_w1, fp8_w3, fp8_w2;
  std::span<const uint16_t> shared_w1 = w.shared_w1, shared_w3 = w.shared_w3, shared_w2 = w.shared_w2;
  const bool fp8 = !w.shared_fp8_w1.empty() || !w.shared_fp8_w3.empty() || !w.shared_fp8_w2.empty();
  if (fp8) {
    MEGAMOE_CHECK(w.shared_w1.empty() && w.shared_w3.empty() && w.shared_w2.empty(),
                  "MoeLayer: give the shared expert either in bf16 or in FP8, not both");
    MEGAMOE_CHECK(Is > 0, "MoeLayer: FP8 shared expert weights given but shared_inter is 0");
    fp8_w1 = fp8_block128_to_bf16(w.shared_fp8_w1, c.shared_inter, c.hidden, "shared w1");
    fp8_w3 = fp8_block128_to_bf16(w.shared_fp8_w3, c.shared_inter, c.hidden, "shared w3");
    fp8_w2 = fp8_block128_to_bf16(w.shared_fp8_w2, c.hidden, c.shared_inter, "shared w2");
    shared_w1 = fp8_w1, shared_w3 = fp8_w3, shared_w2 = fp8_w2;
  }
  check_size(shared_w1.size(), Is * D, "shared w1");
  check_size(shared_w3.size(), Is * D, "shared w3");
  check_size(shared_w2.size(), D * Is, "shared w2");

  if (c.w4a4) {
    MEGAMOE_CHECK(c.format == ExpertFormat::kNvfp4, "MoeLayer: W4A4 mode needs NVFP4 experts (MXFP4 given)");
    auto check_scales = [&](std::span<const float> s, const char* name) {
      MEGAMOE_CHECK(s.empty() || s.size() == E, "MoeLayer: ", name, " has ", s.size(), " values, expected ", E);
      for (size_t e = 0; e < s.size(); ++e)
        MEGAMOE_CHECK(std::isfinite(s[e]) && s[e] > 0.0f, "MoeLayer: ", name, "[", e, "] = ", s[e],
                      " is not a finite positive scale");
    };
    check_scales(w.input_scale_w13, "input_scale_w13");
    check_scales(w.input_scale_w2, "input_scale_w2");
  }

  vocab_ = static_cast<int>(w.tid2eid.size() / k);
  hashed_ = !w.tid2eid.empty();
  has_bias_ = !w.bias.empty();
  gate_ = upload(w.gate);
  bias_ = upload(w.bias);
  tid2eid_ = upload(w.tid2eid);
  // Repack the 4-bit experts into the fragment layout (kernels/moe/moe_params.hpp).
  auto put = [&](std::span<const uint8_t> q, std::span<const uint8_t> s, std::span<const float> g, int rows, int cols,
                 const char* name, DeviceBuffer& wq, DeviceBuffer& sq, DeviceBuffer& gq) {
    const RepackedMatrix r = repack_fp4_matrix(q, s, c.format == ExpertFormat::kMxfp4 ? std::span<const float>() : g,
                                               static_cast<int>(E), rows, cols, c.format, name);
    wq = upload(std::span<const uint32_t>(r.codes));
    sq = upload(std::span<const uint16_t>(r.scales));
    gq = upload(std::span<const float>(r.epilogue));
  };
  put(w.w1, w.s1, g1, c.intermediate, c.hidden, "w1", w1_, s1_, g1_);
  put(w.w3, w.s3, g3, c.intermediate, c.hidden, "w3", w3_, s3_, g3_);
  put(w.w2, w.s2, g2, c.hidden, c.intermediate, "w2", w2_, s2_, g2_);
  if (c.shared_inter > 0) {
    sf1_ = upload(std::span<const uint32_t>(repack_bf16_matrix(shared_w1, c.shared_inter, c.hidden)));
    sf3_ = upload(std::span<const uint32_t>(repack_bf16_matrix(shared_w3, c.shared_inter, c.hidden)));
    sf2_ = upload(std::span<const uint32_t>(repack_bf16_matrix(shared_w2, c.hidden, c.shared_inter)));
  }
  sw1_ = upload(shared_w1), sw3_ = upload(shared_w3), sw2_ = upload(shared_w2);

  const size_t T = c.max_tokens, pairs = T * (k + 1), hs = std::max(I, Is);
  scores_ = DeviceBuffer(T * E_router * sizeof(float));
  topk_ids_ = DeviceBuffer(T * k * sizeof(int32_t));
  topk_w_ = DeviceBuffer(T * k * sizeof(float));
  perm_ = DeviceBuffer(pairs * sizeof(int32_t));
  tile_expert_ = DeviceBuffer(pairs * sizeof(int32_t));
  tile_begin_ = DeviceBuffer(pairs * sizeof(int32_t));
  tile_count_ = DeviceBuffer(pairs * sizeof(int32_t));
  n_tiles_ = DeviceBuffer(sizeof(int32_t));
  h_ = DeviceBuffer(pairs * hs * sizeof(uint16_t));
  rows_ = DeviceBuffer(pairs * D * sizeof(float));
  error_flag_ = DeviceBuffer(sizeof(int32_t));
  route_counts_ = DeviceBuffer(2 * (E_router + 1) * sizeof(int32_t));  // indexed by global expert ids
  if (c.w4a4) {
    xq_ = DeviceBuffer(T * k * D * sizeof(uint16_t));
    amax_partials_ = DeviceBuffer(kernels::kMoeActAmaxPartials * sizeof(uint32_t));
    dynamic_scale13_ = w.input_scale_w13.empty(), dynamic_scale2_ = w.input_scale_w2.empty();
    // [2, E_router] by global expert id (the kernels index it so); a shard
    // fills its own experts' slots, dynamic slots are written by each forward.
    MEGAMOE_CHECK(c.local_experts == 0 || !w.input_scale_w2.empty(), "MoeLayer: W4A4 over ", c.local_experts,
                  " local experts needs the checkpoint's static input_scale for w2: a dynamic scale is the max over "
                  "every expert's hidden, which one rank does not have");
    std::vector<float> scales(2 * E_router, 1.0f);
    std::copy(w.input_scale_w13.begin(), w.input_scale_w13.end(), scales.begin() + c.expert_begin);
    std::copy(w.input_scale_w2.begin(), w.input_scale_w2.end(), scales.begin() + E_router + c.expert_begin);
    act_scale_ = upload(std::span<const float>(scales));
  }
  MEGAMOE_CUDA_CHECK(cudaMemset(error_flag_.get(), 0, sizeof(int32_t)));
  MEGAMOE_CUDA_CHECK(cudaMemset(n_tiles_.get(), 0, sizeof(int32_t)));
}

MoePath MoeLayer::choose_path(int tokens, MoePath path) const {
  if (path != MoePath::kAuto) return path;
  // Tensor-core GEMV up to T = 256 (uniform routing: 1.5x faster than WGMMA
  // at T = 256, 1.4x slower at T = 1024; kernels/moe/NOTES.md version 7).
  return tokens <= 256 ? MoePath::kGemv : MoePath::kWgmma;
}

std::string MoeLayer::describe_path(int tokens, MoePath path) const {
  switch (choose_path(tokens, path)) {
    case MoePath::kGemv: return str_cat("tc-gemv(tile_m=", kernels::moe_gemv_tile_m(), ")");
    default: return str_cat("wgmma(tile_m=", kernels::moe_wgmma_tile_m(), ")");
  }
}

namespace {
int path_tile_m(MoePath path) {
  switch (path) {
    case MoePath::kGemv: return kernels::moe_gemv_tile_m();
    default: return kernels::moe_wgmma_tile_m();
  }
}
}  // namespace

size_t MoeLayer::expert_bytes() const {
  const size_t D = config_.hidden, I = config_.intermediate;
  const size_t G = config_.format == ExpertFormat::kMxfp4 ? 32 : 16;
  return 3 * (I * D / 2 + I * D / G);
}

size_t MoeLayer::shared_bytes() const { return 3 * static_cast<size_t>(config_.shared_inter) * config_.hidden * 2; }

kernels::MoeParams MoeLayer::params(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y,
                                    float* y_f32, MoePath path) const {
  const MoeLayerConfig& c = config_;
  kernels::MoeParams p;
  p.hidden = c.hidden, p.intermediate = c.intermediate, p.shared_inter = c.shared_inter;
  p.experts = c.experts, p.top_k = c.top_k, p.tokens = tokens, p.vocab = vocab_;
  p.expert_begin = c.expert_begin, p.local_experts = c.local_experts;
  p.routed_scaling = c.routed_scaling, p.swiglu_limit = c.swiglu_limit, p.format = c.format;
  p.tile_m = path_tile_m(choose_path(tokens, path));
  // Tiles: routed sum_e ceil(c_e/m) <= ceil(Tk/m) + min(E, Tk); shared ceil(T/m).
  const long long Tk = static_cast<long long>(tokens) * c.top_k;
  const long long bound = (Tk + p.tile_m - 1) / p.tile_m + std::min<long long>(c.experts, Tk) +
                          (c.shared_inter > 0 ? (tokens + p.tile_m - 1) / p.tile_m : 0);
  p.max_tiles = static_cast<int>(std::min<long long>(bound, static_cast<long long>(tokens) * (c.top_k + 1)));
  p.gate = gate_.as<uint16_t>(), p.bias = has_bias_ ? bias_.as<float>() : nullptr;
  p.tid2eid = hashed_ ? tid2eid_.as<int32_t>() : nullptr, p.token_ids = token_ids;
  p.w1 = w1_.as<uint32_t>(), p.w3 = w3_.as<uint32_t>(), p.w2 = w2_.as<uint32_t>();
  p.s1 = s1_.as<uint16_t>(), p.s3 = s3_.as<uint16_t>(), p.s2 = s2_.as<uint16_t>();
  p.sf1 = sf1_.as<uint32_t>(), p.sf3 = sf3_.as<uint32_t>(), p.sf2 = sf2_.as<uint32_t>();
  p.g1 = g1_.as<float>(), p.g3 = g3_.as<float>(), p.g2 = g2_.as<float>();
  p.sw1 = sw1_.as<uint16_t>(), p.sw3 = sw3_.as<uint16_t>(), p.sw2 = sw2_.as<uint16_t>();
  p.x = x, p.scores = scores_.as<float>(), p.topk_ids = topk_ids_.as<int32_t>(), p.topk_w = topk_w_.as<float>();
  p.perm_pairs = perm_.as<int32_t>(), p.tile_expert = tile_expert_.as<int32_t>();
  p.tile_begin = tile_begin_.as<int32_t>(), p.tile_count = tile_count_.as<int32_t>(), p.n_tiles = n_tiles_.as<int32_t>();
  p.h = h_.as<uint16_t>(), p.rows = rows_.as<float>(), p.y = y, p.y_f32 = y_f32, p.error_flag = error_flag_.as<int32_t>();
  p.route_counts = route_counts_.as<int32_t>();
  if (c.w4a4) p.xq = xq_.as<uint16_t>(), p.act_scale = act_scale_.as<float>(), p.weight_after_gemm2 = true;
  return p;
}

void MoeLayer::forward(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y, float* y_f32,
                       cudaStream_t stream, MoePath path) const {
  run_stages(x, token_ids, tokens, y, y_f32, stream, path, nullptr);
}

void MoeLayer::forward_with_stage_events(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y,
                                         float* y_f32, cudaStream_t stream, MoePath path,
                                         cudaEvent_t const (&events)[kStageCount + 1]) const {
  run_stages(x, token_ids, tokens, y, y_f32, stream, path, events);
}

void MoeLayer::run_stages(const uint16_t* x, const int32_t* token_ids, int tokens, uint16_t* y, float* y_f32,
                          cudaStream_t stream, MoePath path, const cudaEvent_t* events) const {
  MEGAMOE_CHECK(tokens >= 0 && tokens <= config_.max_tokens, "MoeLayer::forward: ", tokens,
                " tokens is outside [0, max_tokens=", config_.max_tokens, "]");
  MEGAMOE_CHECK(x != nullptr && (y != nullptr || y_f32 != nullptr), "MoeLayer::forward: null input or output");
  MEGAMOE_CHECK(!hashed_ || token_ids != nullptr, "MoeLayer::forward: a hash-routed layer needs token ids");
  if (tokens == 0) return;
  const kernels::MoeParams p = params(x, token_ids, tokens, y, y_f32, path);
  const MoePath chosen = choose_path(tokens, path);
  auto mark = [&](int i) {
    if (events != nullptr) MEGAMOE_CUDA_CHECK(cudaEventRecord(events[i], stream));
  };
  mark(0);
  kernels::launch_moe_route_scores(p, stream);
  MEGAMOE_CUDA_CHECK_LAUNCH(stream);
  mark(1);
  kernels::launch_moe_route_select(p, stream);
  MEGAMOE_CUDA_CHECK_LAUNCH(stream);
  mark(2);
  for (int gemm = 1; gemm <= 2; ++gemm) {
    if (config_.w4a4) {
      kernels::launch_moe_act_quant(p, gemm, act_scale_.as<float>(), amax_partials_.as<uint32_t>(),
                                    gemm == 1 ? dynamic_scale13_ : dynamic_scale2_, stream);
      MEGAMOE_CUDA_CHECK_LAUNCH(stream);
    }
    switch (chosen) {
      case MoePath::kGemv: kernels::launch_moe_gemv_gemm(p, gemm, stream); break;
      default: kernels::launch_moe_wgmma_gemm(p, gemm, stream); break;
    }
    MEGAMOE_CUDA_CHECK_LAUNCH(stream);
    mark(2 + gemm);
  }
  kernels::launch_moe_combine(p, stream);
  MEGAMOE_CUDA_CHECK_LAUNCH(stream);
  mark(5);
}

bool MoeLayer::take_error_flag(cudaStream_t stream) const {
  int32_t flag = 0;
  MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(&flag, error_flag_.get(), sizeof(flag), cudaMemcpyDeviceToHost, stream));
  MEGAMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  MEGAMOE_CUDA_CHECK(cudaMemsetAsync(error_flag_.get(), 0, sizeof(flag), stream));
  return flag != 0;
}

}  // namespace megamoe::cuda
