// Small row-wise kernels (interface: norm_params.hpp), fp32 activations.
//   rms_norm: one block per (row, group); the sum of squares is accumulated in
//     double (as cpu::rms_norm_rows does; these kernels are memory bound and
//     FP64 is half the FP32 rate on H200), inv = float(1 / sqrt(mean + eps)),
//     then x * inv and (x * inv) * weight as two fp32 roundings, like the CPU.
//     Agreement with the CPU is to the last bit except where the double sums
//     (different order) round inv differently.
//   rope: one thread per (row, rotary pair, group of up to 8 heads): the angle
//     float(pos) * omega in fp32, cos/sin in double rounded to float (the
//     double cos/sin are shared by the thread's heads), the rotation with
//     explicit _rn intrinsics so nvcc cannot contract it into FMAs (the CPU
//     rounds every product). Differs from RopeTable::apply only where CUDA's
//     double cos/sin (<= 2 ulp in double) round to another float.
//   embed: grid-stride over (token, channel); one table read, n_c writes. An
//     id outside [0, vocab) writes zeros and sets *error_flag.
//   to_bf16: round-to-nearest-even with the host codec's bit manipulation
//     (f32_to_bf16 in core/float_formats.cpp: NaN keeps sign and top payload,
//     quiet bit set), 4 values per thread when both pointers allow it.
// Constraints: width, dim, rope_dim even and > 0 as the params say; any sizes
// otherwise. Launchers only launch (nothing for an empty problem); the caller
// checks cudaGetLastError.
// Tests: tests/kernels/test_sm90_norm_rope.cpp (against cpu::rms_norm_rows,
// RopeTable::apply, the embedding copy and megamoe::f32_to_bf16).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/warp_reduce.cuh"
#include "kernels/norm/norm_params.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kNormThreads = 256;
constexpr int kPointwiseThreads = 256;
constexpr int kRopeHeadsPerThread = 8;

// Block-wide double sum; every thread gets the same value (the per-warp
// partials are added in warp order by every thread).
template <int kThreads>
__device__ __forceinline__ double block_sum_double(double v, double* scratch /*[kThreads / 32]*/) {
  v = warp_sum(v);
  __syncthreads();  // earlier readers of scratch are done
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  return total;
}

__global__ void __launch_bounds__(kNormThreads) rms_norm_kernel(const RmsNormParams p) {
  __shared__ double scratch[kNormThreads / 32];
  // Block b is (row b / groups, group b % groups): rows are groups * width wide, so it starts at b * width.
  float* row = p.x + static_cast<int64_t>(blockIdx.x) * p.width;
  double acc = 0.0;
  for (int i = threadIdx.x; i < p.width; i += kNormThreads) {
    const double v = row[i];
    acc += v * v;
  }
  const double sum = block_sum_double<kNormThreads>(acc, scratch);
  const float inv = static_cast<float>(1.0 / sqrt(sum / static_cast<double>(p.width) + static_cast<double>(p.eps)));
  for (int i = threadIdx.x; i < p.width; i += kNormThreads) {
    const float v = __fmul_rn(row[i], inv);
    row[i] = p.weight != nullptr ? __fmul_rn(v, p.weight[i]) : v;
  }
}

