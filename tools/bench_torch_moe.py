#!/usr/bin/env python3
"""The torch bf16 peer of `megamoe bench moe`: the DeepSeek-V4 MoE forward the
way transformers runs it (bf16 weights, torch._grouped_mm), including routing
(fp32 sqrtsoftplus, biased top-k) and the permutation by expert, plus the
shared expert. Prints one table row per case, timed like the C++ bench
(median of CUDA-event times, warm, 8 rotating inputs)."""
import argparse

import torch
import torch.nn.functional as F

SHAPES = {"flash": (4096, 2048, 256, 6, 2048, 1.5), "pro": (7168, 3072, 384, 6, 3072, 2.5)}


def moe(x, gate, bias, w13, w2, sw13, sw2, k, rsf, limit=10.0):
    T, D = x.shape
    E, I2, _ = w13.shape
    I = I2 // 2
    scores = F.softplus(x.float() @ gate.float().t()).sqrt()
    ids = torch.topk(scores + bias, k, dim=-1).indices
    w = scores.gather(1, ids)
    w = w / w.sum(-1, keepdim=True) * rsf
    flat = ids.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=E)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    xs = x[order // k]
    gu = torch._grouped_mm(xs, w13.transpose(-2, -1), offs=offs)
    g, u = gu[:, :I].float().clamp(max=limit), gu[:, I:].float().clamp(-limit, limit)
    h = (F.silu(g) * u * w.flatten()[order, None]).to(torch.bfloat16)
    out = torch._grouped_mm(h, w2.transpose(-2, -1), offs=offs)
    y = torch.zeros(T, D, device=x.device, dtype=torch.float32)
    y.index_add_(0, order // k, out.float())
    sgu = x @ sw13.t()
    sg, su = sgu[:, : sw2.shape[1]].float().clamp(max=limit), sgu[:, sw2.shape[1]:].float().clamp(-limit, limit)
    y += ((F.silu(sg) * su).to(torch.bfloat16) @ sw2.t()).float()
    return y.to(torch.bfloat16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["flash", "pro"])
    ap.add_argument("--tokens", nargs="+", type=int, default=[1, 4, 16, 64, 256, 4096])
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    dev = "cuda"
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}")
    print(f"{'shape':6} {'routing':8} {'T':>5} {'median_us':>10} {'GB_touch':>9} {'eff_TB/s':>9} {'TFLOP/s':>8}")
    for name in a.shapes:
        D, I, E, k, Is, rsf = SHAPES[name]
        g = torch.Generator(device=dev).manual_seed(0)
        w13 = (torch.randn(E, 2 * I, D, device=dev, dtype=torch.bfloat16, generator=g) * 0.02)
        w2 = (torch.randn(E, D, I, device=dev, dtype=torch.bfloat16, generator=g) * 0.02)
        sw13 = torch.randn(2 * Is, D, device=dev, dtype=torch.bfloat16, generator=g) * 0.02
        sw2 = torch.randn(D, Is, device=dev, dtype=torch.bfloat16, generator=g) * 0.02
        gate = torch.randn(E, D, device=dev, dtype=torch.bfloat16, generator=g) * 0.05
        maxT = max(a.tokens)
        xs = [torch.randn(maxT, D, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(8)]
        for routing in ["uniform", "skewed"]:
            bias = torch.zeros(E, device=dev)
            if routing == "skewed":
                bias[:k] = 100.0
            for T in a.tokens:
                try:
                    for i in range(3):
                        moe(xs[i % 8][:T], gate, bias, w13, w2, sw13, sw2, k, rsf)
                    times, nbytes = [], 0.0
                    for i in range(a.iters):
                        x = xs[i % 8][:T]
                        s0, s1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        s0.record()
                        moe(x, gate, bias, w13, w2, sw13, sw2, k, rsf)
                        s1.record()
                        torch.cuda.synchronize()
                        times.append(s0.elapsed_time(s1))
                        sc = F.softplus(x.float() @ gate.float().t()).sqrt() + bias
                        distinct = torch.topk(sc, k, dim=-1).indices.unique().numel()
                        nbytes += distinct * 3 * I * D * 2 + 3 * Is * D * 2 + E * D * 2
                    times.sort()
                    med = times[len(times) // 2] * 1e-3
                    nbytes /= a.iters
                    flops = 2.0 * T * (k * 3 * D * I + 3 * D * Is)
                    print(f"{name:6} {routing:8} {T:5d} {med*1e6:10.1f} {nbytes/1e9:9.3f} {nbytes/med/1e12:9.2f} {flops/med/1e12:8.1f}",
                          flush=True)
                except Exception as e:  # report, keep going
                    print(f"{name:6} {routing:8} {T:5d} FAILED: {type(e).__name__}: {e}", flush=True)
        del w13, w2, sw13, sw2, xs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
