// Linear layers y[T, N] = x[T, K] W^T (kernels/gemm/linear_params.hpp is the
// contract): fp32 activations in and out, fp32 products and fp32 accumulation
// on the CUDA cores, W read in its stored format (fp32, bf16, or E4M3FN with
// one fp32/E8M0 scale per 128x128 tile) and dequantized in registers. Optional
// groups: output columns g*N_g.. read input columns g*K_g.. of x.
//
// Two kernels, both correct for any T, N, K, strides and alignment; the
// launcher picks (kernels/gemm/sm90_linear.hpp can force one, for tests):
//  * GEMV, for T <= 16 (decode), and for T <= 256 when the tiled grid would be
//    under one wave (small N: q_a, kv, o_b at mid T) as passes of 16 tokens.
//    Weight streaming: within a pass every weight element is read from HBM
//    once and applied to all its T rows. A warp owns kGemvRows = 4 output rows
//    of one group; its lanes walk K in chunks of 16 bytes (4 fp32 / 8 bf16 /
//    16 E4M3 elements; one 16-byte ld.global.nc.L1::no_allocate per row and
//    chunk; a chunk never straddles a 128-column scale tile), x is read as
//    float4 through L1. For small N the 8 warps of a CTA split K as well (kw =
//    1, 2, 4 or 8 warps per row group, chosen so that there are ~2 CTAs per
//    SM) and are summed in shared memory in a fixed order. E4M3 is decoded
//    with two integer ops per pair into f16 (value * 2^-8, exact), widened to
//    fp32 and multiplied by the tile scale (one rounding: exactly
//    fp32(e4m3) * scale * 2^-8); the 2^8 is applied to the finished sum
//    (exact; caveat: tile scales below 2^-118 would lose bits to fp32
//    subnormals, real scales are ~2^-20..2^0). Tokens per pass TT in
//    {1, 2, 4, 8, 16} (compile time), rows t >= T skipped. When W / x are not
//    16-byte aligned or K is not a multiple of the chunk (the tiny test
//    checkpoints, K = 24), element-wise loads with bounds.
//  * Tiled (larger T with enough output tiles: prefill). Register-blocked
//    SGEMM: CTA tile BM tokens x 128 outputs (BM in {32, 64, 128}), K step 16,
//    256 threads each computing (BM/16) x 8 outputs, x and dequantized W tiles
//    in shared memory (transposed, double buffered, the next tile staged in
//    registers while the current one is used). W is dequantized as the tile is
//    loaded, exactly as cpu::dequantize_weight does (fp32(e4m3) * scale, one
//    rounding), then reused BM times from shared memory. Edge tiles and
//    unaligned operands load element-wise with bounds (zeros outside).
// Summation order is fixed (no atomics): results are deterministic run to run.
// NaN E4M3 codes (0x7F/0xFF) are not propagated (the loader rejects them).
// Launchers only launch: no validation, no throwing (src/backend/cuda owns
// validation); T <= 0, out <= 0 or out % groups != 0 launch nothing.
// Test: tests/kernels/test_sm90_linear.cpp (cpu::linear on the weight
// dequantized by cpu::dequantize_weight). Budget and plans: kernels/gemm/NOTES.md.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemm/linear_params.hpp"
#include "kernels/gemm/sm90_linear.hpp"

