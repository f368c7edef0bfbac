#!/usr/bin/env python3
"""Checks the MXFP4 and FP8 block-128 fixtures against transformers' own dequantizers (issue 16, item 4).

The quantized fixtures (tests/data/tiny-*/model.safetensors, tests/data/codecs) were written by our
fixture scripts; this script dequantizes them with code that is not ours:

  * FP8 E4M3 + per-128x128-tile scale (F32 or E8M0), the DeepSeek `.scale` / `weight_scale_inv`:
    transformers.integrations.finegrained_fp8.Fp8Dequantize._dequantize_one (the op transformers
    prepends when loading a DeepSeek FP8 checkpoint with dequantize=True).
    That function derives the tile size from the scale grid (rows // scale_rows), so a weight whose
    sides are not multiples of 128 is zero-padded to the next multiple of 128 first and cropped after
    (DeepSeek's ceil(rows/128) tiling); the pad values never reach the kept outputs.
  * MXFP4 (packed E2M1 pairs, low nibble first, [rows, cols/2] I8, one E8M0 byte per 32 values),
    the DeepSeek-V4 routed-expert format, with two independent transformers functions, which must agree:
      - Fp8Dequantize._dequantize_one (its FP4 path: _unpack_fp4 + the [1, 32] scale grid);
      - transformers.integrations.mxfp4.convert_moe_packed_tensors (the GPT-OSS MXFP4 dequantizer:
        FP4_VALUES lookup + torch.ldexp), fed as blocks [1, rows, cols/32, 16] and scales
        [1, rows, cols/32]; it returns the transpose, which is transposed back.
    Both are asked for float32 output (both products are exact in fp32).

For every quantized weight it compares transformers' fp32 values with the expected values committed
with the fixtures (tests/data/codecs/vectors.bin, made with ModelOpt/PyTorch) where such exist, and
writes tests/data/independent/dequant_transformers.json: per tensor, the shape, an order-sensitive
hash of transformers' fp32 bit patterns (sum of splitmix64(bits | index << 32), NaNs canonicalised to
0x7fc00000) and their sum. The C++ test
tests/cpu/test_independent_dequant.cpp runs our loader's dequantizer on the same tensors and requires
the same hash (bit-exact), so CI checks the agreement without torch.

Run:  python3 tools/check_fixtures_independent.py [--data tests/data] [--out tests/data/independent]
      (torch + transformers 5.17 + safetensors; CPU; a few seconds). Exit code 1 on any disagreement.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers.integrations.finegrained_fp8 import Fp8Dequantize
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

CHECKPOINTS = ["tiny-a", "tiny-b", "tiny-c", "tiny-a-mxfp4", "tiny-b-fp8", "tiny-a-nvfp4", "tiny-text"]
_DEQ = Fp8Dequantize(hf_quantizer=None)


def bits(t):
    a = t.detach().to(torch.float32).contiguous().numpy().view(np.uint32).copy()
    a[np.isnan(t.detach().to(torch.float32).numpy())] = 0x7FC00000
    return a


def mixhash(u32):
    """sum over i of splitmix64(bits[i] | i << 32), mod 2^64 (order-sensitive, vectorised; same in C++)."""
    with np.errstate(over="ignore"):
        z = u32.reshape(-1).astype(np.uint64) | (np.arange(u32.size, dtype=np.uint64) << np.uint64(32))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return int(z.sum(dtype=np.uint64))


def fp8_block_transformers(values_e4m3, scales):
    """values [rows, cols] float8_e4m3fn; scales [ceil(rows/128), ceil(cols/128)] f32 or float8_e8m0fnu."""
    rows, cols = values_e4m3.shape
    sr, sc = scales.shape
    assert sr == -(-rows // 128) and sc == -(-cols // 128), (values_e4m3.shape, scales.shape)
    padded = torch.zeros(sr * 128, sc * 128, dtype=torch.float8_e4m3fn)
    padded[:rows, :cols] = values_e4m3
    out = _DEQ._dequantize_one(padded, scales, output_dtype=torch.float32)
    return out[:rows, :cols].contiguous()


def mxfp4_transformers(packed_i8, scales_e8m0):
    """packed [rows, cols/2] int8 (two E2M1 codes, low nibble = even column); scales [rows, cols/32] E8M0."""
    rows, half = packed_i8.shape
    cols = 2 * half
    assert scales_e8m0.shape == (rows, cols // 32)
    a = _DEQ._dequantize_one(packed_i8.view(torch.int8), scales_e8m0, output_dtype=torch.float32)
    blocks = packed_i8.view(torch.uint8).reshape(1, rows, cols // 32, 16)
    exps = scales_e8m0.view(torch.uint8).reshape(1, rows, cols // 32)
    b = convert_moe_packed_tensors(blocks, exps, dtype=torch.float32)[0].transpose(0, 1).contiguous()
    assert b.shape == (rows, cols)
    # The two dequantizers differ only on the NaN scale byte 0xFF (exp2(128) = inf vs ldexp(x, 128)).
    finite_scale = (scales_e8m0.view(torch.uint8) != 0xFF).repeat_interleave(32, dim=1)
    if not np.array_equal(bits(a)[finite_scale.numpy()], bits(b)[finite_scale.numpy()]):
        raise SystemExit("transformers' two MXFP4 dequantizers disagree")
    return a


def entry(name, values, extra=None):
    u = bits(values)
    e = {"name": name, "shape": list(values.shape), "hash": f"{mixhash(u):016x}",
         "sum": float(np.float64(values.to(torch.float64).nan_to_num(0.0, 0.0, 0.0).sum()))}
    if extra:
        e.update(extra)
    return e


def check_checkpoint(path):
    tensors = load_file(os.path.join(path, "model.safetensors"))
    out = []
    for name in sorted(tensors):
        if not name.endswith(".weight"):
            continue
        w = tensors[name]
        prefix = name[: -len(".weight")]
        scale = tensors.get(prefix + ".scale", tensors.get(prefix + ".weight_scale_inv"))
        if w.dtype == torch.float8_e4m3fn:
            fmt, values = "fp8_block", fp8_block_transformers(w, scale)
        elif w.dtype == torch.int8 and scale is not None and scale.dtype == torch.float8_e8m0fnu:
            fmt, values = "mxfp4", mxfp4_transformers(w, scale)
        else:
            continue
        out.append(entry(name, values, {"format": fmt, "scale_dtype": str(scale.dtype).replace("torch.", "")}))
    return out


def check_codecs(codec_dir):
    doc = json.load(open(os.path.join(codec_dir, "vectors.json")))
    blob = open(os.path.join(codec_dir, doc["blob"]), "rb").read()

    def arr(name):
        a = doc["arrays"][name]
        return np.frombuffer(blob, dtype=np.dtype(a["dtype"]).newbyteorder("<"), count=a["nbytes"] // np.dtype(a["dtype"]).itemsize,
                             offset=a["offset"]).copy()

    out, bad = [], 0
    for c in doc["mxfp4"]:
        rows, cols = c["rows"], c["cols"]
        packed = torch.from_numpy(arr(c["packed"]).reshape(rows, cols // 2)).view(torch.int8)
        scales = torch.from_numpy(arr(c["scales"]).reshape(rows, cols // 32)).view(torch.float8_e8m0fnu)
        got = mxfp4_transformers(packed, scales)
        want = arr(c["dequant"]).astype(np.uint32)
        same = np.array_equal(bits(got).reshape(-1), np.where(np.isnan(want.view(np.float32)), 0x7FC00000, want))
        print(f"codecs mxfp4 {c['name']}: transformers == committed (ModelOpt) dequant: {same}")
        bad += not same
        out.append(entry("mxfp4/" + c["name"], got, {"format": "mxfp4"}))
    for c in doc["fp8_block"]:
        rows, cols = c["rows"], c["cols"]
        values = torch.from_numpy(arr(c["values"]).reshape(rows, cols)).view(torch.float8_e4m3fn)
        sr, sc = -(-rows // 128), -(-cols // 128)
        if c["scale_encoding"] == "f32":
            scales = torch.from_numpy(arr(c["scales"]).astype(np.uint32).view(np.float32).reshape(sr, sc))
        else:
            scales = torch.from_numpy(arr(c["scales"]).reshape(sr, sc)).view(torch.float8_e8m0fnu)
        got = fp8_block_transformers(values, scales)
        want = arr(c["dequant"]).astype(np.uint32)
        same = np.array_equal(bits(got).reshape(-1), np.where(np.isnan(want.view(np.float32)), 0x7FC00000, want))
        print(f"codecs fp8_block {c['name']}: transformers == committed (PyTorch) dequant: {same}")
        bad += not same
        out.append(entry("fp8_block/" + c["name"], got, {"format": "fp8_block", "scale_encoding": c["scale_encoding"]}))
    return out, bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="tests/data")
    ap.add_argument("--out", default="tests/data/independent")
    args = ap.parse_args()
    result = {
        "generator": "tools/check_fixtures_independent.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "functions": ["transformers.integrations.finegrained_fp8.Fp8Dequantize._dequantize_one",
                      "transformers.integrations.mxfp4.convert_moe_packed_tensors"],
        "hash": "sum_i splitmix64(fp32_bits[i] | i << 32) mod 2^64, NaN bits -> 0x7fc00000",
        "checkpoints": {},
    }
    for name in CHECKPOINTS:
        path = os.path.join(args.data, name)
        if os.path.isdir(path):
            entries = check_checkpoint(path)
            if entries:
                result["checkpoints"][name] = entries
                fmts = sorted({e["format"] for e in entries})
                print(f"{name}: {len(entries)} quantized weights ({', '.join(fmts)}) dequantized by transformers")
    result["codecs"], bad = check_codecs(os.path.join(args.data, "codecs"))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dequant_transformers.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.join(args.out, 'dequant_transformers.json')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
