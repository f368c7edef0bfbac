#!/usr/bin/env python3
"""Independent W4A4 (NVFP4 weights x NVFP4 activations) MoE oracle -> tests/data/w4a4/golden.safetensors.

A small DeepSeek-V4 MoE layer (sqrtsoftplus top-k routing, clamped SwiGLU routed experts, bf16 shared
expert) computed in PyTorch from NVIDIA ModelOpt's own quantizers, in the op order of the Blackwell
NVFP4 MoE deployments (docs/w4a4-routing-order.md), not of megamoe's code:

  weights   ModelOpt NVFP4QTensor.quantize (modelopt/torch/quantization/qtensor/nvfp4_tensor.py) with
            weights_scaling_factor_2 = amax / 2688 (w1/w3 share the max of both, as exported
            checkpoints do), NVFP4QTensor.dequantize for their values. Written in checkpoint layout.
  act quant NVFP4QTensor.quantize + dequantize with weights_scaling_factor_2 = the static input_scale
            and the per-16 block scales computed from the data (get_weights_scaling_factor): the
            activation quantization of the DeepSeek-V4 ptq.py config (num_bits (2,1), block_sizes
            {-1: 16, type: dynamic, scale_bits: (4,3)}, a static global amax). ModelOpt's own
            fake-quant op for it, fp4_fake_quant_kernel (modelopt/torch/kernels/quantization/gemm/
            fp4_kernel_hopper.py, reached from TensorQuantizer._fake_quantize -> dynamic_block_quant),
            is a CUDA Triton kernel with the same formulas (fp8_quantize_scale: E4M3(min(blockamax /
            (6 gs), 448)) x gs; fp4_round_magnitude(|x| / that)); it is not run here because it needs a
            GPU, and Triton's CPU interpreter rounds the E4M3 cast's ties away from even (168.0 ->
            176.0, where the GPU's cvt.rn and torch give 160.0), which changed block scales here.
  op order  (TensorRT-LLM cutlass MoE: expandInputRowsKernel -> GEMM1 -> doActivationKernel ->
            GEMM2 -> finalizeMoeRoutingKernel; vLLM FlashInfer CUTLASS / Triton the same)
            xq   = fakequant(x, input_scale_w13[e])              per routed pair, per-expert scale
            g, u = xq @ W1[e]^T, xq @ W3[e]^T                     fp64 sums, rounded to fp32
            h    = silu(min(g, L)) * clamp(u, -L, L)              fp32, NOT routing-weighted
            hq   = fakequant(h, input_scale_w2[e])
            row  = hq @ W2[e]^T                                   fp64 sum, rounded to fp32
            y    = sum_j w_j * row_j (fp32, slot order) + shared(x)
            The shared expert is the reference's bf16 MLP on the unquantized x: h rounded to bf16
            before w2 (the official Expert casts before w2), routing weight 1.
  Intermediates stay fp32 (TensorRT-LLM's unfused path rounds the GEMM outputs to bf16; leaving that
  out keeps the golden free of one implementation's roundings, and the tests bound the difference).

Also written: y_shared (the shared expert's part of y), and y_weight_before_quant, the same layer with the routing weight multiplied into h before
its quantization (the other order), so a test can show which order an implementation follows.

Usage: python3 tools/make_w4a4_goldens.py [--out tests/data/w4a4/golden.safetensors]
(torch 2.11, nvidia-modelopt 0.47, safetensors; CPU only; fixed seed: every tensor is reproduced bit for
bit, checked 2026-12-02; the order of the header's metadata keys can differ between runs, safetensors writes
them from a hash map).
"""

import argparse
import os

import safetensors.torch
import torch
import torch.nn.functional as F
import modelopt
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

T, D, I, IS, E, K = 6, 128, 64, 64, 6, 2  # tokens, hidden, expert inter, shared inter, experts, top-k
ROUTED_SCALING, SWIGLU_LIMIT, SEED = 1.5, 10.0, 20261202
BLOCK = 16


def bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def fake_quant(x, global_scale):
    """NVFP4 quantize-dequantize of rows of x [M, N] (fp32): static global scale, dynamic block scales."""
    gs = torch.tensor(global_scale, dtype=torch.float32)
    q, sf, s2 = NVFP4QTensor.quantize(x.contiguous(), BLOCK, weights_scaling_factor_2=gs)
    return q.dequantize(dtype=torch.float32, scale=sf, double_scale=s2, block_sizes={-1: BLOCK})


def quantize_weight(w, s2):
    """NVFP4QTensor.quantize in checkpoint layout: packed U8 [out, in/2], E4M3 [out, in/16], values."""
    q, sf, s2 = NVFP4QTensor.quantize(w, BLOCK, weights_scaling_factor_2=s2)
    values = q.dequantize(dtype=torch.float32, scale=sf, double_scale=s2, block_sizes={-1: BLOCK})
    return q._quantized_data.contiguous(), sf.contiguous(), values


def matmul(a, b_t):
    """a @ b_t^T in float64, rounded once to fp32 (order-free reference sums)."""
    return (a.double() @ b_t.double().T).float()


