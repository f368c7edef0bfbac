// TIMING HARNESS (not a test): bench_sm90_linear times launch_linear
// (kernels/gemm/sm90_linear.cu) at the DeepSeek-V4-Flash shapes of
// kernels/gemm/NOTES.md, for each T and path (auto / gemv / tiled).
// Per case: median over 15 batches of CUDA-event time / launches, warm,
// weights rotated over enough copies (>= 256 MB in all, L2 is 50 MB) that no launch finds
// its weights in L2. Prints us, weight TB/s, TFLOP/s, % of 4.8 TB/s and % of
// the 66.9 TFLOP/s fp32 FMA peak. Weights are random bytes (timing does not
// depend on their values).
//   bench_sm90_linear [--tokens 1,2,4,8,16,64,256] [--paths auto,gemv,tiled] [--iters 20] [--only q_b]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/device.hpp"
#include "kernels/gemm/linear_params.hpp"
#include "kernels/gemm/sm90_linear.hpp"

namespace {

namespace kern = megamoe::cuda::kernels;
using megamoe::cuda::DeviceBuffer;

constexpr double kHbmPeak = 4.8e12;
constexpr double kFp32Peak = 66.9e12;

struct Shape {
  const char* name;
  int out, in, groups;
  kern::LinearFormat format;
};

const Shape kShapes[] = {
    {"q_a", 1024, 4096, 1, kern::LinearFormat::kFp8Block128},
    {"q_b", 32768, 1024, 1, kern::LinearFormat::kFp8Block128},
    {"kv", 512, 4096, 1, kern::LinearFormat::kFp8Block128},
    {"o_a(G=8)", 8192, 4096, 8, kern::LinearFormat::kFp8Block128},
    {"o_b", 4096, 8192, 1, kern::LinearFormat::kFp8Block128},
    {"shared_w1", 2048, 4096, 1, kern::LinearFormat::kFp8Block128},
    {"lm_head", 129280, 4096, 1, kern::LinearFormat::kBf16},
};

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<int> parse_ints(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

const char* path_name(kern::LinearPath p) {
  return p == kern::LinearPath::kGemv ? "gemv" : p == kern::LinearPath::kTiled ? "tiled" : "auto";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> tokens = {1, 2, 4, 8, 16, 64, 256};
  std::vector<kern::LinearPath> paths = {kern::LinearPath::kAuto, kern::LinearPath::kGemv, kern::LinearPath::kTiled};
  int iters = 20;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--tokens") {
      tokens = parse_ints(argv[i + 1]);
    } else if (flag == "--iters") {
      iters = std::max(1, std::atoi(argv[i + 1]));
    } else if (flag == "--only") {
      only = argv[i + 1];
    } else if (flag == "--paths") {
      paths.clear();
      const std::string s = argv[i + 1];
      if (s.find("auto") != std::string::npos) paths.push_back(kern::LinearPath::kAuto);
      if (s.find("gemv") != std::string::npos) paths.push_back(kern::LinearPath::kGemv);
      if (s.find("tiled") != std::string::npos) paths.push_back(kern::LinearPath::kTiled);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (megamoe::cuda::device_count() == 0) {
    std::fprintf(stderr, "bench_sm90_linear: no CUDA device\n");
    return 1;
  }
  std::printf("device: %s\n", megamoe::cuda::describe_device(0).c_str());
  std::printf("%-10s %-5s %5s %-11s %10s %8s %9s %7s %7s\n", "layer", "fmt", "T", "path", "us", "W TB/s", "TFLOP/s",
              "%HBM", "%FP32");
  const int t_max = *std::max_element(tokens.begin(), tokens.end());
  cudaStream_t stream;
  MEGAMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  MEGAMOE_CUDA_CHECK(cudaEventCreate(&e0));
  MEGAMOE_CUDA_CHECK(cudaEventCreate(&e1));
  for (const Shape& s : kShapes) {
    if (!only.empty() && only != s.name) continue;
    const bool fp8 = s.format == kern::LinearFormat::kFp8Block128;
    const size_t elem = s.format == kern::LinearFormat::kBf16 ? 2 : s.format == kern::LinearFormat::kF32 ? 4 : 1;
    const size_t w_bytes = static_cast<size_t>(s.out) * s.in * elem;
    const size_t scale_bytes = fp8 ? static_cast<size_t>((s.out + 127) / 128) * ((s.in + 127) / 128) : 0;
    const int copies =
        static_cast<int>(std::min<size_t>(128, std::max<size_t>(1, ((size_t(256) << 20) + w_bytes - 1) / w_bytes)));
    std::vector<uint8_t> host(w_bytes);
    for (size_t i = 0; i < w_bytes; ++i) {
      uint8_t b = static_cast<uint8_t>(mix(i));
      if (fp8 && (b & 0x7F) == 0x7F) b = 0x38;  // no NaN codes (timing does not care, tidiness does)
      host[i] = b;
    }
    if (s.format == kern::LinearFormat::kBf16)
      for (size_t i = 1; i < w_bytes; i += 2) host[i] = static_cast<uint8_t>(0x3C + (host[i] & 0x81));  // finite
    std::vector<DeviceBuffer> w;
    for (int c = 0; c < copies; ++c) {
      w.emplace_back(w_bytes);
      w.back().upload(host.data(), w_bytes, stream);
    }
    std::vector<uint8_t> scales(scale_bytes, 120);  // E8M0 2^-7
    DeviceBuffer sc(std::max<size_t>(scale_bytes, 1));
    if (scale_bytes) sc.upload(scales.data(), scale_bytes, stream);
    const int64_t x_cols = static_cast<int64_t>(s.groups) * s.in;
    std::vector<float> xh(static_cast<size_t>(t_max * x_cols));
    for (size_t i = 0; i < xh.size(); ++i) xh[i] = static_cast<float>((mix(i + 7) >> 40) & 0xFFFF) / 65536.0f - 0.5f;
    DeviceBuffer x(xh.size() * 4), y(static_cast<size_t>(t_max) * s.out * 4);
    x.upload(xh.data(), xh.size() * 4, stream);
    for (int t : tokens) {
      for (kern::LinearPath path : paths) {
        kern::LinearParams p;
        p.tokens = t;
        p.groups = s.groups;
        p.weight.format = s.format;
        p.weight.out = s.out;
        p.weight.in = s.in;
        p.weight.scale = fp8 ? sc.get() : nullptr;
        p.weight.scale_e8m0 = true;
        p.x = x.as<float>();
        p.ldx = static_cast<int>(x_cols);
        p.y = y.as<float>();
        p.ldy = s.out;
        int next = 0;
        auto launch = [&] {
          p.weight.w = w[static_cast<size_t>(next)].get();
          next = (next + 1) % copies;
          kern::launch_linear(p, path, stream);
        };
        for (int i = 0; i < 3; ++i) launch();
        MEGAMOE_CUDA_CHECK(cudaGetLastError());
        std::vector<float> per_launch_ms;
        for (int b = 0; b < 15; ++b) {
          MEGAMOE_CUDA_CHECK(cudaEventRecord(e0, stream));
          for (int i = 0; i < iters; ++i) launch();
          MEGAMOE_CUDA_CHECK(cudaEventRecord(e1, stream));
          MEGAMOE_CUDA_CHECK(cudaEventSynchronize(e1));
          float ms = 0.0f;
          MEGAMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
          per_launch_ms.push_back(ms / static_cast<float>(iters));
        }
        MEGAMOE_CUDA_CHECK(cudaGetLastError());
        std::sort(per_launch_ms.begin(), per_launch_ms.end());
        const double sec = per_launch_ms[per_launch_ms.size() / 2] * 1e-3;
        const double bytes = static_cast<double>(w_bytes + scale_bytes);
        const double flops = 2.0 * s.out * static_cast<double>(s.in) * t;
        const kern::LinearPath ran = path == kern::LinearPath::kAuto ? kern::linear_auto_path(p) : path;
        char path_col[16];
        std::snprintf(path_col, sizeof path_col, "%s%s", path == kern::LinearPath::kAuto ? "auto>" : "",
                      path_name(ran));
        std::printf("%-10s %-5s %5d %-11s %10.2f %8.3f %9.2f %6.1f%% %6.1f%%\n", s.name, fp8 ? "fp8" : "bf16", t,
                    path_col, sec * 1e6, bytes / sec / 1e12, flops / sec / 1e12, 100.0 * bytes / sec / kHbmPeak,
                    100.0 * flops / sec / kFp32Peak);
        std::fflush(stdout);
      }
    }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(stream);
  return 0;
}
