#include "backend/cuda/cuda_weights.hpp"

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <cstdio>
#include <cstring>
#include <string>

#include "backend/cpu/load.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"
#include "core/float_formats.hpp"
#include "parallel/weight_slice.hpp"

namespace megamoe::cuda {
namespace {

std::vector<uint8_t> raw_bytes(const TensorView& v) {
  std::vector<uint8_t> out(v.nbytes);
  std::memcpy(out.data(), v.data, v.nbytes);
  return out;
}

template <typename T>
DeviceBuffer upload_vector(const std::vector<T>& host) {
  DeviceBuffer buf(host.size() * sizeof(T));
  // The calling thread's own stream: layers load on several threads at once.
  if (!host.empty()) buf.upload(host.data(), host.size() * sizeof(T), cudaStreamPerThread);
  return buf;
}

std::vector<float> f32_of(const TensorView& v) {
  const Tensor t = cpu::to_f32(v);
  return {t.data<float>(), t.data<float>() + t.numel()};
}

std::vector<uint16_t> bf16_of(const TensorView& v) {
  std::vector<uint16_t> out(static_cast<size_t>(v.numel()));
  if (v.dtype == DType::BF16) {
    std::memcpy(out.data(), v.data, out.size() * 2);
  } else {
    const std::vector<float> f = f32_of(v);
    for (size_t i = 0; i < f.size(); ++i) out[i] = f32_to_bf16(f[i]);  // F32 gates of the tiny fixtures
  }
  return out;
}

// A rows or columns range of a matrix (the whole matrix when `whole`).
struct Slice {
  SliceAxis axis = SliceAxis::kRows;
  IndexRange range;
  bool whole = true;
};
Slice rows_of(IndexRange r) { return {SliceAxis::kRows, r, false}; }
Slice cols_of(IndexRange r) { return {SliceAxis::kCols, r, false}; }
IndexRange scaled(IndexRange r, int64_t factor) { return {r.begin * factor, r.end * factor}; }

// Bytes of one stored tensor that a rank uploads (for check_fits): the
// sharded tensors' share, the other ranks' routed experts none.
double shard_bytes(const std::string& name, double bytes, const ShardLayout& shard, int64_t experts) {
  if (!shard.shard.sharded()) return bytes;
  const double n = static_cast<double>(shard.shard.size);
  const std::string marker = ".mlp.experts.";
  const size_t at = name.find(marker);
  if (at != std::string::npos) {
    const size_t digits = at + marker.size();
    size_t end = digits;
    while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
    if (end == digits) return bytes * static_cast<double>(shard.experts.size()) / static_cast<double>(experts);
    return shard.experts.contains(std::stoll(name.substr(digits, end - digits))) ? bytes : 0.0;
  }
  for (const char* part : {".self_attn.q_b_proj.", ".self_attn.o_a_proj.", ".self_attn.o_b_proj.", ".self_attn.sinks",
                           ".mlp.shared_experts."})
    if (name.find(part) != std::string::npos) return bytes / n;
  if (name.rfind("lm_head.", 0) == 0) return bytes / n;
  return bytes;
}

class Loader {
 public:
  Loader(const Checkpoint& ckpt, int64_t max_tokens, bool progress, MoeActivationFormat moe_activations,
         const ShardSpec& shard)
      : ckpt_(ckpt),
        cfg_(ckpt.config()),
        max_tokens_(max_tokens),
        progress_(progress),
        w4a4_(moe_activations == MoeActivationFormat::kW4A4),
        shard_(shard_layout(ckpt.config(), shard)) {}

