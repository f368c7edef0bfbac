#!/usr/bin/env python3
"""Golden vectors for the host codecs (src/core/float_formats, src/core/block_quant).

Every expected value comes from an official tool, never from megamoe code:
  * NVIDIA ModelOpt (nvidia-modelopt, CPU): NVFP4QTensor.quantize / .dequantize / ._cast_fp4,
    get_weights_scaling_factor_from_quantizer (the export path, used for the fused-amax case),
    MXFP4QTensor.dequantize;
  * PyTorch casts: float8_e4m3fn, float8_e8m0fnu, bfloat16, float16.

Output: tests/data/codecs/vectors.json (metadata, case list, array index) and
tests/data/codecs/vectors.bin (all arrays, little-endian, concatenated).

Run:  .venv-fixtures/bin/python tools/make_codec_vectors.py [--out tests/data/codecs]
Deterministic (fixed seeds); CPU only.
"""

import argparse
import json
import math
import os
import struct
import types

import numpy as np
import torch

import modelopt
from modelopt.torch.quantization.qtensor.mxfp4_tensor import MXFP4QTensor
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

NAN = float("nan")
INF = float("inf")


class Blob:
    """Concatenated little-endian arrays plus a name -> (offset, nbytes, dtype) index."""

    def __init__(self):
        self.data = bytearray()
        self.index = {}

    def add(self, name, array, dtype):
        assert name not in self.index, name
        arr = np.ascontiguousarray(np.asarray(array, dtype=dtype))
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        self.index[name] = {"offset": len(self.data), "nbytes": len(raw), "dtype": np.dtype(dtype).name}
        self.data += raw
        return name


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def t_bits_u32(t):
    return t.detach().to(torch.float32).contiguous().view(torch.int32).numpy().view(np.uint32)


