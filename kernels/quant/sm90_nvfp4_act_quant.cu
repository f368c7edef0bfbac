// NVFP4 activation quantizer kernels (sm_90a): pass 1 per-CTA abs-max
// partials, pass 2 global scale + per-16 E4M3 block scales + E2M1 codes.
// The interface, modes and the determinism argument are in
// sm90_nvfp4_act_quant.cuh; the exact op order in nvfp4_device_codec.cuh.
// Four instantiations in all: {amax, quantize} x {bf16, fp32}.
#include <cuda_runtime.h>

#include <atomic>

#include "kernels/quant/nvfp4_device_codec.cuh"
#include "kernels/quant/sm90_nvfp4_act_quant.cuh"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kThreads = kNvfp4QuantThreads;
constexpr int kWarps = kThreads / 32;
constexpr int kBlock = 16;  // NVFP4 elements per block scale

// Max over the CTA; every thread gets the result. Starts and ends with a
// barrier so `scratch` can be reused by a later call.
__device__ __forceinline__ uint32_t cta_max_u32(uint32_t v, uint32_t* scratch) {
  v = __reduce_max_sync(0xFFFFFFFFu, v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  uint32_t m = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) m = max(m, scratch[w]);
  return m;
}

// Abs-max FP32 bits of the 8 bf16 / 4 fp32 values in one 16-byte vector.
template <ActDtype kDtype>
__device__ __forceinline__ uint32_t vec_abs_max_bits(uint4 q) {
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (kDtype == ActDtype::kBf16) {
      m = max(m, max((w[i] & 0x7FFFu) << 16, w[i] & 0x7FFF0000u));
    } else {
      m = max(m, w[i] & 0x7FFFFFFFu);
    }
  }
  return m;
}

template <ActDtype kDtype>
__global__ void __launch_bounds__(kThreads) nvfp4_amax_partials_kernel(const Nvfp4ActQuantParams p) {
  __shared__ uint32_t scratch[kWarps];
  constexpr int64_t kElemsPerVec = kDtype == ActDtype::kBf16 ? 8 : 4;
  const int64_t n_vec = p.rows * p.cols / kElemsPerVec;  // exact: cols % 16 == 0
  const uint4* x = static_cast<const uint4*>(p.x);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  uint32_t m = 0;
  // Four independent 16-byte loads in flight per thread per iteration.
  for (; i + 3 * stride < n_vec; i += 4 * stride) {
    const uint4 a = __ldg(x + i), b = __ldg(x + i + stride);
    const uint4 c = __ldg(x + i + 2 * stride), d = __ldg(x + i + 3 * stride);
    m = max(m, max(max(vec_abs_max_bits<kDtype>(a), vec_abs_max_bits<kDtype>(b)),
                   max(vec_abs_max_bits<kDtype>(c), vec_abs_max_bits<kDtype>(d))));
  }
  for (; i < n_vec; i += stride) m = max(m, vec_abs_max_bits<kDtype>(__ldg(x + i)));
  m = cta_max_u32(m, scratch);
  if (threadIdx.x == 0) p.amax_partials[blockIdx.x] = m;
}

template <ActDtype kDtype>
__device__ __forceinline__ void load_block16(const void* x, int64_t block, float (&v)[16]) {
  if constexpr (kDtype == ActDtype::kBf16) {
    const uint4* src = static_cast<const uint4*>(x) + 2 * block;
    const uint4 q0 = __ldg(src), q1 = __ldg(src + 1);
    const uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      v[2 * i] = __uint_as_float(w[i] << 16);  // element 2i is the low half (little-endian)
      v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
    }
  } else {
    const float4* src = static_cast<const float4*>(x) + 4 * block;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 f = __ldg(src + i);
      v[4 * i] = f.x;
      v[4 * i + 1] = f.y;
      v[4 * i + 2] = f.z;
      v[4 * i + 3] = f.w;
    }
  }
}

__device__ __forceinline__ bool global_scale_usable(float s2) {
  return bits_are_finite(abs_bits(s2)) && s2 > 0.0f;
}