  DeviceModel load() {
    check_fits();
    const auto start = std::chrono::steady_clock::now();
    const int64_t d = cfg_.hidden_size, v = cfg_.vocab_size, nc = cfg_.hc_mult;
    MEGAMOE_CHECK(cfg_.scoring_func == "sqrtsoftplus", "config: scoring_func '", cfg_.scoring_func,
                  "' is not supported (only sqrtsoftplus)");
    DeviceModel m;
    m.embed = linear(ckpt_.weight("model.embed_tokens", v, d), /*dense_only=*/true);
    m.hc_head = {dense("model.hc_head.hc_fn", {nc, nc * d}), dense("model.hc_head.hc_base", {nc}),
                 dense("model.hc_head.hc_scale", {1})};
    m.norm = dense("model.norm.weight", {d});
    m.lm_head = linear(ckpt_.weight("lm_head", v, d), false, rows_of(shard_.vocab));  // this rank's vocabulary rows
    // Layers load on a few threads at once: each reads its tensors from the
    // mapped files, repacks, and copies to the device concurrently with the
    // others (host work and copies overlap). A few, not all: every thread
    // holds one layer's host staging (~4 GB at V4-Flash widths).
    m.layers.resize(static_cast<size_t>(cfg_.num_layers));
    int device = 0;
    MEGAMOE_CUDA_CHECK(cudaGetDevice(&device));
    std::atomic<int64_t> next{0}, done{0};
    std::mutex error_mutex;
    std::exception_ptr error;
    auto worker = [&] {
      try {
        MEGAMOE_CUDA_CHECK(cudaSetDevice(device));
        for (int64_t l = next++; l < cfg_.num_layers && !error; l = next++) {
          m.layers[static_cast<size_t>(l)] = layer(l);
          report(++done, start);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    };
    const int64_t threads = std::min<int64_t>(cfg_.num_layers, 4);
    std::vector<std::thread> pool;
    for (int64_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (std::thread& t : pool) t.join();
    if (error) std::rethrow_exception(error);
    m.bytes = static_cast<double>(uploaded_);
    if (progress_) std::fputc('\n', stderr);
    return m;
  }

 private:
  // Everything stored in the checkpoint is at most what goes to the device
  // (FP4/FP8 stay as stored; only small fp32 parameters may widen).
  // A shard counts its own part (shard_bytes).
  void check_fits() const {
    double needed = 0;
    for (const auto& [name, view] : ckpt_.tensors())
      needed += shard_bytes(name, static_cast<double>(view->nbytes), shard_, cfg_.n_routed_experts);
    size_t free_bytes = 0, total = 0;
    MEGAMOE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    const std::string whose =
        shard_.shard.sharded() ? str_cat(" (rank ", shard_.shard.rank, " of ", shard_.shard.size, "'s part)") : "";
    MEGAMOE_CHECK(needed < 0.95 * static_cast<double>(free_bytes), ckpt_.dir().string(), ": the checkpoint", whose,
                  " needs about ", needed / 1e9, " GB of GPU memory, only ", static_cast<double>(free_bytes) / 1e9,
                  " GB are free on this device");
  }

  void report(int64_t layers_done, std::chrono::steady_clock::time_point start) const {
    if (!progress_) return;
    std::lock_guard<std::mutex> lock(report_mutex_);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int width = 30, filled = static_cast<int>(width * layers_done / cfg_.num_layers);
    std::fprintf(stderr, "\rloading [%.*s%*s] %lld/%lld layers, %.2f GB, %.2f GB/s", filled,
                 "##############################", width - filled, "", static_cast<long long>(layers_done),
                 static_cast<long long>(cfg_.num_layers), static_cast<double>(uploaded_) / 1e9,
                 s > 0 ? static_cast<double>(uploaded_) / 1e9 / s : 0.0);
  }

  // `slice` of a row-major [rows, cols] host matrix (v itself when whole).
  template <typename T>
  static std::vector<T> part_of(std::vector<T> v, int64_t rows, int64_t cols, const Slice& slice) {
    if (slice.whole) return v;
    const std::vector<uint8_t> bytes = slice_matrix(v.data(), rows, cols, sizeof(T), slice.axis, slice.range);
    std::vector<T> out(bytes.size() / sizeof(T));
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  // The shared expert's matrix i of this rank: gate / up rows, down columns.
  Slice shared_slice(int i) const {
    Slice s = i < 2 ? rows_of(shard_.shared) : cols_of(shard_.shared);
    s.whole = !shard_.shard.sharded();
    return s;
  }

  template <typename T>
  DeviceBuffer put(const std::vector<T>& host) {
    uploaded_ += host.size() * sizeof(T);
    return upload_vector(host);
  }

  DeviceBuffer dense(const std::string& name, const Shape& shape) { return put(f32_of(ckpt_.get(name, shape))); }
  // Elements `range` of a 1-D fp32 parameter (e.g. a rank's sinks).
  DeviceBuffer dense_part(const std::string& name, int64_t n, IndexRange range) {
    const std::vector<float> all = f32_of(ckpt_.get(name, {n}));
    return put(std::vector<float>(all.begin() + range.begin, all.begin() + range.end));
  }

  // A linear in its stored format, or `slice` of it (a rank's rows or
  // columns: FP8 block-128 on whole scale tiles, fp8_tile_range).
  DeviceLinear linear(const WeightRef& ref, bool dense_only = false, Slice slice = {}) {
    if (!shard_.shard.sharded()) slice.whole = true;  // one rank holds everything as stored
    DeviceLinear out;
    const int64_t rows = slice.whole || slice.axis == SliceAxis::kCols ? ref.out : slice.range.size();
    const int64_t cols = slice.whole || slice.axis == SliceAxis::kRows ? ref.in : slice.range.size();
    out.view.out = static_cast<int>(rows);
    out.view.in = static_cast<int>(cols);
    auto part = [&](std::vector<uint8_t> bytes, size_t elem) {
      return slice.whole ? bytes : slice_matrix(bytes.data(), ref.out, ref.in, elem, slice.axis, slice.range);
    };
    if (ref.format == WeightFormat::kDense && ref.weight->dtype == DType::BF16) {
      out.view.format = kernels::LinearFormat::kBf16;
      out.w = put(part(raw_bytes(*ref.weight), 2));
    } else if (ref.format == WeightFormat::kFp8Block && !dense_only) {
      out.view.format = kernels::LinearFormat::kFp8Block128;
      MEGAMOE_CHECK(ref.scale != nullptr, ref.name, ": FP8 weight without scales");
      out.view.scale_e8m0 = ref.scale->dtype == DType::F8_E8M0 || ref.scale->dtype == DType::U8;
      std::vector<uint8_t> codes = raw_bytes(*ref.weight), scales;
      if (out.view.scale_e8m0) {
        scales = raw_bytes(*ref.scale);
      } else {
        const std::vector<float> f = f32_of(*ref.scale);
        scales.resize(f.size() * 4);
        std::memcpy(scales.data(), f.data(), scales.size());
      }
      if (!slice.whole) {
        Fp8Slice s = slice_fp8_block128(codes.data(), scales.data(), out.view.scale_e8m0 ? 1 : 4, ref.out, ref.in,
                                        slice.axis, slice.range, ref.name);
        codes = std::move(s.codes), scales = std::move(s.scales);
      }
      out.w = put(codes);
      out.scale = put(scales);
    } else {
      // F32 / F16 as fp32; an FP4 non-expert linear (not in published checkpoints) is widened.
      out.view.format = kernels::LinearFormat::kF32;
      const Tensor t = ref.format == WeightFormat::kDense ? cpu::to_f32(*ref.weight) : cpu::dequantize_weight(ref);
      std::vector<uint8_t> bytes(static_cast<size_t>(t.numel()) * 4);
      std::memcpy(bytes.data(), t.data<float>(), bytes.size());
      out.w = put(part(std::move(bytes), 4));
    }
    out.view.w = out.w.get();
    out.view.scale = out.scale.get();
    return out;
  }

  DeviceCompressor compressor(const std::string& prefix, int64_t rate, int64_t width, bool overlap) {
    const int64_t c = overlap ? 2 : 1, d = cfg_.hidden_size;
    DeviceCompressor w;
    w.rate = static_cast<int>(rate);
    w.width = static_cast<int>(width);
    w.overlap = overlap;
    w.kv = linear(ckpt_.weight(prefix + "kv_proj", c * width, d));
    w.gate = linear(ckpt_.weight(prefix + "gate_proj", c * width, d));
    w.position_bias = dense(prefix + "position_bias", {rate, c * width});
    w.norm = dense(prefix + "kv_norm.weight", {width});
    return w;
  }

  DeviceLayer layer(int64_t l) {
    const int64_t d = cfg_.hidden_size, h = cfg_.num_heads, dh = cfg_.head_dim, rq = cfg_.q_lora_rank;
    const int64_t g = cfg_.o_groups, ro = cfg_.o_lora_rank, nc = cfg_.hc_mult, mix = (2 + nc) * nc;
    MEGAMOE_CHECK(g > 0 && h % g == 0, "config: num_attention_heads ", h, " is not a multiple of o_groups ", g);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    DeviceLayer w;
    w.type = cfg_.layer_types.at(l);
    w.attn_hc = {dense(p + "attn_hc.fn", {mix, nc * d}), dense(p + "attn_hc.base", {mix}), dense(p + "attn_hc.scale", {3})};
    w.ffn_hc = {dense(p + "ffn_hc.fn", {mix, nc * d}), dense(p + "ffn_hc.base", {mix}), dense(p + "ffn_hc.scale", {3})};
    w.input_norm = dense(p + "input_layernorm.weight", {d});
    w.post_attention_norm = dense(p + "post_attention_layernorm.weight", {d});
    const std::string a = p + "self_attn.";
    // This rank's heads and the output-projection groups they feed (as the CPU loader).
    w.sinks = dense_part(a + "sinks", h, shard_.heads);
    w.q_a = linear(ckpt_.weight(a + "q_a_proj", rq, d));
    w.q_a_norm = dense(a + "q_a_norm.weight", {rq});
    w.q_b = linear(ckpt_.weight(a + "q_b_proj", h * dh, rq), false, rows_of(scaled(shard_.heads, dh)));
    w.kv = linear(ckpt_.weight(a + "kv_proj", dh, d));
    w.kv_norm = dense(a + "kv_norm.weight", {dh});
    w.o_a = linear(ckpt_.weight(a + "o_a_proj", g * ro, h * dh / g), false, rows_of(scaled(shard_.groups, ro)));
    w.o_b = linear(ckpt_.weight(a + "o_b_proj", d, g * ro), false, cols_of(scaled(shard_.groups, ro)));
    const int64_t rate = cfg_.compress_rates.at(l);
    if (w.type != AttentionType::kSliding) {
      const bool csa = w.type == AttentionType::kCompressedSparse;
      w.compressor = compressor(a + "compressor.", rate, dh, csa);
      if (csa) {
        const int64_t hi = cfg_.index_n_heads, di = cfg_.index_head_dim;
        const std::string ip = a + "compressor.indexer.";
        w.indexer_q_b = linear(ckpt_.weight(ip + "q_b_proj", hi * di, rq));
        w.indexer_weights = linear(ckpt_.weight(ip + "scorer.weights_proj", hi, d));
        w.indexer = compressor(ip, rate, di, /*overlap=*/true);
      }
    }
    load_moe(l, p + "mlp.", w);
    return w;
  }

  std::vector<int32_t> tid2eid(const std::string& prefix) const {
    return cpu::to_index_table(ckpt_.get(prefix + "gate.tid2eid", {cfg_.vocab_size, cfg_.num_experts_per_tok}),
                               cfg_.n_routed_experts);
  }

  // Sharded: the router whole, this rank's routed experts (shard_.experts) and
  // its slice of the shared expert's intermediate rows (shard_.shared).
  void load_moe(int64_t l, const std::string& prefix, DeviceLayer& w) {
    const int64_t d = cfg_.hidden_size, e_count = cfg_.n_routed_experts, inter = cfg_.moe_intermediate_size;
    const int64_t shared = cfg_.n_shared_experts * inter, shared_local = shard_.shared.size();
    w.hashed = cfg_.mlp_types.at(l) == MlpType::kHashMoe;
    const WeightRef gate = ckpt_.weight(prefix + "gate", e_count, d);
    MEGAMOE_CHECK(gate.format == WeightFormat::kDense, gate.name, ": the router must be stored dense (precision floor)");
    std::vector<std::array<WeightRef, 3>> experts;  // this rank's, in order
    for (int64_t e = shard_.experts.begin; e < shard_.experts.end; ++e) {
      experts.push_back({ckpt_.expert_weight(l, e, "gate_proj"), ckpt_.expert_weight(l, e, "up_proj"),
                         ckpt_.expert_weight(l, e, "down_proj")});
      const int64_t shapes[3][2] = {{inter, d}, {inter, d}, {d, inter}};
      const std::array<WeightRef, 3>& ex = experts.back();
      for (int i = 0; i < 3; ++i)
        MEGAMOE_CHECK(ex[i].out == shapes[i][0] && ex[i].in == shapes[i][1], ex[i].name, " is [", ex[i].out, ", ",
                      ex[i].in, "]: expected [", shapes[i][0], ", ", shapes[i][1], "]");
    }
    const WeightFormat format = experts[0][0].format;
    bool uniform = true;
    for (const auto& ex : experts)
      for (const WeightRef& r : ex) uniform = uniform && r.format == format;
    const bool fp4 = uniform && (format == WeightFormat::kNvfp4 || format == WeightFormat::kMxfp4);
    const bool widths_ok = d % 64 == 0 && inter % 64 == 0 && shared % 64 == 0 && e_count <= 1024 &&
                           cfg_.num_experts_per_tok <= 32;
    // A shard must run the op the whole model runs (else its numerics differ).
    MEGAMOE_CHECK(!(fp4 || w4a4_) || !widths_ok || shared_local % 64 == 0, prefix, ": sharded over ",
                  shard_.shard.size, " ranks, a rank's slice of the shared expert is ", shared_local,
                  " rows, not a multiple of 64 as the FP4 MoE op needs (choose a rank count that keeps it one)");
    std::optional<WeightRef> shared_refs[3];
    if (shared > 0) {
      shared_refs[0] = ckpt_.weight(prefix + "shared_experts.gate_proj", shared, d);
      shared_refs[1] = ckpt_.weight(prefix + "shared_experts.up_proj", shared, d);
      shared_refs[2] = ckpt_.weight(prefix + "shared_experts.down_proj", d, shared);
    }
    if (w4a4_) {
      // The scales first: their reader names the first expert that is not NVFP4.
      const cpu::ExpertInputScales scales = cpu::read_expert_input_scales(ckpt_, l);
      MEGAMOE_CHECK(widths_ok, prefix, ": W4A4 on cuda needs the FP4 MoE op, which takes hidden_size, ",
                    "moe_intermediate_size and the shared expert's width in multiples of 64 (here ", d, ", ", inter,
                    ", ", shared, "); this layer would run on the dense fallback, which has no W4A4 mode");
      load_fp4_moe(l, prefix, w, gate, experts, format, shared_refs, &scales);
    } else if (fp4 && widths_ok) {
      load_fp4_moe(l, prefix, w, gate, experts, format, shared_refs);
    } else {
      load_dense_moe(prefix, w, gate, experts, shared_refs);
    }
  }

  void load_fp4_moe(int64_t l, const std::string& prefix, DeviceLayer& w, const WeightRef& gate,
                    const std::vector<std::array<WeightRef, 3>>& experts, WeightFormat format,
                    const std::optional<WeightRef> (&shared_refs)[3],
                    const cpu::ExpertInputScales* w4a4_scales = nullptr) {
    MoeLayerConfig c;
    c.hidden = static_cast<int>(cfg_.hidden_size);
    c.intermediate = static_cast<int>(cfg_.moe_intermediate_size);
    c.shared_inter = static_cast<int>(shard_.shared.size());  // this rank's slice (all of it unsharded)
    c.experts = static_cast<int>(cfg_.n_routed_experts);
    if (shard_.shard.sharded())
      c.expert_begin = static_cast<int>(shard_.experts.begin), c.local_experts = static_cast<int>(shard_.experts.size());
    c.top_k = static_cast<int>(cfg_.num_experts_per_tok);
    c.max_tokens = static_cast<int>(max_tokens_);
    c.routed_scaling = static_cast<float>(cfg_.routed_scaling_factor);
    c.swiglu_limit = static_cast<float>(cfg_.swiglu_limit);
    c.format = format == WeightFormat::kNvfp4 ? ExpertFormat::kNvfp4 : ExpertFormat::kMxfp4;
    c.w4a4 = w4a4_scales != nullptr;
    // Stack the experts' stored bytes: [E, rows, cols/2] codes, [E, rows, cols/G] scales, [E] globals.
    std::vector<uint8_t> q[3], s[3];
    std::vector<float> g[3];
    for (const auto& ex : experts) {
      for (int i = 0; i < 3; ++i) {
        const std::vector<uint8_t> codes = raw_bytes(*ex[i].weight), scales = raw_bytes(*ex[i].scale);
        q[i].insert(q[i].end(), codes.begin(), codes.end());
        s[i].insert(s[i].end(), scales.begin(), scales.end());
        if (format == WeightFormat::kNvfp4) {
          MEGAMOE_CHECK(ex[i].global_scale != nullptr, ex[i].name, ": NVFP4 weight without weight_scale_2");
          g[i].push_back(f32_of(*ex[i].global_scale).at(0));
        }
      }
    }
    std::vector<uint16_t> gate_bf16 = bf16_of(*gate.weight);
    std::vector<float> bias;
    std::vector<int32_t> table;
    if (w.hashed) {
      table = tid2eid(prefix);
    } else {
      bias = f32_of(ckpt_.get(prefix + "gate.e_score_correction_bias", {cfg_.n_routed_experts}));
    }
    MoeHostWeights hw;
    hw.gate = gate_bf16;
    hw.bias = bias;
    hw.tid2eid = table;
    hw.w1 = q[0], hw.w3 = q[1], hw.w2 = q[2];
    hw.s1 = s[0], hw.s3 = s[1], hw.s2 = s[2];
    if (format == WeightFormat::kNvfp4) hw.g1 = g[0], hw.g3 = g[1], hw.g2 = g[2];
    // W4A4 static scales of this rank's experts (read for all E; empty = dynamic).
    std::vector<float> in13, in2;
    if (w4a4_scales != nullptr) {
      auto local = [&](const std::vector<float>& all) {
        return all.empty() ? all
                           : std::vector<float>(all.begin() + shard_.experts.begin, all.begin() + shard_.experts.end);
      };
      in13 = local(w4a4_scales->w13), in2 = local(w4a4_scales->w2);
      hw.input_scale_w13 = in13, hw.input_scale_w2 = in2;
    }
    std::vector<uint16_t> sb[3];
    std::vector<uint8_t> fp8_codes[3], fp8_e8m0[3];
    std::vector<float> fp8_f32[3];
    if (shared_refs[0]) {
      const bool fp8 = shared_refs[0]->format == WeightFormat::kFp8Block;
      // Sharded, an FP8 shared expert goes to bf16 here (as MoeLayer would:
      // shared_fp8.hpp, elementwise) before slicing, so a rank's rows need not
      // fall on 128-row scale tiles.
      const bool fp8_as_stored = fp8 && !shard_.shard.sharded();
      for (int i = 0; i < 3; ++i) {
        const WeightRef& r = *shared_refs[i];
        if (fp8) {
          MEGAMOE_CHECK(r.format == WeightFormat::kFp8Block && r.scale != nullptr, r.name,
                        ": the shared expert mixes formats");
          fp8_codes[i] = raw_bytes(*r.weight);
          if (r.scale->dtype == DType::F32) {
            fp8_f32[i] = f32_of(*r.scale);
          } else {
            fp8_e8m0[i] = raw_bytes(*r.scale);
          }
          if (!fp8_as_stored) {
            const Fp8BlockMatrix whole{fp8_codes[i], fp8_e8m0[i], fp8_f32[i]};
            sb[i] = part_of(fp8_block128_to_bf16(whole, static_cast<int>(r.out), static_cast<int>(r.in), r.name),
                            r.out, r.in, shared_slice(i));
            fp8_codes[i].clear(), fp8_e8m0[i].clear(), fp8_f32[i].clear();
          }
        } else {
          MEGAMOE_CHECK(r.format == WeightFormat::kDense, r.name, ": shared expert format not supported on cuda");
          sb[i] = part_of(bf16_of(*r.weight), r.out, r.in, shared_slice(i));
        }
      }
      if (fp8_as_stored) {
        hw.shared_fp8_w1 = {fp8_codes[0], fp8_e8m0[0], fp8_f32[0]};
        hw.shared_fp8_w3 = {fp8_codes[1], fp8_e8m0[1], fp8_f32[1]};
        hw.shared_fp8_w2 = {fp8_codes[2], fp8_e8m0[2], fp8_f32[2]};
      } else {
        hw.shared_w1 = sb[0], hw.shared_w3 = sb[1], hw.shared_w2 = sb[2];
      }
    }
    for (int i = 0; i < 3; ++i) uploaded_ += q[i].size() + s[i].size() + g[i].size() * 4 + sb[i].size() * 2 + fp8_codes[i].size();
    w.moe = std::make_unique<MoeLayer>(c, hw);
    (void)l;
  }

  void load_dense_moe(const std::string& prefix, DeviceLayer& w, const WeightRef& gate,
                      const std::vector<std::array<WeightRef, 3>>& experts,
                      const std::optional<WeightRef> (&shared_refs)[3]) {
    const double widened = 3.0 * 4.0 * static_cast<double>(experts.size()) *
                           static_cast<double>(cfg_.hidden_size * cfg_.moe_intermediate_size);
    MEGAMOE_CHECK(widened < 4e9, prefix, ": routed experts that are not FP4 at widths the FP4 MoE op supports ",
                  "(hidden, intermediate multiples of 64) run on the dense fallback, which would need ", widened / 1e9,
                  " GB of fp32 experts per layer; not supported");
    auto dense_f32 = [](const WeightRef& r) {
      const Tensor t = cpu::dequantize_weight(r);
      return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
    };
    auto d = std::make_unique<DenseMoeWeights>();
    const Tensor g = cpu::dequantize_weight(gate);
    d->gate = put(std::vector<float>(g.data<float>(), g.data<float>() + g.numel()));
    if (w.hashed) {
      d->tid2eid = put(tid2eid(prefix));
    } else {
      d->bias = put(f32_of(ckpt_.get(prefix + "gate.e_score_correction_bias", {cfg_.n_routed_experts})));
    }
    std::vector<float> stacked[3];
    for (const auto& ex : experts)
      for (int i = 0; i < 3; ++i) {
        const std::vector<float> v = dense_f32(ex[i]);
        stacked[i].insert(stacked[i].end(), v.begin(), v.end());
      }
    d->w1 = put(stacked[0]), d->w3 = put(stacked[1]), d->w2 = put(stacked[2]);
    if (shared_refs[0]) {  // this rank's slice
      d->shared_w1 = put(part_of(dense_f32(*shared_refs[0]), shared_refs[0]->out, shared_refs[0]->in, shared_slice(0)));
      d->shared_w3 = put(part_of(dense_f32(*shared_refs[1]), shared_refs[1]->out, shared_refs[1]->in, shared_slice(1)));
      d->shared_w2 = put(part_of(dense_f32(*shared_refs[2]), shared_refs[2]->out, shared_refs[2]->in, shared_slice(2)));
    }
    w.dense_moe = std::move(d);
  }

  const Checkpoint& ckpt_;
  const ModelConfig& cfg_;
  int64_t max_tokens_ = 0;
  bool progress_ = false;
  bool w4a4_ = false;
  ShardLayout shard_;  // this rank's part ({0, 1}: everything)
  std::atomic<size_t> uploaded_{0};
  mutable std::mutex report_mutex_;
};

}  // namespace

DeviceModel load_device_model(const Checkpoint& checkpoint, int64_t max_tokens, bool progress,
                              MoeActivationFormat moe_activations, const ShardSpec& shard) {
  return Loader(checkpoint, max_tokens, progress, moe_activations, shard).load();
}

}  // namespace megamoe::cuda