def f32_from_bits(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


# ---------------------------------------------------------------- scalar inputs
def tricky_f32_for_grid(grid, extra):
    """Every grid value, every midpoint between neighbours, and +-1 ulp around both, both signs."""
    vals = set()
    g = sorted(set(abs(v) for v in grid if math.isfinite(v)))
    pts = list(g) + [(a + b) / 2 for a, b in zip(g, g[1:])]
    for p in pts:
        p32 = np.float32(p)
        for v in (p32, np.nextafter(p32, np.float32(np.inf)), np.nextafter(p32, np.float32(0))):
            vals.add(float(v))
            vals.add(-float(v))
    vals.update(extra)
    finite = sorted(v for v in vals if not math.isnan(v))
    return finite + [v for v in extra if math.isnan(v)]


SPECIAL_F32 = [0.0, -0.0, INF, -INF, NAN, -NAN, f32_from_bits(0x7FC00001), f32_from_bits(0xFFA00000),
               f32_from_bits(0x7F800001), f32_from_bits(0x00000001), f32_from_bits(0x80000001),
               f32_from_bits(0x007FFFFF), f32_from_bits(0x00800000), f32_from_bits(0x7F7FFFFF),
               -f32_from_bits(0x7F7FFFFF), 1e-30, -1e-30, 1e30, -1e30]


def random_f32(gen, n, lo_exp, hi_exp):
    mag = torch.exp2(torch.empty(n).uniform_(lo_exp, hi_exp, generator=gen))
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    return (mag * sign).to(torch.float32)


def random_bits_f32(gen, n):
    return torch.randint(0, 2**32, (n,), generator=gen, dtype=torch.int64).to(torch.int32).view(torch.float32)


def scalar_vectors(blob, gen):
    meta = {}
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    blob.add("e4m3_decode/out", t_bits_u32(codes.view(torch.float8_e4m3fn).float()), np.uint32)
    blob.add("e8m0_decode/out", t_bits_u32(codes.view(torch.float8_e8m0fnu).float()), np.uint32)

    # E2M1 decode through ModelOpt's MXFP4 dequantizer with scale 2^0: codes 0..15 packed in 8 bytes
    # (even code low nibble), padded to one 32-element block.
    packed = torch.tensor([c | ((c + 1) << 4) for c in range(0, 16, 2)] + [0] * 8, dtype=torch.uint8)
    deq = MXFP4QTensor(torch.Size([1, 32]), torch.float32, packed.view(1, 16)).dequantize(
        dtype=torch.float32, scale=torch.tensor([[127]], dtype=torch.uint8), block_sizes={-1: 32})
    blob.add("e2m1_decode/out", t_bits_u32(deq.reshape(-1)[:16]), np.uint32)

    # f32 -> e4m3 (PyTorch cast)
    e4m3_grid = [v for v in codes.view(torch.float8_e4m3fn).float().tolist() if math.isfinite(v)]
    x = tricky_f32_for_grid(e4m3_grid + [480.0, 512.0, 2.0**-10, 2.0**-11], SPECIAL_F32 + [464.0, 470.0, 479.99997, 480.0, 1000.0])
    x = torch.cat([torch.tensor(x, dtype=torch.float32), random_f32(gen, 3000, -14, 10), random_bits_f32(gen, 500)])
    blob.add("f32_to_e4m3/in", t_bits_u32(x), np.uint32)
    blob.add("f32_to_e4m3/out", x.to(torch.float8_e4m3fn).view(torch.uint8).numpy(), np.uint8)
    # Scalar (one element at a time) cast agrees with the vectorised one?
    one_by_one = torch.stack([v.reshape(1).to(torch.float8_e4m3fn).view(torch.uint8)[0] for v in x[:300]])
    meta["e4m3_scalar_and_vector_cast_agree"] = bool(torch.equal(one_by_one, x[:300].to(torch.float8_e4m3fn).view(torch.uint8)))

    # f32 -> bf16 / f16 (PyTorch casts): ties, subnormals, overflow, NaN, -0, random
    bf16_grid = [float(np.float32(v)) for v in
                 [1.0, 1.0078125, 1.015625, 2.0**-126, 2.0**-133, 2.0**-127, 3.3895314e38, 65504.0]]
    f16_grid = [2.0**-24, 2.0**-14, 2.0**-15, 3 * 2.0**-24, 1.0, 1.0009765625, 65504.0, 65520.0, 65536.0, 2048.0, 2049.0]
    x = tricky_f32_for_grid(bf16_grid + f16_grid, SPECIAL_F32 + [65519.998, 65520.0, 2.0**-25, 1.5 * 2.0**-24, 2.5 * 2.0**-24])
    x = torch.cat([torch.tensor(x, dtype=torch.float32), random_f32(gen, 2000, -30, 20),
                   random_f32(gen, 500, -150, 128), random_bits_f32(gen, 1000)])
    # Exact ties for bf16: random 24-bit mantissas whose low 16 bits are 0x8000.
    ties = (torch.randint(0, 2**15, (300,), generator=gen, dtype=torch.int64) << 16) | 0x8000
    ties = (ties | (torch.randint(1, 254, (300,), generator=gen, dtype=torch.int64) << 23)).to(torch.int32).view(torch.float32)
    x = torch.cat([x, ties, -ties])
    blob.add("f32_to_bf16_f16/in", t_bits_u32(x), np.uint32)
    blob.add("f32_to_bf16/out", x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), np.uint16)
    blob.add("f32_to_f16/out", x.to(torch.float16).view(torch.int16).numpy().view(np.uint16), np.uint16)

    # bf16 / f16 -> f32: specials, all f16 subnormals, random patterns
    half_bits = list(range(0, 2048)) + [0x8000 + i for i in range(0, 2048, 7)] + \
        [0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFE00, 0x7FFF, 0x7BFF, 0xFBFF, 0x0400, 0x3C00, 0x3C01, 0x8400]
    half_bits += torch.randint(0, 65536, (2000,), generator=gen).tolist()
    hb = torch.tensor(half_bits, dtype=torch.int32).to(torch.int16)
    blob.add("half_decode/in", hb.numpy().view(np.uint16), np.uint16)
    blob.add("bf16_decode/out", t_bits_u32(hb.view(torch.bfloat16).float()), np.uint32)
    blob.add("f16_decode/out", t_bits_u32(hb.view(torch.float16).float()), np.uint32)

    # f32 -> e2m1 (ModelOpt NVFP4QTensor._cast_fp4)
    e2m1_grid = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    x = tricky_f32_for_grid(e2m1_grid + [8.0], SPECIAL_F32 + [0.25, -0.25, 5.0, -5.0, 7.0, -1e-8])
    x = torch.cat([torch.tensor(x, dtype=torch.float32), random_f32(gen, 2000, -4, 3.5)])
    blob.add("f32_to_e2m1/in", t_bits_u32(x), np.uint32)
    blob.add("f32_to_e2m1/out", NVFP4QTensor._cast_fp4(x.clone()).numpy(), np.uint8)
    return meta