__global__ void __launch_bounds__(kPointwiseThreads) rope_kernel(const RopeParams p) {
  const int half = p.rope_dim / 2;
  const int head_groups = (p.heads + kRopeHeadsPerThread - 1) / kRopeHeadsPerThread;
  const int64_t total = static_cast<int64_t>(p.rows) * head_groups * half;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx % half);  // pair index: fastest, so a warp walks one head's tail
    const int64_t rest = idx / half;
    const int hg = static_cast<int>(rest % head_groups);
    const int64_t row = rest / head_groups;
    const float angle = __fmul_rn(static_cast<float>(p.row_pos[row]), p.omega[i]);
    double sd, cd;
    sincos(static_cast<double>(angle), &sd, &cd);
    const float c = static_cast<float>(cd);
    const float s = p.inverse ? -static_cast<float>(sd) : static_cast<float>(sd);
    const int h_end = min(p.heads, (hg + 1) * kRopeHeadsPerThread);
    for (int h = hg * kRopeHeadsPerThread; h < h_end; ++h) {
      float* v = p.x + (row * p.heads + h) * static_cast<int64_t>(p.dim) + (p.dim - p.rope_dim) + 2 * i;
      const float a = v[0], b = v[1];
      v[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
      v[1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
  }
}

__global__ void __launch_bounds__(kPointwiseThreads) embed_kernel(const EmbedParams p) {
  const int64_t total = static_cast<int64_t>(p.tokens) * p.hidden;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / p.hidden;
    const int c = static_cast<int>(idx % p.hidden);
    const int32_t id = p.ids[t];
    float v = 0.0f;
    if (id >= 0 && id < p.vocab) {
      const int64_t off = static_cast<int64_t>(id) * p.hidden + c;
      if (p.table_bf16) {
        v = __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(p.table)[off]) << 16);
      } else {
        v = static_cast<const float*>(p.table)[off];
      }
    } else if (c == 0 && p.error_flag != nullptr) {
      *p.error_flag = 1;
    }
    float* out = p.x + t * p.streams * static_cast<int64_t>(p.hidden) + c;
    for (int j = 0; j < p.streams; ++j) out[static_cast<int64_t>(j) * p.hidden] = v;
  }
}

// The host codec's rounding (core/float_formats.cpp f32_to_bf16), bit for bit.
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float x) {
  const uint32_t b = __float_as_uint(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x0040u);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

__global__ void __launch_bounds__(kPointwiseThreads) to_bf16_kernel(const ToBf16Params p, bool vec4) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    const int64_t n4 = p.n / 4;
    const float4* x4 = reinterpret_cast<const float4*>(p.x);
    uint2* y4 = reinterpret_cast<uint2*>(p.y);
    for (int64_t i = start; i < n4; i += stride) {
      const float4 v = x4[i];
      uint2 o;
      o.x = static_cast<uint32_t>(f32_to_bf16_bits(v.x)) | (static_cast<uint32_t>(f32_to_bf16_bits(v.y)) << 16);
      o.y = static_cast<uint32_t>(f32_to_bf16_bits(v.z)) | (static_cast<uint32_t>(f32_to_bf16_bits(v.w)) << 16);
      y4[i] = o;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + start; i < p.n; i += stride) p.y[i] = f32_to_bf16_bits(p.x[i]);
}

int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192);  // grid-stride beyond
}

}  // namespace

void launch_rms_norm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.groups <= 0 || p.width <= 0) return;
  const int64_t blocks = static_cast<int64_t>(p.rows) * p.groups;
  rms_norm_kernel<<<static_cast<unsigned>(blocks), kNormThreads, 0, stream>>>(p);
}

void launch_rope(const RopeParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.heads <= 0 || p.rope_dim <= 0) return;
  const int64_t work = static_cast<int64_t>(p.rows) * ((p.heads + kRopeHeadsPerThread - 1) / kRopeHeadsPerThread) *
                       (p.rope_dim / 2);
  rope_kernel<<<grid_for(work, kPointwiseThreads), kPointwiseThreads, 0, stream>>>(p);
}

void launch_embed(const EmbedParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.hidden <= 0) return;
  embed_kernel<<<grid_for(static_cast<int64_t>(p.tokens) * p.hidden, kPointwiseThreads), kPointwiseThreads, 0,
                 stream>>>(p);
}

void launch_to_bf16(const ToBf16Params& p, cudaStream_t stream) {
  if (p.n <= 0) return;
  const bool vec4 = (reinterpret_cast<uintptr_t>(p.x) % 16 == 0) && (reinterpret_cast<uintptr_t>(p.y) % 8 == 0);
  to_bf16_kernel<<<grid_for(vec4 ? (p.n + 3) / 4 : p.n, kPointwiseThreads), kPointwiseThreads, 0, stream>>>(p, vec4);
}

}  // namespace megamoe::cuda::kernels
