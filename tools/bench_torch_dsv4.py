#!/usr/bin/env python3
"""The torch peer of `megamoe bench decode|prefill`: transformers' DeepseekV4ForCausalLM
(eager, as transformers 5.17 ships it) in bf16 on the same checkpoint our engine benches,
normally a synthetic V4-Flash/Pro-width one from `megamoe make-synthetic`.

Loading. The checkpoint directory (config.json + *.safetensors, DeepSeek upstream names or
transformers names) is read by a small safetensors reader of its own, names are mapped to
transformers' (the table of src/core/key_names.cpp, i.e. transformers 5.17's
conversion_mapping["deepseek_v4"]), routed experts are stacked into `gate_up_proj` / `down_proj`,
and quantized tensors are dequantized to the compute dtype by the self-contained dequantizer below
(written from docs/formats.md / nvfp4-format.md):
  FP8 block-128   E4M3 [R, C] * one F32-or-E8M0 scale per 128x128 tile      (fp32 product)
  NVFP4 (ModelOpt) E2M1 packed [R, C/2] * fp32(E4M3 per 16 * F32 weight_scale_2)
  MXFP4 (DeepSeek) E2M1 packed [R, C/2] * E8M0 per 32
Why not transformers' own loaders: transformers 5.17 can dequantize FP8 block-128 on load
(FineGrainedFP8Config(dequantize=True)), but its NVFP4 quantizer refuses pre-quantized checkpoints
("Loading pre-quantized NVFP4 checkpoints is not supported yet") and its MXFP4 integration is
gpt-oss's tensor layout, so one dequantizer serves all three formats. The model is built on the
meta device and the dequantized tensors are assigned to it (no random init of ~13 GB per
Flash-width layer). Dtypes follow from_pretrained(torch_dtype=bfloat16): the modules listed in
transformers' `_keep_in_fp32_modules_strict` (mHC, norms, sinks, position biases, routing bias) stay
fp32, everything else bf16.

One patch to transformers: DeepseekV4RMSNorm returns `weight * x` with the fp32 weight, i.e. fp32
output, and the next bf16 linear then fails with a dtype mismatch (dsv4-architecture.md §10, HF PRs
#47486 / #48257, open). The patch casts the norm's result back to the input dtype (what those fixes
do); it is a no-op when the whole model runs in fp32 or fp64.

Measurements (time.perf_counter around each call with torch.cuda.synchronize; medians):
  decode:  per context C, C random tokens are prefilled once for one sequence (chunked prefill on
           transformers' DynamicCache, which holds V4's CSA/HCA cache layers), then the cache is
           replicated to each batch size B (every cached tensor repeated along the batch axis) and
           single-token decode steps are timed (the argmax of a step is the next step's input).
           Reported: ms per step, us per layer ((step - head) / layers; the head = hc_head + norm +
           lm_head, timed on its own), tokens/s = B / step, and the full-depth projection
           (43 layers for D=4096, 61 for D=7168: head + layers x us per layer), labelled projected.
  prefill: P random tokens from an empty cache, in chunks of --prefill-chunk tokens (transformers'
           chunked prefill; its eager attention materialises [heads, chunk, window + chunk +
           compressed entries] scores in fp32, so one 32K chunk cannot fit); tokens/s = P / time.
On CUDA the prefill chunk is lowered up front (halving, down to 256) until those transients fit the
free memory, and halved again on an out-of-memory error. A case that does not fit (out of memory)
or would not finish within --max-seconds (estimated from the prefill rate and step times seen so
far; also checked between chunks and steps) is skipped with the reason printed; the run ends
cleanly with the table and JSON lines of what ran. Order: decode at the first context, the prefill
lengths, then decode at the longer contexts.

No CUDA graph / torch.compile option: transformers 5.17 has no static cache for this model (its
`_can_compile_fullgraph = False`; `StaticCache` has no layer class for
compressed_sparse_attention / heavily_compressed_attention — `--probe-static-cache` shows the
error), and the DynamicCache grows by one compressed entry every 4 tokens, so a graph cannot be
captured once and replayed. The experts run transformers' default `grouped_mm` implementation
(`--experts-impl` to change).

--check-logits DIR...: loads tiny checkpoints (tests/data/tiny-*) in --dtype (fp64 by default) on
--device and compares transformers' full-prefill logits with the checkpoint's golden_logits.npy
(transformers fp64 goldens made by tools/make_tiny_models.py with its own quantizer/dequantizer)
and, with --megamoe BIN, with `megamoe logits --device cpu`; it also checks this script's decode
path (chunked prefill, cache replicated to batch 2, one-token steps) against full prefill.

Runs without network (no hub access; transformers is only used for its model classes).
"""
import time

_T0 = time.perf_counter()  # --max-seconds counts from here (imports included)

import argparse
import copy
import gc
import glob
import json
import mmap
import os
import re
import statistics
import subprocess
import sys
import tempfile

import torch

# ---------------------------------------------------------------------------
# safetensors reader (zero-copy views over an mmap; handles F8_E8M0 / F8_E4M3 as raw bytes)
# ---------------------------------------------------------------------------

_ST_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.uint8,  # E8M0 kept as its bytes
}