# ------------------------------------------------------------------ NVFP4 cases
def nvfp4_dequant(q, scale, s2):
    return q.dequantize(dtype=torch.float32, scale=scale, double_scale=s2, block_sizes={-1: 16})


def add_nvfp4_case(blob, cases, kind, name, x, amax=None, global_scale=None, note=""):
    """Quantizes x (a 2-D BF16 or FP32 tensor) with ModelOpt and records input and outputs."""
    rows, cols = x.shape
    if amax is not None:
        # The export path (modelopt.torch.export.quant_utils): s2 from the weight quantizer's
        # (fused) _amax, block scales from get_weights_scaling_factor_from_quantizer.
        quantizer = types.SimpleNamespace(_amax=torch.tensor(amax, dtype=torch.float32),
                                          block_sizes={-1: 16, "type": "dynamic", "scale_bits": (4, 3)})
        s2 = NVFP4QTensor.get_weights_scaling_factor_2_from_quantizer(quantizer)
        scale, s2 = NVFP4QTensor.get_weights_scaling_factor_from_quantizer(quantizer, x, s2)
        q, scale, s2 = NVFP4QTensor.quantize(x, 16, scale, s2)
    elif global_scale is not None:
        q, scale, s2 = NVFP4QTensor.quantize(x, 16, weights_scaling_factor_2=torch.tensor(global_scale, dtype=torch.float32))
    else:
        q, scale, s2 = NVFP4QTensor.quantize(x, 16)
    prefix = f"{kind}/{name}"
    case = {
        "name": name, "note": note, "rows": rows, "cols": cols, "input_dtype": str(x.dtype),
        "input": blob.add(prefix + "/input", t_bits_u32(x.float().reshape(-1)), np.uint32),
        "packed": blob.add(prefix + "/packed", q._quantized_data.reshape(-1).numpy(), np.uint8),
        "block_scales": blob.add(prefix + "/block_scales", scale.view(torch.uint8).reshape(-1).numpy(), np.uint8),
        "global_scale_bits": int(t_bits_u32(s2.reshape(1))[0]),
        "dequant": blob.add(prefix + "/dequant", t_bits_u32(nvfp4_dequant(q, scale, s2).reshape(-1)), np.uint32),
    }
    if amax is not None:
        case["amax_bits"] = f32_bits(amax)
    if global_scale is not None:
        case["given_global_scale_bits"] = f32_bits(global_scale)
    cases.append(case)
    return case


