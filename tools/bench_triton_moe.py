#!/usr/bin/env python3
"""The Triton peer of `megamoe bench moe` (issue 15): the DeepSeek-V4 MoE forward on the MXFP4 MoE path of
Triton's `triton_kernels` package (`matmul_ogs`), with the MXFP4 weights prepared the way vLLM prepares them
for sm90, at the shapes, routing and token counts of our bench, timed as CUDA-graph replays.

The package is not installed and never committed: it is the `python/triton_kernels` folder of the triton
repository at the 3.6.0 release, extracted to `.peers/triton_kernels` (the default of --triton-kernels; that
folder holds `triton_kernels/` and `SOURCE_COMMIT`). kernels/moe/NOTES.md ("Triton peer") says how to get it
and what each side computes. This script only calls the package's API.

One forward, everything inside the timed graph:
  1. router logits   matmul_ogs(x, gate^T) bf16 x bf16 -> fp32 (dense, no routing)
  2. routing         torch: sqrt(softplus(logits)), top-k of (scores + bias), weights = unbiased scores
                     normalised x routed_scaling; expert-sorted order by a stable argsort (our bench's
                     tie order), its inverse, per-expert counts; triton_kernels.tensor.make_ragged_tensor_metadata
                     for the tile schedule. (triton_kernels' own topk / bitmatrix-metadata kernels use
                     tl.arange over k and 32*k, so they only take a power-of-two k; DeepSeek-V4 has k = 6.)
  3. GEMM1           matmul_ogs(x, W13, gather_indx, fused SwiGLU (swiglu_fn, alpha=1, limit=swiglu_limit,
                     reduction_n=2)) -> h bf16 [T*k, I] in expert order
  4. GEMM2           matmul_ogs(h, W2, scatter_indx, gammas = routing weights) -> per-slot rows, then
                     triton_kernels' reduce over the k slots (inside matmul_ogs) -> y bf16 [T, D]
  5. shared expert   matmul_ogs dense bf16 (fused SwiGLU) + matmul_ogs dense bf16, then y += shared (torch add)
"""
import argparse
import inspect
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

# (D, I, E, k, I_shared, routed_scaling): the same table as bench/bench_moe.cpp
SHAPES = {"flash": (4096, 2048, 256, 6, 2048, 1.5), "pro": (7168, 3072, 384, 6, 3072, 2.5)}
SWIGLU_LIMIT = 10.0  # DeepSeek-V4 swiglu_limit; MoeLayerConfig in bench_moe.cpp uses 10.0 too
ROTATIONS = 8        # rotating inputs, as kRot in bench_moe.cpp
MXFP4_BYTES_PER_PARAM = 0.5 + 1.0 / 32  # E2M1 code + one E8M0 scale per 32, as MoeLayer::expert_bytes()

# ---------------------------------------------------------------------------------------------------------------
# The bench's inputs, bit for bit: bench_moe.cpp fills x, the router gate and the shared expert from splitmix64
# (`mix`), `unit` and round-to-nearest-even bf16. Reproduced here with int64 torch ops (wrapping multiply, logical
# shifts by masking), so the peer routes the same tokens to the same experts (up to fp32 summation order).
# ---------------------------------------------------------------------------------------------------------------


def _i64(v):
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= (1 << 63) else v


_GOLDEN, _C1, _C2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _lsr(z, s):
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix(z):
    z = z + _GOLDEN
    z = (z ^ _lsr(z, 30)) * _C1
    z = (z ^ _lsr(z, 27)) * _C2
    return z ^ _lsr(z, 31)


def bench_values(torch, seed, start, n, scale, device, chunk=1 << 26):
    """bf16_of(unit(mix(seed + i)) * scale) for i in [start, start + n), as bench_moe.cpp."""
    out = torch.empty(n, dtype=torch.bfloat16, device=device)
    for off in range(0, n, chunk):
        m = min(chunk, n - off)
        i = torch.arange(seed + start + off, seed + start + off + m, dtype=torch.int64, device=device)
        u = (_lsr(mix(i), 40) & 0xFFFFFF).to(torch.float32) / 16777216.0 * 2.0 - 1.0
        if scale != 1.0:
            u = u * scale
        out[off:off + m] = u.to(torch.bfloat16)
    return out


