#include "backend/cuda/quant/nvfp4_quant.hpp"

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace megamoe::cuda {
namespace {

constexpr const char* kFn = "quantize_nvfp4_activation_cuda";
constexpr int64_t kBlock = 16;
constexpr int kThreads = kernels::kNvfp4QuantThreads;
constexpr int64_t kAmaxVecsPerThread = 4;  // the unrolled loads of pass 1

bool aligned(const void* p, uintptr_t alignment) { return reinterpret_cast<uintptr_t>(p) % alignment == 0; }

const char* dtype_name(ActDtype d) { return d == ActDtype::kBf16 ? "bf16" : "fp32"; }

const char* mode_name(Nvfp4ScaleMode m) {
  switch (m) {
    case Nvfp4ScaleMode::kDynamic:
      return "dynamic";
    case Nvfp4ScaleMode::kTensor:
      return "tensor-scale";
    case Nvfp4ScaleMode::kPerRow:
      return "per-row-scale";
  }
  return "?";
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void validate(const Nvfp4ActQuantArgs& a) {
  MEGAMOE_CHECK(a.dtype == ActDtype::kBf16 || a.dtype == ActDtype::kF32, kFn, ": unknown dtype ",
                static_cast<int>(a.dtype));
  MEGAMOE_CHECK(a.mode == Nvfp4ScaleMode::kDynamic || a.mode == Nvfp4ScaleMode::kTensor ||
                    a.mode == Nvfp4ScaleMode::kPerRow,
                kFn, ": unknown scale mode ", static_cast<int>(a.mode));
  MEGAMOE_CHECK(a.rows >= 0, kFn, ": rows = ", a.rows, " is negative");
  MEGAMOE_CHECK(a.cols > 0 && a.cols % kBlock == 0, kFn, ": cols = ", a.cols,
                " must be a positive multiple of 16 (the NVFP4 block)");
  // Element and byte offsets stay far inside int64 (the kernels index in int64).
  MEGAMOE_CHECK(a.rows <= (int64_t{1} << 60) / a.cols, kFn, ": shape [", a.rows, ", ", a.cols,
                "] is too large");
  if (a.rows == 0) return;
  MEGAMOE_CHECK(a.x != nullptr, kFn, ": x is null");
  MEGAMOE_CHECK(aligned(a.x, 16), kFn, ": x must be 16-byte aligned");
  MEGAMOE_CHECK(a.packed != nullptr, kFn, ": packed is null");
  MEGAMOE_CHECK(aligned(a.packed, 8), kFn, ": packed must be 8-byte aligned");
  MEGAMOE_CHECK(a.block_scales != nullptr, kFn, ": block_scales is null");
  if (a.mode == Nvfp4ScaleMode::kDynamic) {
    MEGAMOE_CHECK(a.input_scale == nullptr, kFn, ": input_scale is given in dynamic mode");
    MEGAMOE_CHECK(a.workspace != nullptr, kFn, ": workspace is null (dynamic mode needs ",
                  nvfp4_act_quant_workspace_bytes(), " bytes)");
    MEGAMOE_CHECK(aligned(a.workspace, 4), kFn, ": workspace must be 4-byte aligned");
    MEGAMOE_CHECK(a.workspace_bytes >= nvfp4_act_quant_workspace_bytes(), kFn, ": workspace of ",
                  a.workspace_bytes, " bytes, need ", nvfp4_act_quant_workspace_bytes());
  } else {
    MEGAMOE_CHECK(a.input_scale != nullptr, kFn, ": input_scale is null in ", mode_name(a.mode), " mode");
    MEGAMOE_CHECK(aligned(a.input_scale, 4), kFn, ": input_scale must be 4-byte aligned");
    MEGAMOE_CHECK(a.amax_out == nullptr, kFn, ": amax_out is only written in dynamic mode");
  }
  MEGAMOE_CHECK(a.mode != Nvfp4ScaleMode::kPerRow || a.global_scale_out == nullptr, kFn,
                ": global_scale_out is not written in per-row mode");
  MEGAMOE_CHECK(aligned(a.global_scale_out, 4) && aligned(a.amax_out, 4) && aligned(a.status, 4), kFn,
                ": global_scale_out / amax_out / status must be 4-byte aligned");
}

}  // namespace

size_t nvfp4_act_quant_workspace_bytes() {
  return sizeof(uint32_t) * static_cast<size_t>(kernels::kNvfp4MaxAmaxPartials);
}

Nvfp4ActQuantLaunch plan_nvfp4_act_quant(const Nvfp4ActQuantArgs& args, int sm_count, int amax_ctas_per_sm,
                                         int quantize_ctas_per_sm) {
  validate(args);
  MEGAMOE_CHECK(sm_count > 0 && amax_ctas_per_sm > 0 && quantize_ctas_per_sm > 0, kFn,
                ": sm_count = ", sm_count, ", CTAs per SM = ", amax_ctas_per_sm, " / ", quantize_ctas_per_sm);
  Nvfp4ActQuantLaunch launch;
  if (args.rows == 0) return launch;
  const int64_t elements = args.rows * args.cols;
  if (args.mode == Nvfp4ScaleMode::kDynamic) {
    const int64_t elems_per_vec = args.dtype == ActDtype::kBf16 ? 8 : 4;
    const int64_t vecs = elements / elems_per_vec;
    const int64_t resident = int64_t{amax_ctas_per_sm} * sm_count;
    launch.amax_grid =
        static_cast<int>(std::clamp<int64_t>(ceil_div(vecs, kThreads * kAmaxVecsPerThread), 1,
                                             std::min<int64_t>(resident, kernels::kNvfp4MaxAmaxPartials)));
  }
  const int64_t resident = int64_t{quantize_ctas_per_sm} * sm_count;
  launch.quantize_grid =
      static_cast<int>(std::clamp<int64_t>(ceil_div(elements / kBlock, kThreads), 1, resident));
  return launch;
}

std::string describe_nvfp4_act_quant(const Nvfp4ActQuantArgs& args, const Nvfp4ActQuantLaunch& launch) {
  return str_cat("nvfp4 act quant: ", dtype_name(args.dtype), " [", args.rows, ", ", args.cols, "] ",
                 mode_name(args.mode), " -> amax grid ", launch.amax_grid, " + quantize grid ",
                 launch.quantize_grid, " x ", launch.threads, " threads");
}

void quantize_nvfp4_activation_cuda(const Nvfp4ActQuantArgs& args, cudaStream_t stream) {
  validate(args);
  if (args.rows == 0) return;
  int device = 0, sm_count = 0;
  MEGAMOE_CUDA_CHECK(cudaGetDevice(&device));
  MEGAMOE_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const Nvfp4ActQuantLaunch launch =
      plan_nvfp4_act_quant(args, sm_count, kernels::nvfp4_amax_partials_ctas_per_sm(args.dtype),
                           kernels::nvfp4_act_quantize_ctas_per_sm(args.dtype));

  kernels::Nvfp4ActQuantParams p;
  p.rows = args.rows;
  p.cols = args.cols;
  p.dtype = args.dtype;
  p.mode = args.mode;
  p.x = args.x;
  p.input_scale = args.input_scale;
  p.amax_partials = static_cast<uint32_t*>(args.workspace);
  p.num_partials = launch.amax_grid;
  p.packed = args.packed;
  p.block_scales = args.block_scales;
  p.global_scale_out = args.global_scale_out;
  p.amax_out = args.amax_out;
  p.status = args.status;
  if (args.mode == Nvfp4ScaleMode::kDynamic) {
    kernels::launch_nvfp4_amax_partials(p, launch.amax_grid, stream);
    MEGAMOE_CUDA_CHECK_LAUNCH(stream);
  }
  kernels::launch_nvfp4_act_quantize(p, launch.quantize_grid, stream);
  MEGAMOE_CUDA_CHECK_LAUNCH(stream);
}

}  // namespace megamoe::cuda