namespace megamoe::cuda::kernels {
namespace {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvRows = 4;             // output rows per warp
constexpr int kGemvMaxTokens = 16;       // tokens per GEMV pass
constexpr int kGemvTargetCtas = 264;     // ~2 per SM on an H200 (132 SMs); only a heuristic
constexpr int kTiledMinCtas = 264;       // below this BM = 128 drops to 64
constexpr int kSmCount = 132;            // H200; heuristics only (results never depend on it)
constexpr int kGemvPassMaxTokens = 256;  // auto: GEMV passes up to here when the tiled grid is < 1 wave

constexpr int kTiledThreads = 256;
constexpr int kTileN = 128;
constexpr int kTileK = 16;

constexpr int kScaleTile = 128;  // FP8 block-128 tile edge

// Kernel arguments derived from LinearParams on the host.
struct LinearArgs {
  const float* x = nullptr;     // [T, ldx] fp32, group g reads columns g*k ..
  float* y = nullptr;           // [T, ldy] fp32, group g writes columns g*n_g ..
  const void* w = nullptr;      // [groups * n_g, k] in the format
  const void* scale = nullptr;  // FP8: [ceil(groups*n_g/128), scale_cols] fp32 or E8M0
  int64_t ldx = 0, ldy = 0;
  int tokens = 0, groups = 1, n_g = 0, k = 0;
  int scale_cols = 0;  // ceil(k / 128)
  int scale_e8m0 = 0;
  int kw = 1;                // GEMV: warps splitting K per row group (1, 2, 4, 8)
  int units_per_group = 0;   // GEMV: ceil(n_g / kGemvRows)
  int vec_w = 0, vec_x = 0;  // tiled: 4-element vector loads allowed
};

template <LinearFormat F>
struct WeightTraits;
template <>
struct WeightTraits<LinearFormat::kF32> {
  static constexpr int kBytes = 4;
  static constexpr float kGemvPost = 1.0f;
};
template <>
struct WeightTraits<LinearFormat::kBf16> {
  static constexpr int kBytes = 2;
  static constexpr float kGemvPost = 1.0f;
};
template <>
struct WeightTraits<LinearFormat::kFp8Block128> {
  static constexpr int kBytes = 1;
  static constexpr float kGemvPost = 256.0f;  // the decoded E4M3 values carry 2^-8
};

// ---- decoding ------------------------------------------------------------

__device__ __forceinline__ float f16_bits_to_f32(uint32_t h) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h & 0xFFFFu)));
}

// E8M0 byte -> 2^(b - 127); 0x00 = 2^-127 (fp32 subnormal), 0xFF = NaN.
__device__ __forceinline__ float e8m0_to_f32_dev(uint32_t b) {
  if (b == 0xFFu) return __uint_as_float(0x7FC00000u);
  if (b == 0u) return __uint_as_float(0x00400000u);
  return __uint_as_float(b << 23);
}

// One E4M3FN byte -> its value * 2^-8, exactly: sign to bit 15 and the 7
// exponent/mantissa bits to bits 7..13 make an f16 whose exponent bias (15)
// exceeds E4M3's (7) by 8; E4M3 subnormals land on f16 subnormals.
__device__ __forceinline__ float e4m3_times_2m8(uint32_t b) {
  return f16_bits_to_f32(((b & 0x80u) << 8) | ((b & 0x7Fu) << 7));
}

// Four E4M3FN bytes of `w` (byte i = element i) -> values * 2^-8, exactly.
__device__ __forceinline__ void e4m3x4_times_2m8(uint32_t w, float (&v)[4]) {
  const uint32_t h02 = ((w << 8) & 0x80008000u) | ((w << 7) & 0x3F803F80u);  // bytes 0 (lo), 2 (hi)
  const uint32_t h13 = (w & 0x80008000u) | ((w >> 1) & 0x3F803F80u);         // bytes 1 (lo), 3 (hi)
  v[0] = f16_bits_to_f32(h02);
  v[1] = f16_bits_to_f32(h13);
  v[2] = f16_bits_to_f32(h02 >> 16);
  v[3] = f16_bits_to_f32(h13 >> 16);
}

// Elements 4q .. 4q+3 of a 16-byte weight chunk (FP8: times 2^-8).
template <LinearFormat F>
__device__ __forceinline__ void decode4(const uint32_t (&w)[4], int q, float (&v)[4]) {
  if constexpr (F == LinearFormat::kF32) {
    v[0] = __uint_as_float(w[0]);
    v[1] = __uint_as_float(w[1]);
    v[2] = __uint_as_float(w[2]);
    v[3] = __uint_as_float(w[3]);
  } else if constexpr (F == LinearFormat::kBf16) {
    const uint32_t a = w[2 * q], b = w[2 * q + 1];
    v[0] = __uint_as_float(a << 16);  // element 2i is the low half (little-endian)
    v[1] = __uint_as_float(a & 0xFFFF0000u);
    v[2] = __uint_as_float(b << 16);
    v[3] = __uint_as_float(b & 0xFFFF0000u);
  } else {
    e4m3x4_times_2m8(w[q], v);
  }
}