# ---------------------------------------------------------------------------------------------------------------
# package loading
# ---------------------------------------------------------------------------------------------------------------


def load_triton_kernels(path):
    root = Path(path).resolve()
    if not (root / "triton_kernels" / "__init__.py").is_file():
        sys.exit(f"bench_triton_moe: no triton_kernels package at {root}/triton_kernels/__init__.py.\n"
                 f"  Expected: python/triton_kernels of the triton repository at the 3.6.0 release, extracted to\n"
                 f"  {root} (kernels/moe/NOTES.md, 'Triton peer', has the commands), passed with --triton-kernels PATH\n"
                 f"  and carried to the GPU machine as the device tool's carry path .peers/triton_kernels.")
    sys.path.insert(0, str(root))
    import triton_kernels  # noqa: F401
    src = root / "SOURCE_COMMIT"
    return root, (src.read_text().strip() if src.is_file() else "unknown (no SOURCE_COMMIT file)")


def check_api():
    """Fails early, by name, if the extracted package is not the API this script was written against."""
    from triton_kernels.matmul_ogs import matmul_ogs, RoutingData, GatherIndx, ScatterIndx, PrecisionConfig  # noqa
    from triton_kernels.matmul_ogs import FnSpecs, FusedActivation, FlexCtx  # noqa: F401
    from triton_kernels.tensor_details import layout
    params = inspect.signature(matmul_ogs).parameters
    need = ["routing_data", "gather_indx", "scatter_indx", "precision_config", "gammas", "y", "fused_activation"]
    missing = [p for p in need if p not in params]
    if missing:
        raise RuntimeError(f"matmul_ogs lacks parameters {missing}: not the triton 3.6.0 triton_kernels API")
    if "reduction_n" not in inspect.signature(FnSpecs).parameters:
        raise RuntimeError("FnSpecs has no reduction_n: not the triton 3.6.0 triton_kernels API")
    for name in ["HopperMXValueLayout", "HopperMXScaleLayout", "make_default_matmul_mxfp4_w_layout",
                 "make_default_matmul_mxfp4_w_scale_layout"]:
        if not hasattr(layout, name):
            raise RuntimeError(f"triton_kernels.tensor_details.layout has no {name}")
    return list(params)


# ---------------------------------------------------------------------------------------------------------------
# weights, prepared as vLLM prepares MXFP4 MoE weights for sm90
# ---------------------------------------------------------------------------------------------------------------


