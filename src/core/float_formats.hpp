// Bit-exact host codecs for the scalar number formats of DeepSeek-V4 checkpoints:
// BF16, FP16, FP8 E4M3FN, E8M0 and E2M1 (FP4). Every function is a pure bit
// manipulation (no FPU rounding mode, no fast-math dependence) and is checked
// bit for bit against PyTorch's casts and NVIDIA ModelOpt in
// tests/core/test_float_formats.cpp (vectors: tests/data/codecs/, made by
// tools/make_codec_vectors.py). docs/formats.md has the byte layouts.
#pragma once

#include <cstdint>

namespace megamoe {

// ---- BF16: 1 sign, 8 exponent, 7 mantissa bits (the top half of an FP32) ----
float bf16_to_f32(uint16_t bits);  // exact
// Round-to-nearest-even; overflow rounds to +-inf like IEEE. A NaN stays NaN:
// sign and top payload bits are kept and the quiet bit is set. (PyTorch itself
// is not consistent here: scalar casts give 0x7FC0, vectorised ones 0xFFFF.)
uint16_t f32_to_bf16(float x);

// ---- FP16 (IEEE binary16) ----
float f16_to_f32(uint16_t bits);  // exact, subnormals included
// Round-to-nearest-even; |x| >= 65520 -> +-inf; NaN -> sign | 0x7E00 | top payload bits.
uint16_t f32_to_f16(float x);

// ---- FP8 E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits ----
// Normal range 2^-6..448, subnormals m * 2^-9 (m = 1..7). 0x7F and 0xFF are NaN,
// there is no infinity. 0x80 is -0.
float e4m3_to_f32(uint8_t bits);
// Exactly PyTorch's CPU x.to(torch.float8_e4m3fn): round-to-nearest-even with
// NO saturation: |x| > 464 (the tie 464 rounds down to 448), +-inf and NaN all
// become the NaN byte 0x7F with x's sign bit (0xFF for negative inputs).
uint8_t f32_to_e4m3(float x);

// ---- E8M0 (UE8M0): an unsigned power of two, 2^(bits - 127) ----
// 0x00 = 2^-127 (an FP32 subnormal, exact), 0xFE = 2^127, 0xFF = NaN.
float e8m0_to_f32(uint8_t bits);

// ---- E2M1 (FP4): bit 3 sign, bits 2..1 exponent (bias 1), bit 0 mantissa ----
// Magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}; no inf/NaN. Only the low 4 bits of
// `code` are used. Code 0x8 decodes to -0.0.
float e2m1_to_f32(uint8_t code);
// NVIDIA ModelOpt's rule (NVFP4QTensor._cast_fp4): round-to-nearest-even onto
// the E2M1 grid with saturation at 6 (so +-inf -> 0x7 / 0xF); the sign bit is
// set iff y < 0 strictly, so -0.0 -> 0x0 but -0.1 -> 0x8. NaN -> 0x7 (what
// ModelOpt's searchsorted produces).
uint8_t f32_to_e2m1(float y);

}  // namespace megamoe