// Element `idx` of the stored matrix (FP8: times 2^-8).
template <LinearFormat F>
__device__ __forceinline__ float load_weight_elem(const void* w, int64_t idx) {
  if constexpr (F == LinearFormat::kF32) {
    return __ldg(static_cast<const float*>(w) + idx);
  } else if constexpr (F == LinearFormat::kBf16) {
    return __uint_as_float(static_cast<uint32_t>(__ldg(static_cast<const unsigned short*>(w) + idx)) << 16);
  } else {
    return e4m3_times_2m8(__ldg(static_cast<const unsigned char*>(w) + idx));
  }
}

// Scale of the tile holding (row, col) of the stored matrix; 1 for dense formats.
template <LinearFormat F>
__device__ __forceinline__ float tile_scale(const LinearArgs& a, int64_t row, int col) {
  if constexpr (F == LinearFormat::kFp8Block128) {
    const int64_t idx = (row / kScaleTile) * a.scale_cols + col / kScaleTile;
    return a.scale_e8m0 ? e8m0_to_f32_dev(__ldg(static_cast<const unsigned char*>(a.scale) + idx))
                        : __ldg(static_cast<const float*>(a.scale) + idx);
  } else {
    return 1.0f;
  }
}

// 16-byte streaming load (read once: no L1 allocation, 256-byte L2 prefetch).
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// ---- GEMV: one pass of up to 16 tokens -----------------------------------

// Residency target (CTAs per SM) so that enough 16-byte loads are in flight.
constexpr int gemv_min_ctas(int tt) { return tt == 1 ? 3 : tt <= 4 ? 2 : 1; }

// kVec: W and x rows are 16-byte aligned and k is a multiple of the chunk, so
// every chunk is either wholly inside K (16-byte loads) or wholly outside.
template <LinearFormat F, int TT, bool kVec>
__global__ void __launch_bounds__(kGemvThreads, gemv_min_ctas(TT)) linear_gemv_kernel(const LinearArgs a) {
  constexpr int kBytes = WeightTraits<F>::kBytes;
  constexpr int V = 16 / kBytes;  // elements per 16-byte chunk
  constexpr int R = kGemvRows;
  constexpr int kOut = R * TT;  // outputs per warp
  __shared__ float red[kGemvWarps][kOut];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kw = a.kw, row_warps = kGemvWarps / kw;
  const int kwi = warp % kw, rw = warp / kw;
  const int total_units = a.groups * a.units_per_group;
  const int unit = blockIdx.x * row_warps + rw;
  const bool unit_ok = unit < total_units;
  const int g = unit_ok ? unit / a.units_per_group : 0;
  const int n0 = unit_ok ? (unit % a.units_per_group) * R : 0;
  const int T = a.tokens, K = a.k;

  // Rows past the group's end re-read its last row (results dropped).
  int64_t row[R];
  const unsigned char* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int nl = min(n0 + r, a.n_g - 1);
    row[r] = static_cast<int64_t>(g) * a.n_g + nl;
    wrow[r] = static_cast<const unsigned char*>(a.w) + row[r] * K * kBytes;
  }
  const float* xg = a.x + static_cast<int64_t>(g) * K;

  float acc[R][TT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < TT; ++t) acc[r][t] = 0.0f;

  const int steps = (K + 32 * V - 1) / (32 * V);
  for (int s = unit_ok ? kwi : steps; s < steps; s += kw) {
    const int k = s * 32 * V + lane * V;
    if (k >= K) continue;
    float sc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) sc[r] = tile_scale<F>(a, row[r], k);
    if constexpr (kVec) {
      uint32_t raw[R][4];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint4 q = ld_stream16(wrow[r] + static_cast<int64_t>(k) * kBytes);
        raw[r][0] = q.x;
        raw[r][1] = q.y;
        raw[r][2] = q.z;
        raw[r][3] = q.w;
      }