class SafeTensors:
    """All tensors of a checkpoint directory: name -> (dtype string, shape, file, offset, nbytes)."""

    def __init__(self, model_dir):
        files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {model_dir}")
        self.entries, self._maps = {}, {}
        for path in files:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            base = 8 + n
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                b, e = info["data_offsets"]
                self.entries[name] = (info["dtype"], tuple(info["shape"]), path, base + b, e - b)

    def dtype(self, name):
        return self.entries[name][0]

    def shape(self, name):
        return self.entries[name][1]

    def get(self, name):
        dt, shape, path, off, nbytes = self.entries[name]
        if dt not in _ST_DTYPES:
            raise ValueError(f"{name}: unsupported safetensors dtype {dt}")
        if path not in self._maps:
            with open(path, "rb") as f:
                self._maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        if nbytes == 0:
            return torch.empty(shape, dtype=_ST_DTYPES[dt])
        raw = torch.frombuffer(self._maps[path], dtype=torch.uint8, offset=off, count=nbytes)
        return raw.view(_ST_DTYPES[dt]).reshape(shape)


# ---------------------------------------------------------------------------
# Names: DeepSeek upstream -> transformers (src/core/key_names.cpp, same order and anchors)
# ---------------------------------------------------------------------------

_RENAMES = [  # (from, to, anchor) anchor: any | whole | suffix | prefix
    (".attn.", ".self_attn.", "any"), (".ffn.", ".mlp.", "any"),
    (".indexer.compressor.", ".compressor.indexer.", "any"),
    ("embed.", "embed_tokens.", "prefix"), ("head.", "lm_head.", "prefix"),
    ("hc_head_fn", "hc_head.hc_fn", "whole"), ("hc_head_base", "hc_head.hc_base", "whole"),
    ("hc_head_scale", "hc_head.hc_scale", "whole"),
    (".attn_norm.", ".input_layernorm.", "any"), (".ffn_norm.", ".post_attention_layernorm.", "any"),
    (".hc_attn_fn", ".attn_hc.fn", "suffix"), (".hc_attn_base", ".attn_hc.base", "suffix"),
    (".hc_attn_scale", ".attn_hc.scale", "suffix"), (".hc_ffn_fn", ".ffn_hc.fn", "suffix"),
    (".hc_ffn_base", ".ffn_hc.base", "suffix"), (".hc_ffn_scale", ".ffn_hc.scale", "suffix"),
    (".attn_sink", ".sinks", "suffix"),
    (".indexer.weights_proj.", ".compressor.indexer.scorer.weights_proj.", "any"),
    (".indexer.wq_b.", ".compressor.indexer.q_b_proj.", "any"),
    (".norm.", ".kv_norm.", "any"), (".ape", ".position_bias", "suffix"),
    (".wq_a.", ".q_a_proj.", "any"), (".self_attn.wq_b.", ".self_attn.q_b_proj.", "any"),
    (".wkv.", ".kv_proj.", "any"), (".wgate.", ".gate_proj.", "any"), (".wo_a.", ".o_a_proj.", "any"),
    (".wo_b.", ".o_b_proj.", "any"), (".q_norm.", ".q_a_norm.", "any"),
    (".gate.bias", ".gate.e_score_correction_bias", "suffix"),
    (".shared_experts.w1.", ".shared_experts.gate_proj.", "any"),
    (".shared_experts.w2.", ".shared_experts.down_proj.", "any"),
    (".shared_experts.w3.", ".shared_experts.up_proj.", "any"),
]
_EXPERT_RE = re.compile(r"\.experts\.(\d+)\.(w1|w2|w3)\.")
_EXPERT_PROJ = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def canonical_name(name):
    """Checkpoint tensor name -> transformers name; routed experts stay per expert
    (`model.layers.L.mlp.experts.E.{gate,up,down}_proj.X`). Idempotent on transformers names."""
    if name.startswith("lm_head."):
        return name
    out = name[6:] if name.startswith("model.") else name
    if out.endswith(".scale") and not out.endswith("_hc.scale"):
        out = out[: -len(".scale")] + ".weight_scale_inv"
    if out.startswith("mtp."):
        return out
    for src, dst, anchor in _RENAMES:
        if anchor == "whole":
            if out == src:
                out = dst
        elif anchor == "suffix":
            if out.endswith(src):
                out = out[: -len(src)] + dst
        elif anchor == "prefix":
            if out.startswith(src):
                out = dst + out[len(src):]
        else:
            out = out.replace(src, dst, 1)
    out = _EXPERT_RE.sub(lambda m: f".experts.{m.group(1)}.{_EXPERT_PROJ[m.group(2)]}.", out, count=1)
    if out.startswith("lm_head.") or out.startswith("mtp."):
        return out
    return "model." + out


# ---------------------------------------------------------------------------
# Dequantization (docs/formats.md)
# ---------------------------------------------------------------------------

_E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def e8m0_to_f32(raw_u8):
    return torch.exp2(raw_u8.to(torch.float32) - 127.0)  # 0x00 = 2^-127, 0xFF = inf (NaN in the format)


_E2M1_TABLES = {}


def unpack_e2m1(packed, dtype):
    """uint8/int8 [R, C/2] -> E2M1 values [R, C] (low nibble = even element)."""
    p = packed.view(torch.uint8)
    codes = torch.stack([p & 0xF, p >> 4], dim=-1).reshape(p.shape[0], p.shape[1] * 2)
    key = (p.device, dtype)
    if key not in _E2M1_TABLES:
        _E2M1_TABLES[key] = torch.tensor(_E2M1, dtype=dtype, device=p.device)
    return _E2M1_TABLES[key][codes.long()]


