#!/usr/bin/env python3
"""Reference bytes of the demo model's routed experts quantized by the official implementations, for the test of
`megamoe quantize` (tests/runtime/test_quantize_checkpoint.cpp).

    python3 tools/make_demo_quant_goldens.py [--model models/demo] [--out tests/data/independent/demo_quant_reference.json]

For every routed expert matrix of models/demo (transformers' stacked gate_up_proj [E, 2I, D] -> w1 = rows [0, I),
w3 = rows [I, 2I); down_proj [E, D, I] -> w2), as float32:
  nvfp4  NVIDIA ModelOpt: NVFP4QTensor.get_weights_scaling_factor_2 over cat(w1, w3) (the fused amax of
         modelopt.torch.export's preprocess_linear_fusion), then NVFP4QTensor.quantize(w, 16,
         weights_scaling_factor_2=s2) for w1 and w3, and with its own s2 for w2 -> weight, weight_scale,
         weight_scale_2;
  mxfp4  ModelOpt's MXFP4QTensor.quantize(w, 32) -> weight (packed E2M1), scale (E8M0 bytes);
  fp8    DeepSeek's FP8 block-128 with UE8M0 scales: per 128x128 tile s = 2^ceil(log2(max(amax, 1e-4) / 448))
         (the scale rounding of DeepSeek's kernels), values = (w / s).to(torch.float8_e4m3fn) -> weight, scale.
Writes a 64-bit FNV-1a hash of each tensor's bytes (and its shape), keyed "L.E.wN.format.part".
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors import safe_open

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def fnv1a(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e8m0fnu, torch.int8):
        t = t.view(torch.uint8)
    return t.cpu().numpy().tobytes()


def fp8_block(w):
    rows, cols = w.shape
    values = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    scales = torch.empty(-(-rows // 128), -(-cols // 128), dtype=torch.uint8)
    for a in range(scales.shape[0]):
        for b in range(scales.shape[1]):
            tile = w[a * 128:(a + 1) * 128, b * 128:(b + 1) * 128]
            quotient = torch.clamp(tile.abs().max(), min=1e-4) / 448.0  # float32 division
            mantissa, exponent = math.frexp(float(quotient))
            e = exponent - 1 if mantissa == 0.5 else exponent
            scales[a, b] = e + 127
            values[a * 128:(a + 1) * 128, b * 128:(b + 1) * 128] = (tile / (2.0 ** e)).to(torch.float8_e4m3fn)
    return values, scales


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "independent", "demo_quant_reference.json"))
    args = ap.parse_args()
    import modelopt
    from modelopt.torch.quantization.qtensor.mxfp4_tensor import MXFP4QTensor
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    cfg = json.load(open(os.path.join(args.model, "config.json")))
    inter = cfg["moe_intermediate_size"]
    out = {}
    f = safe_open(os.path.join(args.model, "model.safetensors"), "pt")
    for layer in range(cfg["num_hidden_layers"]):
        gate_up = f.get_tensor(f"model.layers.{layer}.mlp.experts.gate_up_proj").float()
        down = f.get_tensor(f"model.layers.{layer}.mlp.experts.down_proj").float()
        for e in range(cfg["n_routed_experts"]):
            w = {"w1": gate_up[e, :inter], "w3": gate_up[e, inter:], "w2": down[e]}
            joint_s2 = NVFP4QTensor.get_weights_scaling_factor_2(torch.cat([w["w1"], w["w3"]], 0))
            for name, m in w.items():
                key = f"{layer}.{e}.{name}"
                qt, scale, s2 = NVFP4QTensor.quantize(m, 16, weights_scaling_factor_2=joint_s2 if name != "w2" else None)
                parts = {"nvfp4.weight": qt._quantized_data.to(torch.uint8), "nvfp4.weight_scale": scale,
                         "nvfp4.weight_scale_2": s2.float().reshape(())}
                mq, mscale = MXFP4QTensor.quantize(m, 32)
                parts["mxfp4.weight"] = mq._quantized_data.to(torch.uint8).reshape(m.shape[0], -1)
                parts["mxfp4.scale"] = mscale.reshape(m.shape[0], -1)
                parts["fp8.weight"], parts["fp8.scale"] = fp8_block(m)
                for part, t in parts.items():
                    out[f"{key}.{part}"] = {"shape": list(t.shape), "fnv1a": fnv1a(tensor_bytes(t))}
    doc = {"source": "tools/make_demo_quant_goldens.py", "model": os.path.relpath(args.model, ROOT),
           "modelopt": modelopt.__version__, "torch": torch.__version__, "hash": "fnv1a-64 of the tensor bytes",
           "tensors": out}
    with open(args.out, "w") as fo:  # one tensor per line, so a diff names what changed
        header = {k: v for k, v in doc.items() if k != "tensors"}
        fo.write(json.dumps(header, indent=1, sort_keys=True)[:-2] + ',\n "tensors": {\n')
        fo.write(",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(out.items())))
        fo.write("\n }\n}\n")
    print(f"wrote {args.out}: {len(out)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