#pragma unroll
      for (int q = 0; q < V / 4; ++q) {
        float wv[R][4];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          decode4<F>(raw[r], q, wv[r]);
          if constexpr (F == LinearFormat::kFp8Block128) {
#pragma unroll
            for (int i = 0; i < 4; ++i) wv[r][i] *= sc[r];
          }
        }
#pragma unroll
        for (int t = 0; t < TT; ++t) {
          if (t < T) {
            const float4 xv = __ldg(reinterpret_cast<const float4*>(xg + static_cast<int64_t>(t) * a.ldx + k + 4 * q));
#pragma unroll
            for (int r = 0; r < R; ++r) {
              acc[r][t] = fmaf(wv[r][0], xv.x, acc[r][t]);
              acc[r][t] = fmaf(wv[r][1], xv.y, acc[r][t]);
              acc[r][t] = fmaf(wv[r][2], xv.z, acc[r][t]);
              acc[r][t] = fmaf(wv[r][3], xv.w, acc[r][t]);
            }
          }
        }
      }
    } else {
#pragma unroll
      for (int q = 0; q < V / 4; ++q) {
        float wv[R][4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int kk = k + 4 * q + i;
#pragma unroll
          for (int r = 0; r < R; ++r) wv[r][i] = kk < K ? load_weight_elem<F>(a.w, row[r] * K + kk) * sc[r] : 0.0f;
        }
#pragma unroll
        for (int t = 0; t < TT; ++t) {
          if (t < T) {
            const float* xr = xg + static_cast<int64_t>(t) * a.ldx;
            float xv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) xv[i] = k + 4 * q + i < K ? __ldg(xr + k + 4 * q + i) : 0.0f;
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
              for (int i = 0; i < 4; ++i) acc[r][t] = fmaf(wv[r][i], xv[i], acc[r][t]);
          }
        }
      }
    }
  }

  // Butterfly sum over the lanes: every lane ends with every total.
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      float v = acc[r][t];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
      acc[r][t] = v;
    }

  constexpr float kPost = WeightTraits<F>::kGemvPost;
  if (kw == 1) {  // block-uniform
    if (unit_ok) {
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < TT; ++t)
          if (lane == (r * TT + t) % 32 && t < T && n0 + r < a.n_g)
            a.y[static_cast<int64_t>(t) * a.ldy + static_cast<int64_t>(g) * a.n_g + n0 + r] = acc[r][t] * kPost;
    }
    return;
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < TT; ++t)
      if (lane == (r * TT + t) % 32) red[warp][r * TT + t] = acc[r][t];
  __syncthreads();
  // Warp w = rw * kw + kwi: sum the kw partials of each output in kwi order.
  for (int i = threadIdx.x; i < row_warps * kOut; i += kGemvThreads) {
    const int rw2 = i / kOut, j = i % kOut, r = j / TT, t = j % TT;
    float sum = 0.0f;
    for (int w2 = 0; w2 < kw; ++w2) sum += red[rw2 * kw + w2][j];
    const int unit2 = blockIdx.x * row_warps + rw2;
    if (unit2 < total_units && t < T) {
      const int g2 = unit2 / a.units_per_group, n2 = (unit2 % a.units_per_group) * R + r;
      if (n2 < a.n_g) a.y[static_cast<int64_t>(t) * a.ldy + static_cast<int64_t>(g2) * a.n_g + n2] = sum * kPost;
    }
  }
}

// ---- tiled: any T --------------------------------------------------------