template <ActDtype kDtype>
__global__ void __launch_bounds__(kThreads) nvfp4_act_quantize_kernel(const Nvfp4ActQuantParams p) {
  __shared__ uint32_t scratch[kWarps];
  const bool lead_thread = blockIdx.x == 0 && threadIdx.x == 0;

  // ---- the tensor's global scale (identical in every CTA) ----
  float s2 = 1.0f;
  bool s2_ok = true;
  if (p.mode == Nvfp4ScaleMode::kDynamic) {
    uint32_t m = 0;
    for (int i = threadIdx.x; i < p.num_partials; i += kThreads) m = max(m, p.amax_partials[i]);
    m = cta_max_u32(m, scratch);
    const float amax = __uint_as_float(m);
    s2 = div_rn_exact(amax, kNvfp4AmaxDivisorDev);
    // Host: amax finite and > 0, then amax / 2688 > 0.
    s2_ok = bits_are_finite(m) && amax > 0.0f && s2 > 0.0f;
    if (lead_thread && p.amax_out) *p.amax_out = amax;
  } else if (p.mode == Nvfp4ScaleMode::kTensor) {
    s2 = __ldg(p.input_scale);
    s2_ok = global_scale_usable(s2);
  }
  if (p.mode != Nvfp4ScaleMode::kPerRow && lead_thread) {
    if (p.global_scale_out) *p.global_scale_out = s2;
    if (!s2_ok && p.status) atomicOr(p.status, kNvfp4StatusBadGlobalScale);
  }
  float six_s2 = mul_rn_exact(6.0f, s2);

  // ---- one thread per 16-element block; blocks never span rows ----
  const int64_t blocks_per_row = p.cols / kBlock;
  const int64_t n_blocks = p.rows * blocks_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; b < n_blocks; b += stride) {
    if (p.mode == Nvfp4ScaleMode::kPerRow) {
      s2 = __ldg(p.input_scale + b / blocks_per_row);
      s2_ok = global_scale_usable(s2);
      six_s2 = mul_rn_exact(6.0f, s2);
      if (!s2_ok && p.status) atomicOr(p.status, kNvfp4StatusBadGlobalScale);
    }
    float v[16];
    load_block16<kDtype>(p.x, b, v);
    uint32_t amax_bits = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) amax_bits = max(amax_bits, abs_bits(v[i]));
    if (!bits_are_finite(amax_bits) && p.status) atomicOr(p.status, kNvfp4StatusNonFiniteInput);

    uint32_t scale_byte = 0;
    uint2 codes = make_uint2(0u, 0u);
    if (s2_ok) {
      scale_byte = nvfp4_block_scale_byte(amax_bits, six_s2);
      const float d = mul_rn_exact(e4m3_to_f32_dev(scale_byte), s2);
      codes = nvfp4_encode_block16(v, d);
    }
    reinterpret_cast<uint2*>(p.packed)[b] = codes;
    p.block_scales[b] = static_cast<uint8_t>(scale_byte);
  }
}

// cudaOccupancyMaxActiveBlocksPerMultiprocessor once per kernel (it depends
// only on the compiled kernel and the architecture); a host query, no stream op.
template <typename Kernel>
int cached_ctas_per_sm(std::atomic<int>& cache, Kernel kernel) {
  int n = cache.load(std::memory_order_relaxed);
  if (n > 0) return n;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0) != cudaSuccess || n < 1) {
    cudaGetLastError();  // leave no sticky error; fall back to one CTA per SM
    return 1;
  }
  cache.store(n, std::memory_order_relaxed);
  return n;
}

std::atomic<int> g_amax_occupancy[2];
std::atomic<int> g_quantize_occupancy[2];

}  // namespace

int nvfp4_amax_partials_ctas_per_sm(ActDtype dtype) {
  return dtype == ActDtype::kBf16
             ? cached_ctas_per_sm(g_amax_occupancy[0], nvfp4_amax_partials_kernel<ActDtype::kBf16>)
             : cached_ctas_per_sm(g_amax_occupancy[1], nvfp4_amax_partials_kernel<ActDtype::kF32>);
}

int nvfp4_act_quantize_ctas_per_sm(ActDtype dtype) {
  return dtype == ActDtype::kBf16
             ? cached_ctas_per_sm(g_quantize_occupancy[0], nvfp4_act_quantize_kernel<ActDtype::kBf16>)
             : cached_ctas_per_sm(g_quantize_occupancy[1], nvfp4_act_quantize_kernel<ActDtype::kF32>);
}

void launch_nvfp4_amax_partials(const Nvfp4ActQuantParams& p, int grid, cudaStream_t stream) {
  if (p.dtype == ActDtype::kBf16) {
    nvfp4_amax_partials_kernel<ActDtype::kBf16><<<grid, kThreads, 0, stream>>>(p);
  } else {
    nvfp4_amax_partials_kernel<ActDtype::kF32><<<grid, kThreads, 0, stream>>>(p);
  }
}

void launch_nvfp4_act_quantize(const Nvfp4ActQuantParams& p, int grid, cudaStream_t stream) {
  if (p.dtype == ActDtype::kBf16) {
    nvfp4_act_quantize_kernel<ActDtype::kBf16><<<grid, kThreads, 0, stream>>>(p);
  } else {
    nvfp4_act_quantize_kernel<ActDtype::kF32><<<grid, kThreads, 0, stream>>>(p);
  }
}

}  // namespace megamoe::cuda::kernels