def nvfp4_vectors(blob, gen):
    weights, activations, errors = [], [], []
    block_a = [6, -3, 1.5, 0.75, -0.375, 0.1875, 2.25, -5.25, 4.5, 0, -0.0, 1.125, -2.625, 3.75, 0.5, -1.75]
    add_nvfp4_case(blob, weights, "nvfp4_weight", "vector_A", torch.tensor([block_a + [0.0] * 16]),
                   note="nvfp4-format.md §7 A: ties, -0, an all-zero block")
    block_b = [7, 0.875, -0.875, 1.75, 0.29296875, 4, -6, 3.5, 0, 1, 2.9375, -2.9375, 5, 5.875, 0.5, -0.25]
    add_nvfp4_case(blob, weights, "nvfp4_weight", "vector_B", torch.tensor([block_b]),
                   note="nvfp4-format.md §7 B: the op-order trap (0.875 -> code 1)")
    add_nvfp4_case(blob, weights, "nvfp4_weight", "vector_C",
                   torch.tensor([[1000.0] + [0.0] * 15 + [2.0**-10] + [0.0] * 15]),
                   note="nvfp4-format.md §7 C: the [2^-9, 448] clamp")

    def randn(rows, cols, dtype=torch.bfloat16, scale=1.0):
        return (torch.randn(rows, cols, generator=gen) * scale).to(dtype)

    add_nvfp4_case(blob, weights, "nvfp4_weight", "random_bf16_8x64", randn(8, 64, scale=0.02))
    t = torch.randn(16, 128, generator=gen) / torch.sqrt(torch.rand(16, 128, generator=gen) + 1e-3)
    add_nvfp4_case(blob, weights, "nvfp4_weight", "heavy_tailed_bf16_16x128", (t * 0.01).to(torch.bfloat16),
                   note="outliers: many small-scale blocks")
    add_nvfp4_case(blob, weights, "nvfp4_weight", "random_f32_4x96", randn(4, 96, torch.float32, 3.0),
                   note="FP32 input (not BF16-representable)")
    # Zero and tiny blocks: block amax spans 1e-9 .. 1e3, so t falls below 2^-9 and gets clamped.
    z = randn(8, 64, torch.float32)
    z[0, :16] = 0.0
    z[1, 16:32] = 0.0
    z[2, :16] *= 1e-7
    z[3, 32:48] *= 1e-9
    z[4, 48:64] = -0.0
    z[5, 0] = 1000.0
    z[6, :] *= 1e-2  # E4M3-subnormal block scales above the clamp
    z[7, :32] *= 3e-3
    add_nvfp4_case(blob, weights, "nvfp4_weight", "zero_and_tiny_blocks_8x64", z.to(torch.bfloat16),
                   note="all-zero blocks (scale 0x38), -0 blocks, subnormal scales, tiny blocks clamped to 2^-9")
    # Values on the E2M1 decision boundaries: grid points and midpoints times a power-of-two scale.
    grid = torch.tensor([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 6])
    ties = torch.stack([grid[torch.randperm(16, generator=gen)] * (2.0 ** k) * (1 - 2 * (k % 2)) for k in range(-4, 4)])
    add_nvfp4_case(blob, weights, "nvfp4_weight", "boundary_values_8x16", ties.to(torch.bfloat16),
                   note="every row holds the E2M1 midpoints")
    # Exact ties: with amax = 2688 * 2^-4, s2 = 2^-4 and block amax 6 * s2 * 2^m gives t = 2^m and
    # d = 2^m * s2 exactly, so every x / d below lands exactly on an E2M1 midpoint or grid point.
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 6, 0.5, 1, 1.5, 2, 3, 4, 0, 6])
    rows = []
    for m in (-6, -3, 0, 3, 6, 8):
        sign = torch.where(torch.rand(16, generator=gen) < 0.5, -1.0, 1.0)
        rows.append(mids[torch.randperm(16, generator=gen)] * sign * (2.0 ** m) * 2.0 ** -4)
    add_nvfp4_case(blob, weights, "nvfp4_weight", "exact_ties_6x16", torch.stack(rows), amax=2688.0 * 2.0 ** -4,
                   note="power-of-two s2 and block scales: exact E2M1 ties, given amax")
    # Fused w1/w3: both quantized with the max of their amaxes (shared weight_scale_2).
    w1 = randn(8, 32, scale=0.05)
    w3 = randn(8, 32, scale=0.2)
    fused = max(w1.float().abs().max().item(), w3.float().abs().max().item())
    add_nvfp4_case(blob, weights, "nvfp4_weight", "fused_w1_8x32", w1, amax=fused,
                   note="w1 with the fused w1/w3 amax (export path)")
    add_nvfp4_case(blob, weights, "nvfp4_weight", "fused_w3_8x32", w3, amax=fused,
                   note="w3 with the fused w1/w3 amax (export path)")

    x = randn(4, 64, scale=2.0)
    add_nvfp4_case(blob, activations, "nvfp4_activation", "computed_global_4x64", x,
                   note="global scale computed from this tensor (amax/2688)")
    input_scale = x.float().abs().max().item() / 2688.0 * 0.5  # calibrated amax smaller than this batch
    add_nvfp4_case(blob, activations, "nvfp4_activation", "given_global_4x64", x, global_scale=input_scale,
                   note="static input_scale below this batch's amax: the largest blocks clamp at 448")
    add_nvfp4_case(blob, activations, "nvfp4_activation", "given_global_f32_3x32",
                   randn(3, 32, torch.float32, 0.5), global_scale=0.5 / 2688.0 * 4)

    # What ModelOpt does with an all-zero tensor (amax 0): NaN scales over code-7 nibbles.
    q, scale, s2 = NVFP4QTensor.quantize(torch.zeros(1, 16), 16)
    errors.append({"name": "all_zero_tensor", "rows": 1, "cols": 16,
                   "modelopt_block_scales_hex": scale.view(torch.uint8).numpy().tobytes().hex(),
                   "modelopt_packed_hex": q._quantized_data.numpy().tobytes().hex(),
                   "note": "megamoe refuses amax == 0 instead of emitting these bytes"})
    return weights, activations, errors


