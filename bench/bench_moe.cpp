// `megamoe bench moe`: times the CUDA MoE forward (src/backend/cuda/moe) for
// the DeepSeek-V4 Flash and Pro shapes, T in {1,4,16,64,256,4096}, uniform
// and skewed routing. Per case: median of CUDA-event times over warm,
// rotating inputs, for eager launches and for a CUDA graph replay of the
// whole forward (what decode in the engine sees); effective bandwidth = distinct expert weight+scale bytes
// touched (routed experts actually selected + shared expert + router gate) /
// time; TFLOP/s of the expert GEMMs; % of the device-to-device copy bandwidth
// measured in the same run. Weights are random bytes (timing does not depend
// on their values beyond routing).
#include <algorithm>
#include <cstring>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "backend/cuda/moe/nvfp4_moe.hpp"
#include "cli/command.hpp"
#include "core/error.hpp"

namespace {

using megamoe::cuda::DeviceBuffer;
using megamoe::cuda::ExpertFormat;
using megamoe::cuda::MoeLayer;
using megamoe::cuda::MoeLayerConfig;

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename T, typename F>
std::vector<T> fill(size_t n, F f) {
  std::vector<T> v(n);
  const size_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (size_t w = 0; w < threads; ++w)
    pool.emplace_back([&, w] {
      for (size_t i = w * n / threads; i < (w + 1) * n / threads; ++i) v[i] = f(i);
    });
  for (auto& t : pool) t.join();
  return v;
}

uint16_t bf16_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
float unit(uint64_t h) { return static_cast<float>((h >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f; }

double measure_copy_tbps() {
  const size_t bytes = size_t(2) << 30;
  DeviceBuffer a(bytes), b(bytes);
  MEGAMOE_CUDA_CHECK(cudaMemset(a.get(), 1, bytes));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    MEGAMOE_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t;
    cudaEventElapsedTime(&t, e0, e1);
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3) / 1e12;  // read + write
}

template <typename Xin>
std::string time_stages(const MoeLayer& layer, Xin xin, int T, uint16_t* y, cudaStream_t stream, int iters,
                        const char* shape, megamoe::cuda::MoePath path) {
  constexpr int kN = MoeLayer::kStageCount;
  cudaEvent_t ev[kN + 1];
  for (auto& e : ev) MEGAMOE_CUDA_CHECK(cudaEventCreate(&e));
  std::vector<std::vector<float>> ms(kN + 1);  // [kN] = whole forward
  for (int i = 0; i < iters + 3; ++i) {
    layer.forward_with_stage_events(xin(i), nullptr, T, y, nullptr, stream, path, ev);
    MEGAMOE_CUDA_CHECK(cudaEventSynchronize(ev[kN]));
    if (i < 3) continue;  // warm-up
    for (int st = 0; st < kN; ++st) {
      float t = 0;
      MEGAMOE_CUDA_CHECK(cudaEventElapsedTime(&t, ev[st], ev[st + 1]));
      ms[st].push_back(t);
    }
    float t = 0;
    MEGAMOE_CUDA_CHECK(cudaEventElapsedTime(&t, ev[0], ev[kN]));
    ms[kN].push_back(t);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  char buf[256];
  int n = std::snprintf(buf, sizeof(buf), "%-6s %5d %-18s", shape, T, layer.describe_path(T, path).c_str());
  for (auto& v : ms) {
    std::sort(v.begin(), v.end());
    n += std::snprintf(buf + n, sizeof(buf) - n, " %9.1f", v[v.size() / 2] * 1e3);
  }
  return buf;
}

// The whole forward as a CUDA graph replay (how decode runs it in the engine):
// one graph captured per rotating input buffer, replayed round-robin, CUDA
// events around each replay; returns the median in ms.
template <typename Xin>
float time_graph(const MoeLayer& layer, Xin xin, int T, uint16_t* y, cudaStream_t stream, int iters,
                 megamoe::cuda::MoePath path, int rotations) {
  std::vector<cudaGraphExec_t> execs(rotations);
  for (int r = 0; r < rotations; ++r) {
    cudaGraph_t graph;
    MEGAMOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    layer.forward(xin(r), nullptr, T, y, nullptr, stream, path);
    MEGAMOE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    MEGAMOE_CUDA_CHECK(cudaGraphInstantiate(&execs[r], graph, 0));
    MEGAMOE_CUDA_CHECK(cudaGraphDestroy(graph));
  }
  cudaEvent_t e0, e1;
  MEGAMOE_CUDA_CHECK(cudaEventCreate(&e0));
  MEGAMOE_CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < iters + 3; ++i) {
    MEGAMOE_CUDA_CHECK(cudaEventRecord(e0, stream));
    MEGAMOE_CUDA_CHECK(cudaGraphLaunch(execs[i % rotations], stream));
    MEGAMOE_CUDA_CHECK(cudaEventRecord(e1, stream));
    MEGAMOE_CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    MEGAMOE_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 3) ms.push_back(t);  // warm-up
  }
  for (auto& e : execs) MEGAMOE_CUDA_CHECK(cudaGraphExecDestroy(e));
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Shape {
  const char* name;
  int D, I, E, k, Is;
  float scaling;
};

int run_bench(int argc, char** argv) {
  CLI::App app{"time the CUDA NVFP4/MXFP4 MoE forward (Flash and Pro shapes)", argv[0]};
  std::vector<int> token_counts{1, 4, 16, 64, 256, 4096};
  std::vector<std::string> shapes{"flash", "pro"};
  int iters = 30;
  bool mxfp4 = false;
  bool both_paths = false;
  app.add_option("--tokens", token_counts, "token counts T");
  app.add_option("--shapes", shapes, "flash and/or pro");
  app.add_option("--iters", iters, "timed iterations per case");
  app.add_flag("--mxfp4", mxfp4, "MXFP4 experts instead of NVFP4");
  bool w4a4 = false;
  app.add_flag("--w4a4", w4a4, "W4A4 mode: activations NVFP4-quantized before each GEMM (dynamic scales)");
  app.add_flag("--both-paths", both_paths, "for T >= 64 time the decode (gemv) and the prefill (wgmma) path each");
  std::vector<std::string> path_names;
  app.add_option("--paths", path_names, "paths to time at every T: any of auto, gemv, wgmma (overrides --both-paths)")
      ->check(CLI::IsMember({"auto", "gemv", "wgmma"}));
  std::vector<int> stage_tokens{1, 64};
  std::vector<std::string> routings{"uniform", "skewed"};
  app.add_option("--routings", routings, "uniform and/or skewed");
  app.add_option("--stage-tokens", stage_tokens, "T values that also get a per-stage breakdown (uniform routing)");
  CLI11_PARSE(app, argc, argv);

  std::printf("device: %s\n", megamoe::cuda::describe_device(0).c_str());
  const double copy_tbps = measure_copy_tbps();
  std::printf("device-to-device copy (read+write): %.2f TB/s\n", copy_tbps);
  std::printf("%-6s %-5s %-8s %5s %-18s %10s %9s %9s %8s %7s %9s %9s %8s\n", "shape", "fmt", "routing", "T", "path",
              "median_us", "GB_touch", "eff_TB/s", "%copy", "TFLOP/s", "graph_us", "graph_TB/s", "g_%copy");
  std::vector<std::string> stage_lines;
  const int max_t = *std::max_element(token_counts.begin(), token_counts.end());
  for (const std::string& shape_name : shapes) {
    const Shape s = shape_name == "pro" ? Shape{"pro", 7168, 3072, 384, 6, 3072, 2.5f}
                                        : Shape{"flash", 4096, 2048, 256, 6, 2048, 1.5f};
    const ExpertFormat fmt = mxfp4 ? ExpertFormat::kMxfp4 : ExpertFormat::kNvfp4;
    const size_t G = mxfp4 ? 32 : 16, D = s.D, I = s.I, E = s.E, Is = s.Is;
    MoeLayerConfig cfg{s.D, s.I, s.Is, s.E, s.k, max_t, s.scaling, 10.0f, fmt, w4a4};
    auto codes = [&](size_t n, uint64_t seed) { return fill<uint8_t>(n, [=](size_t i) { return uint8_t(mix(seed + i)); }); };
    auto scales = [&](size_t n, uint64_t seed) {
      return fill<uint8_t>(n, [=](size_t i) { return uint8_t(mxfp4 ? 120 + mix(seed + i) % 3 : 0x30 + mix(seed + i) % 16); });
    };
    const auto w1 = codes(E * I * D / 2, 1), w3 = codes(E * I * D / 2, 2), w2 = codes(E * D * I / 2, 3);
    const auto s1 = scales(E * I * D / G, 4), s3 = scales(E * I * D / G, 5), s2 = scales(E * D * I / G, 6);
    std::vector<float> g(mxfp4 ? 0 : E, 1.0f / 64);
    const auto gate = fill<uint16_t>(E * D, [&](size_t i) { return bf16_of(unit(mix(7000 + i)) * 0.05f); });
    const auto sw1 = fill<uint16_t>(Is * D, [&](size_t i) { return bf16_of(unit(mix(8000 + i)) * 0.02f); });
    const auto sw3 = fill<uint16_t>(Is * D, [&](size_t i) { return bf16_of(unit(mix(9000 + i)) * 0.02f); });
    const auto sw2 = fill<uint16_t>(D * Is, [&](size_t i) { return bf16_of(unit(mix(9500 + i)) * 0.02f); });
    for (const std::string& routing_name : routings) {
      const char* routing = routing_name.c_str();
      const bool skewed = routing_name == "skewed";
      // Skewed: the bias sends every token to experts 0..k-1 (the worst case for
      // balance, the best for weight reuse).
      std::vector<float> bias(E, 0.0f);
      if (skewed)
        for (int e = 0; e < s.k; ++e) bias[e] = 100.0f;
      megamoe::cuda::MoeHostWeights hw;
      hw.gate = gate, hw.bias = bias, hw.w1 = w1, hw.w3 = w3, hw.w2 = w2, hw.s1 = s1, hw.s3 = s3, hw.s2 = s2;
      hw.g1 = g, hw.g3 = g, hw.g2 = g, hw.shared_w1 = sw1, hw.shared_w3 = sw3, hw.shared_w2 = sw2;
      const MoeLayer layer(cfg, hw);
      constexpr int kRot = 8;  // rotating inputs: different tokens route to different experts
      DeviceBuffer x(size_t(kRot) * max_t * D * 2), y(size_t(max_t) * D * 2);
      {
        const auto xs = fill<uint16_t>(size_t(kRot) * max_t * D, [&](size_t i) { return bf16_of(unit(mix(12345 + i))); });
        x.upload(xs.data(), xs.size() * 2);
      }
      megamoe::cuda::Stream stream;
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0), cudaEventCreate(&e1);
      std::vector<std::pair<int, megamoe::cuda::MoePath>> cases;
      for (int T : token_counts) {
        if (!path_names.empty()) {
          for (const std::string& name : path_names) {
            const megamoe::cuda::MoePath path = name == "gemv"    ? megamoe::cuda::MoePath::kGemv
                                                : name == "wgmma" ? megamoe::cuda::MoePath::kWgmma
                                                                  : megamoe::cuda::MoePath::kAuto;
            cases.push_back({T, path});
          }
        } else if (both_paths && T >= 64) {
          cases.push_back({T, megamoe::cuda::MoePath::kGemv});
          cases.push_back({T, megamoe::cuda::MoePath::kWgmma});
        } else {
          cases.push_back({T, megamoe::cuda::MoePath::kAuto});
        }
      }
      for (const auto& [T, path] : cases) {
        auto xin = [&](int r) { return x.as<uint16_t>() + size_t(r % kRot) * max_t * D; };
        for (int i = 0; i < 3; ++i) layer.forward(xin(i), nullptr, T, y.as<uint16_t>(), nullptr, stream.get(), path);
        std::vector<float> ms;
        double bytes_sum = 0;
        for (int i = 0; i < iters; ++i) {
          cudaEventRecord(e0, stream.get());
          layer.forward(xin(i), nullptr, T, y.as<uint16_t>(), nullptr, stream.get(), path);
          cudaEventRecord(e1, stream.get());
          cudaEventSynchronize(e1);
          float t;
          cudaEventElapsedTime(&t, e0, e1);
          ms.push_back(t);
          std::vector<int32_t> ids(size_t(T) * s.k);  // distinct experts of this call
          MEGAMOE_CUDA_CHECK(cudaMemcpy(ids.data(), layer.topk_ids(), ids.size() * 4, cudaMemcpyDeviceToHost));
          const std::set<int32_t> distinct(ids.begin(), ids.end());
          bytes_sum += double(distinct.size()) * layer.expert_bytes() + layer.shared_bytes() + double(E) * D * 2;
        }
        std::sort(ms.begin(), ms.end());
        const double med_s = ms[ms.size() / 2] * 1e-3;
        const double g_med_s = time_graph(layer, xin, T, y.as<uint16_t>(), stream.get(), iters, path, kRot) * 1e-3;
        const double bytes = bytes_sum / iters;
        const double flops = 2.0 * T * (double(s.k) * 3 * D * I + 3.0 * D * Is);
        const double tbps = bytes / med_s / 1e12, g_tbps = bytes / g_med_s / 1e12;
        std::printf("%-6s %-5s %-8s %5d %-18s %10.1f %9.3f %9.2f %7.1f%% %7.1f %9.1f %9.2f %7.1f%%\n", s.name,
                    mxfp4 ? "mxfp4" : w4a4 ? "w4a4" : "nvfp4", routing, T, layer.describe_path(T, path).c_str(), med_s * 1e6,
                    bytes / 1e9, tbps, 100.0 * tbps / copy_tbps, flops / med_s / 1e12, g_med_s * 1e6, g_tbps,
                    100.0 * g_tbps / copy_tbps);
        std::fflush(stdout);
        if (!skewed && std::find(stage_tokens.begin(), stage_tokens.end(), T) != stage_tokens.end()) {
          stage_lines.push_back(time_stages(layer, xin, T, y.as<uint16_t>(), stream.get(), iters, s.name, path));
          std::printf("  stages us (scores select gemm1 gemm2 combine sum): %s\n", stage_lines.back().c_str());
          std::fflush(stdout);
        }
      }
    }
  }
  // Per-stage breakdown: an event before the first launch and after each
  // stage of an eager forward (no graph), median per stage over the calls;
  // a stage's time includes any launch gap before its kernel starts.
  std::printf("\nper-stage breakdown (uniform routing, eager launches, median us):\n");
  std::printf("%-6s %5s %-18s %9s %9s %9s %9s %9s %9s\n", "shape", "T", "path", "scores", "select", "gemm1", "gemm2", "combine",
              "sum");
  for (const std::string& line : stage_lines) std::printf("%s\n", line.c_str());
  std::printf("%%copy = effective bandwidth / copy bandwidth (read+write bytes per second of a 2 GiB cudaMemcpy D2D)\n");
  return 0;
}

const megamoe::cli::BenchRegistration kBenchMoe{"moe", "the CUDA MoE forward at Flash and Pro shapes", run_bench};

}  // namespace