template <LinearFormat F, int BM>
__global__ void __launch_bounds__(kTiledThreads) linear_tiled_kernel(const LinearArgs a) {
  constexpr int TM = BM / 16, TN = 8;
  constexpr int kXItems = BM * kTileK / 4;  // 4-element groups of the x tile
  constexpr int kXPerThread = (kXItems + kTiledThreads - 1) / kTiledThreads;
  constexpr int kWItems = kTileN * kTileK / 4;
  constexpr int kWPerThread = kWItems / kTiledThreads;
  static_assert(kWItems % kTiledThreads == 0, "W tile items must split evenly");
  static_assert(TM == 2 || TM == 4 || TM == 8, "BM must be 32, 64 or 128");
  // Transposed tiles [k][m] / [k][n]; +4 keeps rows 16-byte aligned and
  // spreads the transposing stores over the banks.
  __shared__ __align__(16) float xs[2][kTileK][BM + 4];
  __shared__ __align__(16) float ws[2][kTileK][kTileN + 4];

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int g = blockIdx.z;
  const int n0 = blockIdx.x * kTileN;  // within the group
  const int m0 = blockIdx.y * BM;
  const int T = a.tokens, K = a.k;
  const float* xg = a.x + static_cast<int64_t>(g) * K;
  const int64_t row_base = static_cast<int64_t>(g) * a.n_g;

  float xr[kXPerThread][4], wr[kWPerThread][4];

  auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) {
      const int item = tid + i * kTiledThreads;
      if (kXItems % kTiledThreads == 0 || item < kXItems) {
        const int m = m0 + item / 4, k = k0 + (item % 4) * 4;
        const float* src = xg + static_cast<int64_t>(m) * a.ldx + k;
        if (m < T && a.vec_x && k + 4 <= K) {
          const float4 v = __ldg(reinterpret_cast<const float4*>(src));
          xr[i][0] = v.x;
          xr[i][1] = v.y;
          xr[i][2] = v.z;
          xr[i][3] = v.w;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) xr[i][e] = (m < T && k + e < K) ? __ldg(src + e) : 0.0f;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kWPerThread; ++i) {
      const int item = tid + i * kTiledThreads;
      const int nl = n0 + item / 4, k = k0 + (item % 4) * 4;
      const bool row_ok = nl < a.n_g;
      const int64_t row = row_base + (row_ok ? nl : 0);
      const int64_t idx = row * K + k;
      // k .. k+3 share one scale tile (k is a multiple of 4).
      const float sc = (row_ok && k < K) ? tile_scale<F>(a, row, k) : 0.0f;
      float v[4];
      if (row_ok && a.vec_w && k + 4 <= K) {
        if constexpr (F == LinearFormat::kF32) {
          const float4 q = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(a.w) + idx));
          v[0] = q.x;
          v[1] = q.y;
          v[2] = q.z;
          v[3] = q.w;
        } else if constexpr (F == LinearFormat::kBf16) {
          const uint2 q = __ldg(reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(a.w) + idx));
          v[0] = __uint_as_float(q.x << 16);
          v[1] = __uint_as_float(q.x & 0xFFFF0000u);
          v[2] = __uint_as_float(q.y << 16);
          v[3] = __uint_as_float(q.y & 0xFFFF0000u);
        } else {
          e4m3x4_times_2m8(__ldg(reinterpret_cast<const unsigned int*>(static_cast<const unsigned char*>(a.w) + idx)),
                           v);
        }
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = (row_ok && k + e < K) ? load_weight_elem<F>(a.w, idx + e) : 0.0f;
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if constexpr (F == LinearFormat::kFp8Block128) {
          wr[i][e] = (v[e] * 256.0f) * sc;  // exact * 2^8 back to fp32(e4m3), then one rounding
        } else {
          wr[i][e] = v[e];
        }
      }
    }
  };

  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) {
      const int item = tid + i * kTiledThreads;
      if (kXItems % kTiledThreads == 0 || item < kXItems) {
#pragma unroll
        for (int e = 0; e < 4; ++e) xs[buf][(item % 4) * 4 + e][item / 4] = xr[i][e];
      }
    }