def dequant_fp8_block(w, scale, scale_dtype, dtype):
    rows, cols = w.shape
    s = e8m0_to_f32(scale) if scale_dtype == "F8_E8M0" else scale.to(torch.float32)
    br = bc = 128  # the block of every DeepSeek FP8 release ([128, 128] weight_block_size)
    if s.shape != (-(-rows // br), -(-cols // bc)):
        raise ValueError(f"FP8 weight {tuple(w.shape)} with {tuple(s.shape)} scales is not block-128")
    s = s.repeat_interleave(br, 0)[:rows].repeat_interleave(bc, 1)[:, :cols]
    return (w.to(torch.float32) * s).to(dtype)  # fp32 product, as an fp32 engine computes it


def dequant_mxfp4(w, scale, dtype):
    rows, cols = w.shape[0], w.shape[1] * 2
    group = cols // scale.shape[1]
    s = e8m0_to_f32(scale).to(_acc(dtype)).repeat_interleave(group, 1)
    return (unpack_e2m1(w, _acc(dtype)) * s).to(dtype)


def dequant_nvfp4(w, scale, scale_2, dtype):
    cols = w.shape[1] * 2
    group = cols // scale.shape[1]
    p = scale.to(torch.float32) * scale_2.to(torch.float32).reshape(())  # fp32(e4m3 * s2) first (ModelOpt)
    return (unpack_e2m1(w, _acc(dtype)) * p.to(_acc(dtype)).repeat_interleave(group, 1)).to(dtype)


class Loader:
    """Produces transformers-named tensors (dequantized, on `device`, in `dtype`) from a checkpoint."""

    def __init__(self, model_dir, device, dtype):
        self.st = SafeTensors(model_dir)
        self.device, self.dtype = device, dtype
        self.names = {}  # canonical -> checkpoint name
        for name in self.st.entries:
            self.names[canonical_name(name)] = name
        self.formats = {}

    def has(self, canon):
        return canon in self.names

    def raw(self, canon):
        return self.st.get(self.names[canon]).to(self.device)

    def tensor(self, canon, dtype):
        """A weight (dequantized if it has companion scales) or a plain tensor, as `dtype`."""
        base = canon[: -len(".weight")] if canon.endswith(".weight") else None
        if base is not None and self.has(base + ".weight_scale") and self.has(base + ".weight_scale_2"):
            self.formats["nvfp4"] = self.formats.get("nvfp4", 0) + 1
            return dequant_nvfp4(self.raw(canon), self.raw(base + ".weight_scale").view(torch.float8_e4m3fn),
                                 self.raw(base + ".weight_scale_2"), dtype)
        if base is not None and self.has(base + ".weight_scale_inv"):
            wdt = self.st.dtype(self.names[canon])
            sdt = self.st.dtype(self.names[base + ".weight_scale_inv"])
            if wdt == "F8_E4M3":
                self.formats["fp8-block"] = self.formats.get("fp8-block", 0) + 1
                return dequant_fp8_block(self.raw(canon), self.raw(base + ".weight_scale_inv"), sdt, dtype)
            if wdt in ("I8", "U8"):
                self.formats["mxfp4"] = self.formats.get("mxfp4", 0) + 1
                return dequant_mxfp4(self.raw(canon), self.raw(base + ".weight_scale_inv"), dtype)
            raise ValueError(f"{canon}: scale tensor with a {wdt} weight")
        t = self.raw(canon)
        if t.is_floating_point() and t.dtype != dtype:
            self.formats["plain"] = self.formats.get("plain", 0) + 1
            t = t.to(dtype)
        return t

    def experts(self, layer, which, shape, dtype):
        """Stacked routed experts: which = gate_up_proj [E, 2I, D] or down_proj [E, D, I]."""
        stacked = f"model.layers.{layer}.mlp.experts.{which}"
        if self.has(stacked):  # transformers-named checkpoint
            return self.tensor(stacked, dtype)
        out = torch.empty(shape, dtype=dtype, device=self.device)
        n_exp, inter = shape[0], shape[1] // 2
        for e in range(n_exp):
            pre = f"model.layers.{layer}.mlp.experts.{e}."
            if which == "gate_up_proj":
                out[e, :inter] = self.tensor(pre + "gate_proj.weight", dtype)
                out[e, inter:] = self.tensor(pre + "up_proj.weight", dtype)
            else:
                out[e] = self.tensor(pre + "down_proj.weight", dtype)
        return out


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
           "fp64": torch.float64, "float64": torch.float64}


def patch_rmsnorm():
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m

    def forward(self, hidden_states):  # transformers' body + the cast back (HF PRs #47486 / #48257)
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return (self.weight * hidden_states.to(input_dtype)).to(input_dtype)

    m.DeepseekV4RMSNorm.forward = forward


def read_config(model_dir, layers=None):
    from transformers import DeepseekV4Config

    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    for k in ("quantization_config", "expert_dtype", "architectures", "torch_dtype", "dtype", "transformers_version"):
        raw.pop(k, None)
    full_layers = raw["num_hidden_layers"]
    if layers is not None and layers < full_layers:
        raw["num_hidden_layers"] = layers
        for k in ("layer_types", "mlp_layer_types", "compress_ratios"):
            if isinstance(raw.get(k), list):
                raw[k] = raw[k][:layers]
    return DeepseekV4Config(**raw), full_layers


def layer_bytes_bf16(cfg):
    """bf16 bytes of one decoder layer (routed experts dominate: 3 * E * I * D)."""
    d, e, i = cfg.hidden_size, cfg.n_routed_experts, cfg.moe_intermediate_size
    h, hd, q, g, o = cfg.num_attention_heads, cfg.head_dim, cfg.q_lora_rank, cfg.o_groups, cfg.o_lora_rank
    attn = q * d + h * hd * q + hd * d + g * o * (h * hd // g) + d * g * o
    comp = 2 * (2 * hd) * d + 2 * (2 * cfg.index_head_dim) * d + cfg.index_n_heads * cfg.index_head_dim * q
    return 2 * (3 * e * i * d + 3 * i * d + e * d + attn + comp)


def load_model(model_dir, device, dtype, layers=None, experts_impl=None, log=print):
    """DeepseekV4ForCausalLM with the checkpoint's weights (dequantized), on `device`."""
    from transformers import DeepseekV4ForCausalLM
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4RotaryEmbedding

    patch_rmsnorm()
    cfg, full_layers = read_config(model_dir, layers)
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = DeepseekV4ForCausalLM(cfg)
    keep_fp32 = re.compile("|".join(re.escape(m) for m in (model._keep_in_fp32_modules_strict or [])))
    loader = Loader(model_dir, device, dtype)
    state, ignored = {}, 0
    for name, meta in model.state_dict().items():
        if not meta.is_floating_point():
            want = meta.dtype
        elif dtype in (torch.bfloat16, torch.float16) and keep_fp32.search(name):
            want = torch.float32
        else:
            want = dtype
        m = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", name)
        if m:
            t = loader.experts(int(m.group(1)), m.group(2), tuple(meta.shape), want)
        else:
            if not loader.has(name):
                raise KeyError(f"{model_dir}: no tensor for transformers parameter {name}")
            t = loader.tensor(name, want)
            if t.dtype != want:
                t = t.to(want)
        if tuple(t.shape) != tuple(meta.shape):
            if t.numel() == meta.numel():  # e.g. a scalar stored as [1]
                t = t.reshape(meta.shape)
            else:
                raise ValueError(f"{name}: checkpoint shape {tuple(t.shape)}, model wants {tuple(meta.shape)}")
        state[name] = t.contiguous()
    used = set(state)
    for canon in loader.names:
        if canon not in used and not canon.endswith(("_scale", "_scale_inv", "_scale_2", ".input_scale")) \
                and ".experts." not in canon:
            ignored += 1  # mtp.*, layers beyond --layers, ...
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected:
        raise RuntimeError(f"unexpected keys {unexpected[:5]}")
    del state
    rot = DeepseekV4RotaryEmbedding(cfg)  # non-persistent buffers (inv_freq tables) are still meta
    for mod in model.modules():
        if isinstance(mod, DeepseekV4RotaryEmbedding):
            for bname, buf in rot.named_buffers():
                setattr(mod, bname, buf.to(device))
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left and device.type != "meta":
        raise RuntimeError(f"still on the meta device after loading: {left[:5]}")
    if experts_impl:
        model.set_experts_implementation(experts_impl)
    model.eval()
    if device.type == "cuda":
        torch.cuda.synchronize()
    info = dict(load_s=time.perf_counter() - t0, layers=cfg.num_hidden_layers, checkpoint_layers=full_layers,
                formats=dict(loader.formats), ignored_tensors=ignored,
                param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
                experts_impl=getattr(model.config, "_experts_implementation", None))
    log(f"loaded {model_dir}: {cfg.num_hidden_layers} of {full_layers} layers, "
        f"{info['param_bytes'] / 1e9:.2f} GB of parameters on {device}, dequantized {info['formats']}, "
        f"{info['load_s']:.1f} s, experts: {info['experts_impl']}")
    return model, cfg, info


# ---------------------------------------------------------------------------
# Cache helpers and steps
# ---------------------------------------------------------------------------


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def replicate_cache(cache, batch):
    """A copy of a batch-1 cache for `batch` identical sequences (every tensor repeated on dim 0)."""
    out = copy.copy(cache)
    out.layers = []

    def rep(v):
        if isinstance(v, torch.Tensor):
            if v.dim() > 0 and v.shape[0] == 1:
                return v.repeat(batch, *([1] * (v.dim() - 1)))
            return v.clone()
        if isinstance(v, dict):
            return {k: rep(x) for k, x in v.items()}
        if isinstance(v, list):
            return [rep(x) for x in v]
        return copy.copy(v)

    for layer in cache.layers:
        new = copy.copy(layer)
        aliased = getattr(layer, "values", None) is getattr(layer, "keys", None)
        for k, v in vars(layer).items():
            setattr(new, k, rep(v))
        if aliased and hasattr(layer, "keys"):
            new.values = new.keys  # V4 shares K = V
        out.layers.append(new)
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def prefill(model, cache, ids, chunk):
    out = None
    for s in range(0, ids.shape[1], chunk):
        out = model(input_ids=ids[:, s:s + chunk], past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out


class OverBudget(Exception):
    pass


def is_oom(e):
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_size(text):
    text = text.strip().upper()
    return int(float(text[:-1]) * 1024) if text.endswith("K") else int(text)


def size_label(n):
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


# ---------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------


class Bench:
    def __init__(self, a, model, cfg, info, device):
        self.a, self.model, self.cfg, self.info, self.device = a, model, cfg, info, device
        self.t_start = a.t_start
        self.deadline = a.t_start + a.max_seconds if a.max_seconds else float("inf")
        self.gen = torch.Generator().manual_seed(a.seed)
        self.results = []
        self.jsonf = open(a.json, "w") if a.json else None
        self.full_depth = {4096: 43, 7168: 61}.get(cfg.hidden_size)
        self.longest_fill = None  # (tokens, seconds) of the longest prefill so far, for time estimates
        self.head_ms = {}

    def left(self):
        return self.deadline - time.perf_counter()

    def estimate_fill(self, tokens):
        """Seconds to prefill `tokens`, from the longest prefill so far, taking half of that time as growing
        with the length (attention over the window and tokens/4 compressed entries) beyond it."""
        if not self.longest_fill:
            return 0.0
        t, secs = self.longest_fill
        r = tokens / t
        return secs * r * (0.5 + 0.5 * r) if r > 1 else secs * r

    def saw_fill(self, tokens, secs):
        if not self.longest_fill or tokens >= self.longest_fill[0]:
            self.longest_fill = (tokens, secs)

    def ids(self, batch, n):
        return torch.randint(2, self.cfg.vocab_size, (batch, n), generator=self.gen).to(self.device)

    def emit(self, rec):
        rec = dict(rec, device=self.a.device_name, torch=torch.__version__, transformers=self.a.tf_version,
                   dtype=self.a.dtype, layers=self.cfg.num_hidden_layers, hidden_size=self.cfg.hidden_size,
                   model=self.a.model, experts_impl=self.info["experts_impl"])
        self.results.append(rec)
        if self.jsonf:
            self.jsonf.write(json.dumps(rec) + "\n")
            self.jsonf.flush()

    def skip(self, kind, why, **case):
        print(f"{kind:7} {' '.join(f'{k}={v}' for k, v in case.items())}: skipped: {why}", flush=True)
        self.emit(dict(kind=kind, status="skipped", reason=why, **case))

    def time_head(self, batch):
        """hc_head + norm + lm_head for [batch, 1] (the non-layer part of a decode step)."""
        if batch in self.head_ms:
            return self.head_ms[batch]
        m = self.model.model
        x = torch.randn(batch, 1, self.cfg.hc_mult, self.cfg.hidden_size, generator=self.gen).to(
            self.device, self.model.lm_head.weight.dtype)
        ts = []
        with torch.no_grad():
            for i in range(self.a.warmup + self.a.iters):
                sync(self.device)
                t0 = time.perf_counter()
                self.model.lm_head(m.norm(m.hc_head(x))).argmax(-1)
                sync(self.device)
                if i >= self.a.warmup:
                    ts.append(time.perf_counter() - t0)
        self.head_ms[batch] = statistics.median(ts) * 1e3
        return self.head_ms[batch]

    def chunk_for(self, tokens):
        """The largest chunk <= --prefill-chunk whose eager-attention transients fit the free GPU memory:
        per CSA layer about 16 B x heads x chunk x (chunk + window + tokens/4) (bf16 scores, fp32 copies
        with the sink column, softmax) or 12 B x indexer heads x chunk x tokens/4 (fp32 indexer scores)."""
        chunk = self.a.prefill_chunk
        if self.device.type != "cuda":
            return chunk
        c = self.cfg
        rate = c.compress_rates["compressed_sparse_attention"]
        free_b = torch.cuda.mem_get_info(self.device)[0] * 0.8
        while chunk > 256:
            attn = 16 * c.num_attention_heads * chunk * (chunk + c.sliding_window + tokens / rate)
            index = 12 * c.index_n_heads * chunk * tokens / rate
            if max(attn, index) <= free_b:
                break
            chunk //= 2
        return chunk

    def fill(self, tokens, batch=1):
        """A cache holding `tokens` random tokens for one sequence; (cache, seconds, chunk used)."""
        chunk = self.chunk_for(tokens)
        while True:
            cache = new_cache(self.model)
            ids = self.ids(batch, tokens)
            try:
                sync(self.device)
                t0 = time.perf_counter()
                with torch.no_grad():
                    for s in range(0, tokens, chunk):
                        self.model(input_ids=ids[:, s:s + chunk], past_key_values=cache, use_cache=True,
                                   logits_to_keep=1)
                        if time.perf_counter() > self.deadline:
                            raise OverBudget(f"time budget ran out after prefilling {s + chunk} of {tokens} tokens")
                sync(self.device)
                return cache, time.perf_counter() - t0, chunk
            except Exception as e:  # noqa: BLE001 - OOM: retry with a smaller chunk
                if not is_oom(e) or chunk <= 256:
                    raise
            cache = None  # outside the except block, so the failed frames' tensors are gone too
            free(self.device)
            chunk //= 2
            print(f"  (out of memory prefilling {tokens} tokens; retrying with chunks of {chunk})", flush=True)

    def run_prefill(self, tokens):
        case = dict(tokens=tokens)
        if tokens > self.cfg.max_position_embeddings:
            return self.skip("prefill", "longer than max_position_embeddings", **case)
        est = self.estimate_fill(tokens)
        if est > self.left():
            return self.skip("prefill", f"estimated {est:.0f} s > {max(self.left(), 0):.0f} s left of --max-seconds",
                             **case)
        times, chunk, why = [], None, None
        try:
            for i in range(self.a.prefill_iters):
                # more than one iteration only while it fits the budget (and takes < 1/10 of it)
                if i > 0 and (times[-1] * 1.2 > self.left() or
                              (self.a.max_seconds and times[-1] > self.a.max_seconds / 10)):
                    break
                cache, secs, chunk = self.fill(tokens)
                cache = None
                free(self.device)
                times.append(secs)
                self.saw_fill(tokens, secs)
        except OverBudget as e:
            why = None if times else str(e)
        except Exception as e:  # noqa: BLE001
            why = (f"out of memory even with chunks of 256 ({str(e)[:120]})" if is_oom(e)
                   else f"failed: {type(e).__name__}: {str(e)[:200]}")
        free(self.device)
        if why:
            return self.skip("prefill", why, **case)
        med = statistics.median(times)
        rec = dict(kind="prefill", status="ok", tokens=tokens, chunk=chunk, iters=len(times), ms=med * 1e3,
                   tokens_per_s=tokens / med, ms_per_layer=med * 1e3 / self.cfg.num_hidden_layers)
        if self.full_depth:
            rec.update(full_depth_layers=self.full_depth,
                       projected_tokens_per_s=tokens / (med * self.full_depth / self.cfg.num_hidden_layers))
        proj = f"{rec['projected_tokens_per_s']:12.1f}" if self.full_depth else f"{'-':>12}"
        print(f"prefill {size_label(tokens):>6} {'':>5} {rec['ms']:10.1f} {rec['ms_per_layer']:10.2f} "
              f"{rec['tokens_per_s']:10.1f} {proj}   chunk {chunk}, {len(times)} iters", flush=True)
        self.emit(rec)

    def run_decode_context(self, context, batches):
        if context + self.a.warmup + self.a.iters > self.cfg.max_position_embeddings:
            for b in batches:
                self.skip("decode", "context longer than max_position_embeddings", batch=b, context=context)
            return
        est = self.estimate_fill(context)
        if est > self.left():
            for b in batches:
                self.skip("decode", f"prefilling the context: estimated {est:.0f} s > {max(self.left(), 0):.0f} s "
                          "left of --max-seconds", batch=b, context=context)
            return
        why = None
        try:
            base, secs, chunk = self.fill(context)
        except Exception as e:  # noqa: BLE001
            why = str(e) if isinstance(e, OverBudget) else (
                f"out of memory prefilling the context ({str(e)[:120]})" if is_oom(e)
                else f"context prefill failed: {type(e).__name__}: {str(e)[:200]}")
        if why:
            free(self.device)
            for b in batches:
                self.skip("decode", why, batch=b, context=context)
            return
        self.saw_fill(context, secs)
        print(f"  (context {size_label(context)} prefilled in {secs:.1f} s, chunks of {chunk})", flush=True)
        last_step = None
        for b in batches:
            case = dict(batch=b, context=context)
            if last_step is not None and last_step * (self.a.warmup + 1) > self.left():
                self.skip("decode", f"time budget (a step takes >= {last_step * 1e3:.0f} ms, "
                          f"{max(self.left(), 0):.0f} s left)", **case)
                continue
            cache, out, why = None, None, None
            try:
                cache = replicate_cache(base, b)
                tok = self.ids(b, 1)
                times = []
                with torch.no_grad():
                    for i in range(self.a.warmup + self.a.iters):
                        sync(self.device)
                        t0 = time.perf_counter()
                        out = self.model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
                        tok = out.logits[:, -1].argmax(-1, keepdim=True)
                        sync(self.device)
                        dt = time.perf_counter() - t0
                        if i >= self.a.warmup:
                            times.append(dt)
                        if times and dt > self.left():
                            break
                        if i + 1 < self.a.warmup + self.a.iters and dt > self.left():
                            raise OverBudget(f"time budget ran out during warm-up (a step took {dt * 1e3:.0f} ms)")
                med = statistics.median(times)
                last_step = med
                head = self.time_head(b)
                per_layer_us = max(med * 1e3 - head, 0.0) * 1e3 / self.cfg.num_hidden_layers
                rec = dict(kind="decode", status="ok", batch=b, context=context, iters=len(times),
                           ms_per_step=med * 1e3, us_per_layer=per_layer_us, head_ms=head,
                           tokens_per_s=b / med, context_prefill_s=secs, context_prefill_chunk=chunk)
                if self.full_depth:
                    rec.update(full_depth_layers=self.full_depth,
                               projected_ms_per_step=head + per_layer_us * self.full_depth / 1e3)
                proj = f"{rec['projected_ms_per_step']:12.2f}" if self.full_depth else f"{'-':>12}"
                print(f"decode  {size_label(context):>6} {b:5d} {rec['ms_per_step']:10.2f} {per_layer_us:10.1f} "
                      f"{rec['tokens_per_s']:10.1f} {proj}   head {head:.2f} ms, {len(times)} iters", flush=True)
                self.emit(rec)
            except OverBudget as e:
                why = str(e)
            except Exception as e:  # noqa: BLE001
                why = (f"out of memory ({str(e)[:120]})" if is_oom(e)
                       else f"failed: {type(e).__name__}: {str(e)[:200]}")
            cache = out = None
            free(self.device)
            if why:
                self.skip("decode", why, **case)
        del base
        free(self.device)


def bench_main(a):
    device = torch.device(a.device)
    dtype = _DTYPES[a.dtype]
    if device.type == "cuda":
        a.device_name = torch.cuda.get_device_name(device)
    else:
        a.device_name = f"cpu ({torch.get_num_threads()} threads)"
    import transformers

    a.tf_version = transformers.__version__
    layers = None
    cfg0, full_layers = read_config(a.model)
    if a.layers == "auto":
        if device.type == "cuda":
            free_b, _ = torch.cuda.mem_get_info(device)
            per = layer_bytes_bf16(cfg0) if dtype == torch.bfloat16 else layer_bytes_bf16(cfg0) * dtype.itemsize // 2
            fixed = 2 * cfg0.vocab_size * cfg0.hidden_size * dtype.itemsize
            layers = int(max(1, min(full_layers, (free_b - a.reserve_gb * 2**30 - fixed) // per)))
            print(f"--layers auto: {layers} of {full_layers} layers fit ({free_b / 2**30:.0f} GiB free, "
                  f"{per / 2**30:.1f} GiB per layer, {a.reserve_gb} GiB kept for activations and caches)")
        else:
            layers = full_layers
    elif a.layers:
        layers = int(a.layers)
    print(f"device: {a.device_name}, torch {torch.__version__}, transformers {a.tf_version}, dtype {a.dtype}")
    model, cfg, info = load_model(a.model, device, dtype, layers, a.experts_impl)
    if device.type == "cuda":
        print(f"GPU memory after load: {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB allocated, "
              f"{torch.cuda.mem_get_info(device)[0] / 2**30:.1f} GiB free")
    b = Bench(a, model, cfg, info, device)
    b.emit(dict(kind="load", status="ok", **info))
    # warm-up (CUDA context, kernels, allocator) outside every timed case
    with torch.no_grad():
        c = new_cache(model)
        prefill(model, c, b.ids(1, min(256, a.prefill_chunk)), a.prefill_chunk)
        model(input_ids=b.ids(1, 1), past_key_values=c, use_cache=True)
        del c
    free(device)
    proj_label = f"proj{b.full_depth}" if b.full_depth else "proj"
    print(f"transformers DeepseekV4ForCausalLM {a.dtype}, {cfg.num_hidden_layers} layers "
          f"(D {cfg.hidden_size}); '{proj_label}' = projected to {b.full_depth or '-'} layers")
    print(f"{'case':7} {'ctx/P':>6} {'batch':>5} {'ms':>10} {'per_layer':>10} {'tokens/s':>10} {proj_label:>12}")
    print(f"{'':7} {'':>6} {'':>5} {'(step|all)':>10} {'(us|ms)':>10} {'':>10} {'(ms|tok/s)':>12}")
    try:  # the first decode context, then prefill, then the longer contexts (most informative first)
        for ctx in a.contexts[:1]:
            b.run_decode_context(ctx, a.batches)
        for p in a.prefill:
            b.run_prefill(p)
        for ctx in a.contexts[1:]:
            b.run_decode_context(ctx, a.batches)
    except KeyboardInterrupt:
        print("interrupted; reporting what ran")
    ok = [r for r in b.results if r.get("status") == "ok" and r["kind"] != "load"]
    skipped = [r for r in b.results if r.get("status") == "skipped"]
    print(f"done in {time.perf_counter() - a.t_start:.0f} s: {len(ok)} cases ran, {len(skipped)} skipped"
          + (f"; JSON lines in {a.json}" if a.json else ""))
    if b.jsonf:
        b.jsonf.close()
    return 0 if ok else 1


# ---------------------------------------------------------------------------
# --check-logits
# ---------------------------------------------------------------------------


def first_topk_tie(scores_per_layer, rate, k):
    """First query position whose indexer top-k boundary is an exact tie (k-th and (k+1)-th largest
    causal scores equal, e.g. several all-heads-ReLU-zero entries): torch.topk's order among ties is
    unspecified, so an engine may select differently there and, through the window, after it."""
    first = None
    for sc in scores_per_layer:  # [S, T] per CSA layer, full prefill from position 0
        for t in range(sc.shape[0]):
            n = (t + 1) // rate
            if n > k:
                top = torch.topk(sc[t, :n], k + 1).values
                if top[k - 1] == top[k]:
                    first = t if first is None else min(first, t)
                    break
    return first


def check_main(a):
    import numpy as np
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hf

    scores = []
    scorer_forward = hf.DeepseekV4IndexerScorer.forward

    def recording_forward(self, q, kv, h):
        out = scorer_forward(self, q, kv, h)
        scores.append(out[0].detach().double().cpu())
        return out

    hf.DeepseekV4IndexerScorer.forward = recording_forward

    device = torch.device(a.device)
    dtype = _DTYPES[a.dtype]
    failures = 0
    rows = []
    for d in a.check_logits:
        name = os.path.basename(os.path.normpath(d))
        golden = os.path.exists(os.path.join(d, "golden_ids.json"))
        if golden:
            with open(os.path.join(d, "golden_ids.json")) as f:
                ids = json.load(f)
        model, cfg, info = load_model(d, device, dtype, experts_impl=a.experts_impl or "eager",
                                      log=lambda *_: None)
        if not golden:  # e.g. a synthetic checkpoint: random ids, long enough for windows and top-k to matter
            n_ids = max(64, 2 * cfg.sliding_window, 4 * cfg.index_topk + 8)
            ids = torch.randint(2, cfg.vocab_size, (n_ids,), generator=torch.Generator().manual_seed(1)).tolist()
        x = torch.tensor([ids], device=device)
        scores.clear()
        with torch.no_grad():
            full = model(input_ids=x, use_cache=False).logits[0].double().cpu().numpy()
        tie = first_topk_tie(list(scores), cfg.compress_rates["compressed_sparse_attention"], cfg.index_topk)
        scores.clear()
        cmp_len = tie if tie is not None else len(ids)  # compare the positions before a top-k tie
        scale = float(np.abs(full).max())
        row = dict(checkpoint=name, formats=info["formats"], tokens=len(ids), compared_tokens=cmp_len,
                   topk_tie_at=tie, max_abs_logit=scale)
        if golden:
            gold = np.load(os.path.join(d, "golden_logits.npy")).astype(np.float64)
            row["golden_max_abs"] = float(np.abs(full - gold)[:cmp_len].max())
        if a.megamoe:
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "logits.npy")
                subprocess.run([a.megamoe, "logits", "--model", d, "--ids", ",".join(map(str, ids)), "--out", out,
                                "--device", "cpu"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                eng = np.load(out).astype(np.float64)
            row["engine_max_abs"] = float(np.abs(full - eng)[:cmp_len].max())
            row["engine_argmax_agree"] = float((full.argmax(-1) == eng.argmax(-1))[:cmp_len].mean())
        # The bench's decode path: chunked prefill of n tokens, cache replicated to 2 sequences,
        # then one-token steps, against full prefill.
        n = max(1, cmp_len - 8)
        with torch.no_grad():
            cache = new_cache(model)
            prefill(model, cache, x[:, :n], max(1, n // 3))
            cache = replicate_cache(cache, 2)
            steps = []
            for t in range(n, cmp_len):
                o = model(input_ids=x[:, t:t + 1].repeat(2, 1), past_key_values=cache, use_cache=True).logits
                steps.append(o[:, -1].double().cpu().numpy())
        steps = np.stack(steps, 1)  # [2, 8, V]
        row["decode_max_abs"] = float(np.abs(steps - full[None, n:cmp_len]).max())
        tol = a.tolerance * max(scale, 1.0)
        bad = [k for k in ("golden_max_abs", "engine_max_abs", "decode_max_abs") if row.get(k, 0.0) > tol]
        row["ok"] = not bad
        failures += bool(bad)
        rows.append(row)
        print(f"{name:14} {str(info['formats']):40} T {cmp_len:3d}"
              + (f" (of {len(ids)}: indexer top-k tie at {tie})" if tie is not None else "")
              + f" max|logit| {scale:7.3f}"
              + (f"  vs golden {row['golden_max_abs']:.2e}" if golden else "  (no golden)")
              + (f"  vs megamoe cpu {row['engine_max_abs']:.2e} (argmax agree {row['engine_argmax_agree']:.3f})"
                 if a.megamoe else "")
              + f"  decode-vs-prefill {row['decode_max_abs']:.2e}  {'ok' if not bad else 'FAIL ' + ','.join(bad)}",
              flush=True)
        del model
        free(device)
    if a.json:
        with open(a.json, "w") as f:
            for r in rows:
                f.write(json.dumps(dict(r, dtype=a.dtype, device=a.device, torch=torch.__version__)) + "\n")
    print(f"check-logits ({a.dtype} on {a.device}, tolerance {a.tolerance:g} x max(|logit|, 1)): "
          f"{len(rows) - failures} passed, {failures} failed")
    return 1 if failures else 0


def probe_static_cache(a):
    from transformers import StaticCache

    cfg, _ = read_config(a.model)
    try:
        StaticCache(config=cfg, max_cache_len=64)
    except Exception as e:  # noqa: BLE001
        print(f"StaticCache for this model: {type(e).__name__}: {e}")
        return 0
    print("StaticCache constructed (unexpected for transformers 5.17)")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (config.json + *.safetensors)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--dtype", default=None, choices=sorted(_DTYPES),
                    help="bf16 for the bench (default), fp64 for --check-logits (default)")
    ap.add_argument("--layers", default=None, help="load the first N layers, or 'auto': as many as fit "
                    "(default: all the checkpoint has)")
    ap.add_argument("--reserve-gb", type=float, default=24.0, help="GPU memory kept free by --layers auto")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    ap.add_argument("--contexts", nargs="+", default=["1K", "16K", "64K"], help="decode contexts (tokens; 1K = 1024)")
    ap.add_argument("--prefill", nargs="+", default=["1K", "8K", "32K"], help="prefill lengths (tokens)")
    ap.add_argument("--prefill-chunk", type=int, default=2048, help="chunked-prefill size (halved on OOM)")
    ap.add_argument("--iters", type=int, default=5, help="timed decode steps per case (median)")
    ap.add_argument("--prefill-iters", type=int, default=3, help="timed prefills per length (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=0, help="total time budget from start (0 = none)")
    ap.add_argument("--json", help="write one JSON object per case (one per line)")
    ap.add_argument("--experts-impl", default=None, help="transformers experts implementation (grouped_mm, "
                    "batched_mm, eager; default: transformers' choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    ap.add_argument("--check-logits", nargs="+", metavar="DIR", help="compare logits on tiny checkpoints instead")
    ap.add_argument("--megamoe", help="megamoe binary for --check-logits (its CPU logits)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="--check-logits: max |diff| / max(|logit|, 1)")
    ap.add_argument("--probe-static-cache", action="store_true", help="try transformers' StaticCache and exit")
    ap.add_argument("--dry-run", action="store_true", help="map the checkpoint onto the model on the meta device "
                    "(names, shapes, formats; no data read) and exit")
    a = ap.parse_args()
    a.t_start = _T0
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.check_logits:
        a.dtype = a.dtype or "fp64"
        return check_main(a)
    if not a.model:
        ap.error("--model is required")
    if a.probe_static_cache:
        return probe_static_cache(a)
    a.dtype = a.dtype or "bf16"
    if a.dry_run:  # names, shapes and formats only: tensors stay on the meta device (no data read)
        _, cfg, info = load_model(a.model, torch.device("meta"), _DTYPES[a.dtype],
                                  None if a.layers in (None, "auto") else int(a.layers))
        print(f"dry run ok: {cfg.num_hidden_layers} layers {cfg.layer_types}, {info['param_bytes'] / 2**30:.1f} GiB "
              f"in {a.dtype}, {layer_bytes_bf16(cfg) / 2**30:.2f} GiB per layer (bf16)")
        return 0
    a.contexts = [parse_size(c) for c in a.contexts]
    a.prefill = [parse_size(p) for p in a.prefill]
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device (use --device cpu)")
    return bench_main(a)


if __name__ == "__main__":
    sys.exit(main())