# ------------------------------------------------------------ MXFP4 and FP8
def mxfp4_vectors(blob, gen):
    cases = []
    for name, rows, cols, lo, hi in [("random_4x96", 4, 96, 110, 140), ("extreme_scales_2x64", 2, 64, 0, 255)]:
        packed = torch.randint(0, 256, (rows, cols // 2), generator=gen, dtype=torch.int32).to(torch.uint8)
        scales = torch.randint(lo, hi, (rows, cols // 32), generator=gen, dtype=torch.int32).to(torch.uint8)
        if name.startswith("extreme"):
            scales = torch.tensor([[0, 1], [127, 254]], dtype=torch.uint8)  # 2^-127, 2^-126, 1, 2^127 (overflows)
        deq = MXFP4QTensor(torch.Size([rows, cols]), torch.float32, packed).dequantize(
            dtype=torch.float32, scale=scales, block_sizes={-1: 32})
        # Independent cross-check with PyTorch's E8M0 cast (same values, or the tool disagrees).
        lut = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])
        codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(rows, cols).long()
        ref = lut[codes] * scales.view(torch.float8_e8m0fnu).float().repeat_interleave(32, dim=1)
        assert np.array_equal(t_bits_u32(ref), t_bits_u32(deq)), f"ModelOpt and PyTorch E8M0 disagree on {name}"
        prefix = f"mxfp4/{name}"
        cases.append({"name": name, "rows": rows, "cols": cols,
                      "packed": blob.add(prefix + "/packed", packed.reshape(-1).numpy(), np.uint8),
                      "scales": blob.add(prefix + "/scales", scales.reshape(-1).numpy(), np.uint8),
                      "dequant": blob.add(prefix + "/dequant", t_bits_u32(deq.reshape(-1)), np.uint32)})
    return cases


def fp8_block_vectors(blob, gen):
    cases = []
    rows, cols = 130, 136  # neither a multiple of 128: partial edge tiles
    values = torch.randint(0, 256, (rows, cols), generator=gen, dtype=torch.int32).to(torch.uint8)
    values[(values & 0x7F) == 0x7F] = 0x38  # no NaN bytes in a valid checkpoint
    tr, tc = -(-rows // 128), -(-cols // 128)
    scales_f32 = random_f32(gen, tr * tc, -12, 2).abs().reshape(tr, tc)
    scales_e8m0 = torch.tensor([[100, 127], [130, 140]], dtype=torch.uint8)
    v = values.view(torch.float8_e4m3fn).float()
    for enc, scales, sf in [("f32", scales_f32, scales_f32), ("e8m0", scales_e8m0, scales_e8m0.view(torch.float8_e8m0fnu).float())]:
        full = sf.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
        deq = v * full  # DeepSeek/transformers FP8 weight dequant: fp32(e4m3) * per-tile scale
        prefix = f"fp8_block/{enc}"
        cases.append({"name": f"{enc}_{rows}x{cols}", "rows": rows, "cols": cols, "scale_encoding": enc,
                      "values": "fp8_block/values",
                      "scales": blob.add(prefix + "/scales",
                                         t_bits_u32(scales.reshape(-1)) if enc == "f32" else scales.reshape(-1).numpy(),
                                         np.uint32 if enc == "f32" else np.uint8),
                      "dequant": blob.add(prefix + "/dequant", t_bits_u32(deq.reshape(-1)), np.uint32)})
    blob.add("fp8_block/values", values.reshape(-1).numpy(), np.uint8)
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "codecs"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20260822)
    blob = Blob()
    meta = scalar_vectors(blob, gen)
    weights, activations, errors = nvfp4_vectors(blob, gen)
    doc = {
        "generator": "tools/make_codec_vectors.py",
        "torch_version": torch.__version__,
        "modelopt_version": modelopt.__version__,
        "numpy_version": np.__version__,
        "device": "cpu",
        "facts": meta,
        "blob": "vectors.bin",
        "nvfp4_weight": weights,
        "nvfp4_activation": activations,
        "nvfp4_errors": errors,
        "mxfp4": mxfp4_vectors(blob, gen),
        "fp8_block": fp8_block_vectors(blob, gen),
        "arrays": blob.index,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vectors.bin"), "wb") as f:
        f.write(blob.data)
    with open(os.path.join(args.out, "vectors.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(blob.data)} bytes of arrays, {len(blob.index)} arrays, "
          f"torch {torch.__version__}, modelopt {modelopt.__version__}")


if __name__ == "__main__":
    main()