def swiglu(g, u):
    g = torch.clamp(g, max=SWIGLU_LIMIT)
    u = torch.clamp(u, min=-SWIGLU_LIMIT, max=SWIGLU_LIMIT)
    return F.silu(g) * u


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/w4a4/golden.safetensors")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(SEED)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen) * std

    # Inputs: bf16-representable (the GPU op takes bf16 x and gate). Token 0 is 4x larger, so it
    # saturates static x scales and reaches the SwiGLU clamp.
    x = bf16(randn(T, D))
    x[0] = bf16(x[0] * 4.0)
    gate = bf16(randn(E, D, std=1.0 / D**0.5))
    bias = randn(E, std=0.1)

    # Routing (dsv4-architecture.md): fp32 sqrtsoftplus scores, top-k on scores + bias, weights from
    # the unbiased scores normalised to 1, times routed_scaling_factor.
    scores = torch.sqrt(F.softplus(matmul(x, gate)))
    biased = scores + bias
    order = torch.sort(biased, dim=1, descending=True, stable=True)
    ids = order.indices[:, :K].to(torch.int32)
    margin = (order.values[:, K - 1] - order.values[:, K]).min().item()
    assert margin > 1e-3, f"top-k near-tie (margin {margin}); change the seed"
    picked = torch.gather(scores, 1, ids.long())
    weights = picked / picked.sum(dim=1, keepdim=True) * ROUTED_SCALING

    # Routed experts: bf16 master weights quantized by ModelOpt.
    tensors = {}
    w1v, w3v, w2v = [], [], []
    for e in range(E):
        w1, w3 = bf16(randn(I, D, std=2.0 / D**0.5)), bf16(randn(I, D, std=2.0 / D**0.5))
        w2 = bf16(randn(D, I, std=1.0 / I**0.5))
        s13 = torch.maximum(w1.abs().max(), w3.abs().max()) / 2688.0  # fused gate/up amax
        for name, w, s2, vals in (("w1", w1, s13, w1v), ("w3", w3, s13, w3v), ("w2", w2, w2.abs().max() / 2688.0, w2v)):
            packed, sf, v = quantize_weight(w, s2)
            key = f"layers.0.ffn.experts.{e}.{name}"
            tensors[f"{key}.weight"] = packed
            tensors[f"{key}.weight_scale"] = sf
            tensors[f"{key}.weight_scale_2"] = s2.reshape(()).clone()
            vals.append(v)

    # Static activation scales as a calibration gives them (amax / 2688), the amax of this batch's
    # unweighted activations per expert times a spread: < 1 saturates blocks (scale 448, codes +-6).
    spread13 = [0.5, 1.0, 1.25, 0.75, 1.5, 1.0]
    spread2 = [1.0, 0.6, 1.5, 1.0, 0.8, 1.2]
    x_amax = x.abs().max()
    in13 = [float(x_amax * spread13[e] / 2688.0) for e in range(E)]

    def expert_h(e, xrow):
        xq = fake_quant(xrow, in13[e])
        return swiglu(matmul(xq, w1v[e]), matmul(xq, w3v[e]))

    h_amax = [0.0] * E
    for t in range(T):
        for j in range(K):
            e = int(ids[t, j])
            h_amax[e] = max(h_amax[e], float(expert_h(e, x[t:t + 1]).abs().max()))
    in2 = [h_amax[e] * spread2[e] / 2688.0 if h_amax[e] > 0 else 1.0 for e in range(E)]
    for e in range(E):
        for name in ("w1", "w3"):
            tensors[f"layers.0.ffn.experts.{e}.{name}.input_scale"] = torch.tensor(in13[e], dtype=torch.float32)
        tensors[f"layers.0.ffn.experts.{e}.w2.input_scale"] = torch.tensor(in2[e], dtype=torch.float32)

    # Shared expert: bf16 weights, unquantized x, h rounded to bf16 before w2.
    sw1, sw3 = bf16(randn(IS, D, std=2.0 / D**0.5)), bf16(randn(IS, D, std=2.0 / D**0.5))
    sw2 = bf16(randn(D, IS, std=1.0 / IS**0.5))
    shared = matmul(bf16(swiglu(matmul(x, sw1), matmul(x, sw3))), sw2)

    def forward(weight_before_quant):
        y = torch.zeros(T, D)
        for t in range(T):
            acc = torch.zeros(D)
            for j in range(K):
                e, w = int(ids[t, j]), weights[t, j]
                h = expert_h(e, x[t:t + 1])
                if weight_before_quant:
                    acc = acc + matmul(fake_quant(h * w, in2[e]), w2v[e])[0]
                else:
                    acc = acc + w * matmul(fake_quant(h, in2[e]), w2v[e])[0]
            y[t] = acc + shared[t]
        return y

    y = forward(False)
    y_a = forward(True)
    print(f"relative L2 between the two orders: {float((y - y_a).norm() / y.norm()):.3e}")

    tensors.update({
        "x": x.to(torch.bfloat16),
        "layers.0.ffn.gate.weight": gate.to(torch.bfloat16),
        "layers.0.ffn.gate.bias": bias,
        "layers.0.ffn.shared_experts.w1.weight": sw1.to(torch.bfloat16),
        "layers.0.ffn.shared_experts.w3.weight": sw3.to(torch.bfloat16),
        "layers.0.ffn.shared_experts.w2.weight": sw2.to(torch.bfloat16),
        "topk_ids": ids,
        "topk_weights": weights,
        "y": y,
        "y_weight_before_quant": y_a,
        "y_shared": shared,
    })
    meta = {
        "dims": f"T={T} D={D} I={I} I_s={IS} E={E} k={K}",
        "routed_scaling_factor": str(ROUTED_SCALING),
        "swiglu_limit": str(SWIGLU_LIMIT),
        "seed": str(SEED),
        "versions": f"torch {torch.__version__}, nvidia-modelopt {modelopt.__version__}",
        "made_by": "tools/make_w4a4_goldens.py",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, args.out, metadata=meta)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