#pragma unroll
    for (int i = 0; i < kWPerThread; ++i) {
      const int item = tid + i * kTiledThreads;
#pragma unroll
      for (int e = 0; e < 4; ++e) ws[buf][(item % 4) * 4 + e][item / 4] = wr[i][e];
    }
  };

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

  const int nk = (K + kTileK - 1) / kTileK;
  if (nk > 0) {
    load(0);
    store(0);
  }
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < nk) load((kt + 1) * kTileK);
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float av[TM], bv[TN];
      const float* ap = &xs[cur][kk][ty * TM];
      if constexpr (TM == 2) {
        const float2 q = *reinterpret_cast<const float2*>(ap);
        av[0] = q.x;
        av[1] = q.y;
      } else {
#pragma unroll
        for (int i = 0; i < TM; i += 4) {
          const float4 q = *reinterpret_cast<const float4*>(ap + i);
          av[i] = q.x;
          av[i + 1] = q.y;
          av[i + 2] = q.z;
          av[i + 3] = q.w;
        }
      }
      const float4 b0 = *reinterpret_cast<const float4*>(&ws[cur][kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&ws[cur][kk][64 + tx * 4]);
      bv[0] = b0.x;
      bv[1] = b0.y;
      bv[2] = b0.z;
      bv[3] = b0.w;
      bv[4] = b1.x;
      bv[5] = b1.y;
      bv[6] = b1.z;
      bv[7] = b1.w;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (kt + 1 < nk) store(cur ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + ty * TM + i;
    if (m >= T) continue;
    float* yr = a.y + static_cast<int64_t>(m) * a.ldy + row_base;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int nl = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
      if (nl < a.n_g) yr[nl] = acc[i][j];
    }
  }
}

// ---- launch ----------------------------------------------------------------

int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <LinearFormat F, int TT>
void launch_gemv_tt(const LinearArgs& a, bool vec, int grid, cudaStream_t stream) {
  if (vec) {
    linear_gemv_kernel<F, TT, true><<<grid, kGemvThreads, 0, stream>>>(a);
  } else {
    linear_gemv_kernel<F, TT, false><<<grid, kGemvThreads, 0, stream>>>(a);
  }
}

template <LinearFormat F>
void launch_gemv(LinearArgs a, cudaStream_t stream) {
  constexpr int V = 16 / WeightTraits<F>::kBytes;
  const bool vec = aligned16(a.w) && aligned16(a.x) && a.k % V == 0 && a.ldx % 4 == 0;
  a.units_per_group = ceil_div(a.n_g, kGemvRows);
  const int64_t units = static_cast<int64_t>(a.groups) * a.units_per_group;
  const int steps = ceil_div(a.k, 32 * V);
  int kw = 1;
  while (kw < kGemvWarps && kw * 2 <= steps && ceil_div(units, kGemvWarps / kw) < kGemvTargetCtas) kw *= 2;
  a.kw = kw;
  const int grid = ceil_div(units, kGemvWarps / kw);
  if (a.tokens <= 1) {
    launch_gemv_tt<F, 1>(a, vec, grid, stream);
  } else if (a.tokens <= 2) {
    launch_gemv_tt<F, 2>(a, vec, grid, stream);
  } else if (a.tokens <= 4) {
    launch_gemv_tt<F, 4>(a, vec, grid, stream);
  } else if (a.tokens <= 8) {
    launch_gemv_tt<F, 8>(a, vec, grid, stream);
  } else {
    launch_gemv_tt<F, 16>(a, vec, grid, stream);
  }
}

// Tokens per tiled CTA: the smallest tile that holds T, and 64 rather than
// 128 when 128 would leave the GPU under-filled.
int tiled_bm(const LinearArgs& a) {
  const int n_tiles = ceil_div(a.n_g, kTileN);
  int bm = a.tokens <= 32 ? 32 : a.tokens <= 64 ? 64 : 128;
  if (bm == 128 && static_cast<int64_t>(n_tiles) * ceil_div(a.tokens, 128) * a.groups < kTiledMinCtas) bm = 64;
  return bm;
}

int64_t tiled_ctas(const LinearArgs& a) {
  return static_cast<int64_t>(ceil_div(a.n_g, kTileN)) * ceil_div(a.tokens, tiled_bm(a)) * a.groups;
}