def quantize_experts(torch, E, N, K, device, gen, chunk_experts, keep_raw):
    """Random bf16 expert matrices [E, N, K] (N output rows, K the reduction), quantized along K with
    triton_kernels' downcast_to_mxfp: the checkpoint layout vLLM loads (codes [E, N, K/2] uint8, two E2M1 per byte;
    E8M0 scales [E, N, K/32] uint8)."""
    from triton_kernels.numerics_details.mxfp import downcast_to_mxfp
    q = torch.empty((E, N, K // 2), dtype=torch.uint8, device=device)
    s = torch.empty((E, N, K // 32), dtype=torch.uint8, device=device)
    for e0 in range(0, E, chunk_experts):
        e1 = min(E, e0 + chunk_experts)
        w = torch.randn((e1 - e0, N, K), dtype=torch.bfloat16, device=device, generator=gen) * 0.02
        wq, ws = downcast_to_mxfp(w, torch.uint8, axis=-1)
        q[e0:e1].copy_(wq)
        s[e0:e1].copy_(ws)
        del w, wq, ws
    return q, s


def swizzle_mxfp4_hopper(torch, q, s, num_warps):
    """What vLLM's _swizzle_mxfp4 does on sm90 (torch >= 2.8.1): the quantization axis moved to dim 1 by a
    transpose view ([E, K/2, N], column-major), wrapped as FP4, converted to the default Hopper value layout
    (HopperMXValueLayout, mx_axis=1); the scales likewise to HopperMXScaleLayout(mx_axis=1, num_warps)."""
    from triton_kernels.numerics import InFlexData
    from triton_kernels.tensor import FP4, convert_layout, wrap_torch_tensor
    from triton_kernels.tensor_details import layout
    value_layout, value_opts = layout.make_default_matmul_mxfp4_w_layout(mx_axis=1)
    scale_layout, scale_opts = layout.make_default_matmul_mxfp4_w_scale_layout(mx_axis=1, num_warps=num_warps)
    if value_layout.__name__ != "HopperMXValueLayout" or scale_layout.__name__ != "HopperMXScaleLayout":
        print(f"warning: default layouts on this device are {value_layout.__name__} / {scale_layout.__name__}, "
              f"not the Hopper ones (is this an sm90 device?)", flush=True)
    wq = convert_layout(wrap_torch_tensor(q.transpose(-2, -1), dtype=FP4), value_layout, **value_opts)
    ws = convert_layout(wrap_torch_tensor(s.transpose(-2, -1)), scale_layout, **scale_opts)
    return wq, InFlexData(), ws


def column_major(w):
    """bf16 [.., K, N] stored column-major, as triton_kernels' bench stores bf16 weights for matmul_ogs."""
    return w.transpose(-1, -2).contiguous().transpose(-1, -2)


class PeerLayer:
    def __init__(self, torch, shape, device, num_warps, keep_raw, max_t, seed=0):
        from triton_kernels.matmul_ogs import PrecisionConfig, FlexCtx, FnSpecs, FusedActivation
        import triton_kernels.swiglu
        D, I, E, k, Is, rsf = SHAPES[shape]
        self.torch, self.D, self.I, self.E, self.k, self.Is, self.rsf = torch, D, I, E, k, Is, rsf
        self.device = device
        gen = torch.Generator(device=device).manual_seed(seed)
        t0 = time.time()
        # W13 rows interleaved: row 2j = w1 (gate) row j, row 2j+1 = w3 (up) row j, as swiglu_fn reads pairs.
        q13, s13 = quantize_experts(torch, E, 2 * I, D, device, gen, 16, keep_raw)
        q2, s2 = quantize_experts(torch, E, D, I, device, gen, 16, keep_raw)
        self.raw = (q13, s13, q2, s2) if keep_raw else None
        self.w13, f13, sc13 = swizzle_mxfp4_hopper(torch, q13, s13, num_warps)
        self.w2, f2, sc2 = swizzle_mxfp4_hopper(torch, q2, s2, num_warps)
        if not keep_raw:
            del q13, s13, q2, s2
        self.pc13 = PrecisionConfig(weight_scale=sc13, flex_ctx=FlexCtx(rhs_data=f13))
        self.pc2 = PrecisionConfig(weight_scale=sc2, flex_ctx=FlexCtx(rhs_data=f2))
        # router gate and shared expert: the bench's values (bench_moe.cpp seeds 7000, 8000, 9000, 9500)
        gate = bench_values(torch, 7000, 0, E * D, 0.05, device).view(E, D)
        sw1 = bench_values(torch, 8000, 0, Is * D, 0.02, device).view(Is, D)
        sw3 = bench_values(torch, 9000, 0, Is * D, 0.02, device).view(Is, D)
        sw2 = bench_values(torch, 9500, 0, D * Is, 0.02, device).view(D, Is)
        self.gate_ref = gate
        self.wg = column_major(gate.t())                                        # [D, E]
        sw13 = torch.stack([sw1, sw3], dim=1).reshape(2 * Is, D)                 # interleaved gate/up rows
        self.sw13_ref, self.sw2_ref = sw13, sw2
        self.sw13 = column_major(sw13.t()).unsqueeze(0)                         # [1, D, 2Is] (dense, batch 1)
        self.sw2 = column_major(sw2.t()).unsqueeze(0)                           # [1, Is, D]
        self.pc_router = PrecisionConfig(out_dtype=torch.float32)
        self.pc_dense = PrecisionConfig()
        self.act = FusedActivation(FnSpecs("swiglu", triton_kernels.swiglu.swiglu_fn, ("alpha", "limit"),
                                           reduction_n=2), (1.0, SWIGLU_LIMIT))
        self.bias = torch.zeros(E, dtype=torch.float32, device=device)
        # outputs written in place (matmul_ogs' y=), sized for max_t
        self.logits = torch.empty((max_t, E), dtype=torch.float32, device=device)
        self.h = torch.empty((max_t * k, I), dtype=torch.bfloat16, device=device)
        self.y = torch.empty((max_t, D), dtype=torch.bfloat16, device=device)
        self.sh = torch.empty((max_t, Is), dtype=torch.bfloat16, device=device)
        self.ys = torch.empty((max_t, D), dtype=torch.bfloat16, device=device)
        self.arange = torch.arange(max_t * k, dtype=torch.int32, device=device)
        torch.cuda.synchronize()
        self.prep_s = time.time() - t0

    def set_routing(self, skewed):
        self.bias.zero_()
        if skewed:  # bench_moe.cpp: bias 100 on experts 0..k-1 sends every token there
            self.bias[: self.k] = 100.0

    def route(self, logits):
        """DeepSeek-V4 sqrtsoftplus routing in torch, then the triton_kernels routing structures."""
        torch = self.torch
        from triton_kernels.matmul_ogs import RoutingData, GatherIndx, ScatterIndx
        from triton_kernels.tensor import make_ragged_tensor_metadata
        T = logits.shape[0]
        k, E = self.k, self.E
        scores = torch.sqrt(torch.nn.functional.softplus(logits))
        ids = torch.topk(scores + self.bias, k, dim=-1).indices
        w = scores.gather(1, ids)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.rsf
        flat = ids.reshape(-1)
        col_sorted = torch.argsort(flat, stable=True).to(torch.int32)           # expert-sorted pos -> (token, slot)
        row_sorted = torch.empty_like(col_sorted)                               # (token, slot) -> expert-sorted pos
        row_sorted.scatter_(0, col_sorted.long(), self.arange[: T * k])
        counts = torch.zeros(E, dtype=torch.int32, device=logits.device)
        counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        ragged = make_ragged_tensor_metadata(counts, T * k)
        gammas = w.reshape(-1)[col_sorted.long()]                               # routing weight per sorted row
        rdata = RoutingData(gammas, counts, E, k, ragged)
        return ids, rdata, GatherIndx(col_sorted, row_sorted), ScatterIndx(row_sorted, col_sorted)

    def forward(self, x):
        from triton_kernels.matmul_ogs import matmul_ogs
        T = x.shape[0]
        logits = self.logits[:T]
        matmul_ogs(x, self.wg, None, precision_config=self.pc_router, y=logits)
        ids, rdata, gidx, sidx = self.route(logits)
        h = self.h[: T * self.k]
        matmul_ogs(x, self.w13, None, rdata, gather_indx=gidx, precision_config=self.pc13,
                   fused_activation=self.act, y=h)
        y = self.y[:T]
        matmul_ogs(h, self.w2, None, rdata, scatter_indx=sidx, precision_config=self.pc2, gammas=rdata.gate_scal, y=y)
        sh = self.sh[:T]
        matmul_ogs(x, self.sw13, None, precision_config=self.pc_dense, fused_activation=self.act, y=sh)
        ys = self.ys[:T]
        matmul_ogs(sh, self.sw2, None, precision_config=self.pc_dense, y=ys)
        y.add_(ys)
        return y, ids

    # -- reference of the same formula (triton's SwiGLU variant) on dequantized weights, for --check ----------
    def reference(self, x):
        torch = self.torch
        from triton_kernels.numerics_details.mxfp import upcast_from_mxfp
        q13, s13, q2, s2 = self.raw
        F = torch.nn.functional
        lim = SWIGLU_LIMIT

        def act(gu):
            g, u = gu[:, 0::2].float().clamp(max=lim), gu[:, 1::2].float().clamp(-lim, lim)
            return (g * torch.sigmoid(g) * (u + 1.0)).to(torch.bfloat16)

        logits = x.float() @ self.gate_ref.float().t()
        scores = torch.sqrt(F.softplus(logits))
        ids = torch.topk(scores + self.bias, self.k, dim=-1).indices
        w = scores.gather(1, ids)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.rsf
        y = torch.zeros(x.shape[0], self.D, dtype=torch.float32, device=x.device)
        for e in ids.unique().tolist():
            tok, slot = (ids == e).nonzero(as_tuple=True)
            w13 = upcast_from_mxfp(q13[e], s13[e], torch.bfloat16, axis=-1)     # [2I, D]
            w2 = upcast_from_mxfp(q2[e], s2[e], torch.bfloat16, axis=-1)        # [D, I]
            h = act(x[tok] @ w13.t())
            y.index_add_(0, tok, (h @ w2.t()).float() * w[tok, slot, None])
        y += (act(x @ self.sw13_ref.t()) @ self.sw2_ref.t()).float()
        return y, ids


# ---------------------------------------------------------------------------------------------------------------
# timing, as bench_moe.cpp: eager median of CUDA-event times, and one CUDA graph per rotating input replayed
# round-robin with events around each replay; 3 warm-up calls/replays not counted.
# ---------------------------------------------------------------------------------------------------------------


def measure_copy_tbps(torch):
    n = 2 << 30
    a = torch.ones(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = []
    for i in range(12):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        b.copy_(a)
        e1.record()
        e1.synchronize()
        if i >= 2:
            ms.append(e0.elapsed_time(e1))
    del a, b
    return 2.0 * n / (statistics.median(ms) * 1e-3) / 1e12


def time_case(torch, layer, xs, T, iters):
    xin = [x[:T] for x in xs]
    for i in range(3):
        layer.forward(xin[i % ROTATIONS])
    torch.cuda.synchronize()
    ms, distinct = [], []
    for i in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        _, ids = layer.forward(xin[i % ROTATIONS])
        e1.record()
        e1.synchronize()
        ms.append(e0.elapsed_time(e1))
        distinct.append(int(ids.unique().numel()))
    eager_ms = statistics.median(ms)
    graphs, pool = [], None
    for r in range(ROTATIONS):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=pool):
            layer.forward(xin[r])
        pool = g.pool()
        graphs.append(g)
    torch.cuda.synchronize()
    gms = []
    for i in range(iters + 3):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        graphs[i % ROTATIONS].replay()
        e1.record()
        e1.synchronize()
        if i >= 3:
            gms.append(e0.elapsed_time(e1))
    del graphs
    return eager_ms, statistics.median(gms), sum(distinct) / len(distinct)


def case_numbers(shape, T, distinct):
    D, I, E, k, Is, _ = SHAPES[shape]
    nbytes = distinct * 3 * I * D * MXFP4_BYTES_PER_PARAM + 3 * Is * D * 2 + E * D * 2
    flops = 2.0 * T * (k * 3 * D * I + 3.0 * D * Is)
    return nbytes, flops


HEADER = "%-6s %-5s %-8s %5s %-18s %10s %9s %9s %8s %7s %9s %9s %8s" % (
    "shape", "fmt", "routing", "T", "path", "median_us", "GB_touch", "eff_TB/s", "%copy", "TFLOP/s", "graph_us",
    "graph_TB/s", "g_%copy")


def row(c, copy_tbps):
    tb, gtb = c["bytes"] / c["eager_us"] / 1e6, c["bytes"] / c["graph_us"] / 1e6
    return "%-6s %-5s %-8s %5d %-18s %10.1f %9.3f %9.2f %7.1f%% %7.1f %9.1f %9.2f %7.1f%%" % (
        c["shape"], "mxfp4", c["routing"], c["T"], "triton-matmul_ogs", c["eager_us"], c["bytes"] / 1e9, tb,
        100 * tb / copy_tbps, c["flops"] / c["eager_us"] / 1e6, c["graph_us"], gtb, 100 * gtb / copy_tbps)


def dry_run(a, root, source):
    """No GPU: the plan, the package API check, and the routing of the bench's inputs on the CPU."""
    print(f"dry run: triton_kernels from {root}/triton_kernels ({source})")
    try:
        import torch
    except ImportError:
        print("torch not importable: only the plan is printed")
        torch = None
    if torch is not None:
        try:
            params = check_api()
            print(f"API check ok: matmul_ogs({', '.join(params)})")
        except Exception as e:  # the plan still prints
            print(f"API check FAILED: {type(e).__name__}: {e}")
            a.failed = True
    max_t = max(a.tokens)
    for shape in a.shapes:
        D, I, E, k, Is, rsf = SHAPES[shape]
        wbytes = E * 3 * I * D * MXFP4_BYTES_PER_PARAM
        print(f"{shape}: D={D} I={I} E={E} k={k} I_shared={Is} routed_scaling={rsf} swiglu_limit={SWIGLU_LIMIT}; "
              f"MXFP4 experts {wbytes / 1e9:.2f} GB, inputs {ROTATIONS}x{max_t}x{D} bf16")
        print(f"  per T in {a.tokens} x routing in {a.routings}: router matmul_ogs [T x {D}] x [{D} x {E}] -> fp32; "
              f"torch routing; GEMM1 matmul_ogs gather T*{k} rows x [{D} x {2 * I}] MXFP4 + fused SwiGLU -> [T*{k} x {I}]; "
              f"GEMM2 matmul_ogs scatter x [{I} x {D}] MXFP4 + gammas, reduce over {k} slots -> [T x {D}]; shared "
              f"expert 2 dense bf16 matmul_ogs [{D} x {2 * Is}] + [{Is} x {D}]; {a.iters} eager calls + {a.iters} "
              f"graph replays ({ROTATIONS} graphs, round-robin)")
    if torch is None:
        return
    T = min(16, max_t)
    for shape in a.shapes:
        D, I, E, k, Is, rsf = SHAPES[shape]
        gate = bench_values(torch, 7000, 0, E * D, 0.05, "cpu").view(E, D).float()
        for routing in a.routings:
            bias = torch.zeros(E)
            if routing == "skewed":
                bias[:k] = 100.0
            x = bench_values(torch, 12345, 0, T * D, 1.0, "cpu").view(T, D).float()   # rotation 0, first T rows
            scores = torch.sqrt(torch.nn.functional.softplus(x @ gate.t()))
            ids = torch.topk(scores + bias, k, dim=-1).indices
            flat = ids.reshape(-1)
            col_sorted = torch.argsort(flat, stable=True)
            row_sorted = torch.empty_like(col_sorted)
            row_sorted.scatter_(0, col_sorted, torch.arange(T * k))
            counts = torch.zeros(E, dtype=torch.int32).scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
            ok = bool((row_sorted[col_sorted] == torch.arange(T * k)).all()) and int(counts.sum()) == T * k and \
                bool((flat[col_sorted][1:] >= flat[col_sorted][:-1]).all())
            if routing == "skewed":
                ok = ok and set(flat.tolist()) == set(range(k))
            a.failed |= not ok
            print(f"  routing {shape} {routing} T={T} (cpu): {flat.unique().numel()} distinct experts, max per expert "
                  f"{int(counts.max())}, permutation checks {'ok' if ok else 'FAILED'}; first token -> {ids[0].tolist()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triton-kernels", default=".peers/triton_kernels",
                    help="folder holding the triton_kernels/ package (python/triton_kernels of triton 3.6.0); "
                         "default .peers/triton_kernels relative to the working directory")
    ap.add_argument("--shapes", nargs="+", default=["flash", "pro"], choices=sorted(SHAPES))
    ap.add_argument("--tokens", nargs="+", type=int, default=[1, 16, 64, 256, 1024, 4096])
    ap.add_argument("--routings", nargs="+", default=["uniform", "skewed"], choices=["uniform", "skewed"])
    ap.add_argument("--iters", type=int, default=30, help="timed eager calls and graph replays per case")
    ap.add_argument("--num-warps", type=int, default=8, help="HopperMXScaleLayout num_warps (vLLM: 8)")
    ap.add_argument("--json", default=None, help="write the cases as a JSON list here")
    ap.add_argument("--check", action="store_true",
                    help="before timing, compare one forward (T=16, first shape) with a torch reference of the same "
                         "formula on dequantized weights; exit 1 if it is off")
    ap.add_argument("--compile-only", action="store_true", help="run each case a few times eagerly (fills the "
                    "Triton cache), time nothing")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: print the plan and check what the CPU can")
    a = ap.parse_args()
    a.failed = False
    if any(t < 1 for t in a.tokens) or a.iters < 1:
        ap.error("tokens and iters must be >= 1")
    root, source = load_triton_kernels(a.triton_kernels)
    if a.dry_run:
        dry_run(a, root, source)
        return 1 if a.failed else 0

    import torch
    import triton
    check_api()
    dev = "cuda"
    cap = torch.cuda.get_device_capability()
    print(f"device: {torch.cuda.get_device_name()} sm_{cap[0]}{cap[1]}, torch {torch.__version__}, "
          f"triton {triton.__version__}, triton_kernels {root} ({source})", flush=True)
    if not triton.__version__.startswith("3.6"):
        print(f"warning: triton {triton.__version__}, the package is triton 3.6.0's", flush=True)
    copy_tbps = measure_copy_tbps(torch)
    print(f"device-to-device copy (read+write): {copy_tbps:.2f} TB/s", flush=True)
    max_t = max(a.tokens)
    cases, failures = [], []
    if not a.compile_only:
        print(HEADER, flush=True)
    for si, shape in enumerate(a.shapes):
        D = SHAPES[shape][0]
        keep_raw = a.check and si == 0
        layer = PeerLayer(torch, shape, dev, a.num_warps, keep_raw, max_t)
        print(f"# {shape}: weights quantized and swizzled in {layer.prep_s:.1f} s", flush=True)
        # the bench's rotating inputs: x = bf16_of(unit(mix(12345 + i))), rotation r at r * max_t * D
        xs = [bench_values(torch, 12345, r * max_t * D, max_t * D, 1.0, dev).view(max_t, D) for r in range(ROTATIONS)]
        for routing in a.routings:
            layer.set_routing(routing == "skewed")
            if keep_raw:
                keep_raw = False
                Tc = min(16, max_t)
                y, ids = layer.forward(xs[0][:Tc])
                yr, idr = layer.reference(xs[0][:Tc])
                err = ((y.float() - yr).norm() / yr.norm()).item()
                same = (ids.sort(-1).values == idr.sort(-1).values).float().mean().item()
                ok = err < 2e-2 and same > 0.95
                print(f"# check {shape} {routing} T={Tc}: relative error {err:.2e} vs torch reference, "
                      f"{100 * same:.1f}% same expert choices -> {'ok' if ok else 'FAILED'}", flush=True)
                if not ok:
                    failures.append(f"check {shape} {routing}")
                layer.raw = None
                torch.cuda.empty_cache()
            for T in a.tokens:
                try:
                    if a.compile_only:
                        t0 = time.time()
                        for i in range(3):
                            layer.forward(xs[i][:T])
                        torch.cuda.synchronize()
                        print(f"# compiled {shape} {routing} T={T} ({time.time() - t0:.1f} s)", flush=True)
                        continue
                    eager_ms, graph_ms, distinct = time_case(torch, layer, xs, T, a.iters)
                    nbytes, flops = case_numbers(shape, T, distinct)
                    c = {"shape": shape, "format": "mxfp4", "routing": routing, "T": T, "path": "triton-matmul_ogs",
                         "eager_us": eager_ms * 1e3, "graph_us": graph_ms * 1e3, "bytes": nbytes, "flops": flops,
                         "distinct_experts": distinct, "graph_tflops": flops / (graph_ms * 1e-3) / 1e12,
                         "graph_tbps": nbytes / (graph_ms * 1e-3) / 1e12, "copy_tbps": copy_tbps, "iters": a.iters}
                    cases.append(c)
                    print(row(c, copy_tbps), flush=True)
                except Exception as e:  # report, keep going, exit non-zero at the end
                    failures.append(f"{shape} {routing} T={T}")
                    print(f"{shape:6} mxfp4 {routing:8} {T:5d} FAILED: {type(e).__name__}: {e}", flush=True)
                    torch.cuda.synchronize()
        del layer, xs
        torch.cuda.empty_cache()
    if a.json:
        meta = {"tool": "tools/bench_triton_moe.py", "triton_kernels": str(root), "source": source,
                "triton": triton.__version__, "torch": torch.__version__, "device": torch.cuda.get_device_name(),
                "copy_tbps": copy_tbps, "swiglu": f"triton_kernels swiglu_fn alpha=1 limit={SWIGLU_LIMIT}",
                "num_warps": a.num_warps, "failures": failures}
        Path(a.json).write_text(json.dumps({"meta": meta, "cases": cases}, indent=1) + "\n")
    if not a.compile_only:
        print("%copy = effective bandwidth / copy bandwidth (read+write bytes per second of a 2 GiB D2D copy)")
    if failures:
        print(f"FAILED cases: {', '.join(failures)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