template <LinearFormat F>
void launch_tiled(LinearArgs a, cudaStream_t stream) {
  constexpr int kBytes = WeightTraits<F>::kBytes;
  a.vec_w = (reinterpret_cast<uintptr_t>(a.w) % (4 * kBytes)) == 0 && a.k % 4 == 0;
  a.vec_x = aligned16(a.x) && a.ldx % 4 == 0 && a.k % 4 == 0;
  const int bm = tiled_bm(a);
  const dim3 grid(ceil_div(a.n_g, kTileN), ceil_div(a.tokens, bm), a.groups);
  if (bm == 32) {
    linear_tiled_kernel<F, 32><<<grid, kTiledThreads, 0, stream>>>(a);
  } else if (bm == 64) {
    linear_tiled_kernel<F, 64><<<grid, kTiledThreads, 0, stream>>>(a);
  } else {
    linear_tiled_kernel<F, 128><<<grid, kTiledThreads, 0, stream>>>(a);
  }
}

// The GEMV over any T: passes of up to kGemvMaxTokens rows (the weights are
// re-read per pass, from L2 when they fit).
template <LinearFormat F>
void launch_gemv_passes(const LinearArgs& a, cudaStream_t stream) {
  for (int t0 = 0; t0 < a.tokens; t0 += kGemvMaxTokens) {
    LinearArgs pass = a;
    pass.x = a.x + static_cast<int64_t>(t0) * a.ldx;
    pass.y = a.y + static_cast<int64_t>(t0) * a.ldy;
    pass.tokens = a.tokens - t0 < kGemvMaxTokens ? a.tokens - t0 : kGemvMaxTokens;
    launch_gemv<F>(pass, stream);
  }
}

LinearPath auto_path(const LinearArgs& a) {
  if (a.tokens <= kGemvMaxTokens) return LinearPath::kGemv;
  if (a.tokens <= kGemvPassMaxTokens && tiled_ctas(a) < kSmCount) return LinearPath::kGemv;
  return LinearPath::kTiled;
}

template <LinearFormat F>
void launch_format(const LinearArgs& a, LinearPath path, cudaStream_t stream) {
  if (path == LinearPath::kAuto) path = auto_path(a);
  if (path == LinearPath::kGemv) {
    launch_gemv_passes<F>(a, stream);
  } else {
    launch_tiled<F>(a, stream);
  }
}

// False when there is nothing to launch (T <= 0, out <= 0, in < 0, out % groups != 0).
bool make_args(const LinearParams& p, LinearArgs& a) {
  const LinearWeight& wt = p.weight;
  const int groups = p.groups > 0 ? p.groups : 1;
  if (p.tokens <= 0 || wt.out <= 0 || wt.in < 0 || wt.out % groups != 0) return false;
  a.x = p.x;
  a.y = p.y;
  a.w = wt.w;
  a.scale = wt.scale;
  a.ldx = p.ldx;
  a.ldy = p.ldy;
  a.tokens = p.tokens;
  a.groups = groups;
  a.n_g = wt.out / groups;
  a.k = wt.in;
  a.scale_cols = (wt.in + kScaleTile - 1) / kScaleTile;
  a.scale_e8m0 = wt.scale_e8m0 ? 1 : 0;
  return true;
}

}  // namespace

LinearPath linear_auto_path(const LinearParams& p) {
  LinearArgs a;
  return make_args(p, a) ? auto_path(a) : LinearPath::kGemv;
}

void launch_linear(const LinearParams& p, LinearPath path, cudaStream_t stream) {
  LinearArgs a;
  if (!make_args(p, a)) return;
  switch (p.weight.format) {
    case LinearFormat::kF32:
      launch_format<LinearFormat::kF32>(a, path, stream);
      break;
    case LinearFormat::kBf16:
      launch_format<LinearFormat::kBf16>(a, path, stream);
      break;
    case LinearFormat::kFp8Block128:
      launch_format<LinearFormat::kFp8Block128>(a, path, stream);
      break;
  }
}

void launch_linear(const LinearParams& p, cudaStream_t stream) { launch_linear(p, LinearPath::kAuto, stream); }

}  // namespace megamoe::cuda::kernels
