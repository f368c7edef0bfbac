#!/usr/bin/env python3
"""Make the tiny random DeepSeek-V4 checkpoints and their transformers goldens.

Run with the golden venv (torch + transformers 5.17 with DeepseekV4ForCausalLM,
nvidia-modelopt for the NVFP4 variant):

    .venv-fixtures/bin/python tools/make_tiny_models.py [--out tests/data]

For each config it writes tests/data/<name>/{config.json, model.safetensors,
golden_ids.json, golden_logits.npy}. Every parameter is randomised following
dsv4-architecture.md §12 (HF init leaves biases/sinks at 0 and scales at 1,
which hides bugs). Goldens are transformers' fp64 full-prefill logits
(eager experts), stored as float32 [T, V].

Quantized variants (all keys in DeepSeek's upstream naming and an
upstream-style config.json, as the released checkpoints are):
  tiny-a-nvfp4 : routed experts NVFP4 in ModelOpt's layout (U8 weight, E4M3
                 weight_scale per 16, F32 weight_scale_2 shared by w1/w3,
                 input_scale), quantized with modelopt's NVFP4QTensor.
  tiny-a-mxfp4 : routed experts MXFP4 (I8 packed [out, in/2] + E8M0 .scale per
                 32) and attention/shared-expert projections FP8 E4M3 with E8M0
                 .scale per 128x128 block.
  tiny-b-fp8   : Flash-Base style: attention, shared and routed experts FP8
                 E4M3 with F32 .scale per 128x128 block (q_b_proj spans two
                 row tiles).
Other matrices of the variants are BF16; hc_*, norms, biases, sinks F32.
Their goldens are transformers run on the dequantized weights.
"""
import argparse
import copy
import json
import math
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

YARN = {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 65536,
        "beta_fast": 32, "beta_slow": 1}

CONFIGS = {
    # dsv4-architecture.md §12, verbatim.
    "tiny-a": dict(
        vocab_size=128, hidden_size=64, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, partial_rotary_factor=0.25,
        q_lora_rank=32, o_groups=2, o_lora_rank=16,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=32,
        routed_scaling_factor=1.5, scoring_func="sqrtsoftplus", swiglu_limit=10.0,
        sliding_window=8, index_n_heads=8, index_head_dim=16, index_topk=3,
        hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6,
        rope_theta=10000.0, compress_rope_theta=160000.0,
        rope_scaling=dict(YARN), max_position_embeddings=1048576,
        layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                     "compressed_sparse_attention", "heavily_compressed_attention"],
        mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe", "moe"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
        num_nextn_predict_layers=0, tie_word_embeddings=False),
    # Other dims (head_dim 40, 6 heads in 3 groups, hc_mult 3), HCA first, two SWA
    # layers, HCA rate 16, indexer top-5, 1 hash layer, top-3 of 6 experts, a YaRN
    # table whose interpolation matters at these positions (original 32, factor 4).
    "tiny-b": dict(
        vocab_size=200, hidden_size=48, num_hidden_layers=6,
        num_attention_heads=6, num_key_value_heads=1, head_dim=40, partial_rotary_factor=0.2,
        q_lora_rank=24, o_groups=3, o_lora_rank=12,
        n_routed_experts=6, n_shared_experts=1, num_experts_per_tok=3, moe_intermediate_size=24,
        routed_scaling_factor=2.5, scoring_func="sqrtsoftplus", swiglu_limit=7.0,
        sliding_window=16, index_n_heads=8, index_head_dim=24, index_topk=5,
        hc_mult=3, hc_sinkhorn_iters=7, hc_eps=1e-6, rms_norm_eps=1e-6,
        rope_theta=5000.0, compress_rope_theta=40000.0,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                      "beta_fast": 32, "beta_slow": 1},
        max_position_embeddings=128,
        layer_types=["heavily_compressed_attention", "compressed_sparse_attention", "sliding_attention",
                     "heavily_compressed_attention", "compressed_sparse_attention", "sliding_attention"],
        mlp_layer_types=["hash_moe", "moe", "moe", "moe", "moe", "moe"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
        num_nextn_predict_layers=0, tie_word_embeddings=False),
    # Small: 2 heads in one group, CSA twice in a row, HCA rate 6, indexer top-2,
    # 3 hash layers out of 4, top-3 of 4 experts, window 5.
    "tiny-c": dict(
        vocab_size=160, hidden_size=32, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, partial_rotary_factor=0.25,
        q_lora_rank=16, o_groups=1, o_lora_rank=24,
        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=3, moe_intermediate_size=16,
        routed_scaling_factor=1.0, scoring_func="sqrtsoftplus", swiglu_limit=10.0,
        sliding_window=5, index_n_heads=8, index_head_dim=8, index_topk=2,
        hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6,
        rope_theta=10000.0, compress_rope_theta=160000.0,
        rope_scaling=dict(YARN), max_position_embeddings=1048576,
        layer_types=["compressed_sparse_attention", "compressed_sparse_attention",
                     "heavily_compressed_attention", "sliding_attention"],
        mlp_layer_types=["hash_moe", "hash_moe", "hash_moe", "moe"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 6},
        num_nextn_predict_layers=0, tie_word_embeddings=False),
}
# tiny-c's shape with the 320-token vocabulary of tests/data/tiny-tokenizer
# (tools/make_tiny_tokenizer.py), for text-in/text-out tests of `megamoe generate`.
CONFIGS["tiny-text"] = dict(CONFIGS["tiny-c"], vocab_size=320)
SEQ_LEN = {"tiny-a": 48, "tiny-b": 100, "tiny-c": 64, "tiny-text": 32}
SEEDS = {"tiny-a": 1, "tiny-b": 2, "tiny-c": 3, "tiny-text": 4}
# Storage of the base checkpoints: "mixed" = weight matrices BF16, mHC parameters, norms, sinks,
# biases F32 (like the released checkpoints); "bf16" = every float tensor BF16. BF16 keeps tests/data
# small; the model is first rounded to the stored values, so the golden is exact for them.
STORAGE = {"tiny-a": "mixed", "tiny-b": "bf16", "tiny-c": "bf16", "tiny-text": "bf16"}


def storage_dtype(name, param_name, tensor):
    if STORAGE[name] == "bf16":
        return torch.bfloat16
    matrix = tensor.dim() >= 2 and not any(h in param_name for h in ("_hc.", "hc_head."))
    return torch.bfloat16 if matrix else torch.float32

# ---------------------------------------------------------------------------
# Randomisation (§12 recommended protocol)
# ---------------------------------------------------------------------------


def randomise(model, cfg, gen):
    d = cfg.hidden_size
    nc = cfg.hc_mult

    def n(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64)

    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            leaf = name.split(".")[-1]
            if "experts.gate_up_proj" in name or "experts.down_proj" in name:
                v = 6.0 * n(shape) / math.sqrt(shape[-1])
            elif name.endswith("norm.weight"):
                v = 1.0 + 0.2 * n(shape)
            elif leaf == "sinks":
                v = n(shape)
            elif leaf == "position_bias":
                v = 0.5 * n(shape)
            elif leaf == "e_score_correction_bias":
                v = 0.1 * n(shape)
            elif leaf in ("scale", "hc_scale"):
                v = 1.0 + 0.3 * n(shape)
            elif leaf in ("base", "hc_base"):
                v = 0.3 * n(shape)
            elif leaf in ("fn", "hc_fn"):
                v = 2.0 * n(shape) / math.sqrt(nc * d)
            elif "embed_tokens" in name:
                v = n(shape)
            elif leaf == "weight" and p.dim() == 2:
                v = n(shape) / math.sqrt(shape[-1])
            else:
                raise RuntimeError(f"no randomisation rule for {name} {tuple(shape)}")
            p.copy_(v.to(p.dtype))
        for name, b in model.named_buffers():
            if name.endswith("tid2eid"):
                rows = [torch.randperm(cfg.n_routed_experts, generator=gen)[: cfg.num_experts_per_tok]
                        for _ in range(b.shape[0])]
                b.copy_(torch.stack(rows).to(b.dtype))


def make_ids(vocab, length, gen):
    return torch.randint(0, vocab, (length,), generator=gen).tolist()


def hf_logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0].to(torch.float64).numpy()


def build_model(cfg_kwargs):
    cfg = DeepseekV4Config(**copy.deepcopy(cfg_kwargs))  # transformers edits nested dicts in place
    model = DeepseekV4ForCausalLM(cfg)
    model.set_experts_implementation("eager")
    model.double().eval()
    return cfg, model


def persistent_state(model):
    """The state dict as transformers saves it (non-persistent buffers excluded)."""
    sd = model.state_dict()
    non_persistent = set()
    for mod_name, mod in model.named_modules():
        for b in getattr(mod, "_non_persistent_buffers_set", ()):
            non_persistent.add(f"{mod_name}.{b}" if mod_name else b)
    return {k: v for k, v in sd.items() if k not in non_persistent}


def write_goldens(out_dir, ids, logits):
    with open(os.path.join(out_dir, "golden_ids.json"), "w") as f:
        json.dump(ids, f)
    np.save(os.path.join(out_dir, "golden_logits.npy"), logits.astype(np.float32))


# ---------------------------------------------------------------------------
# Upstream (DeepSeek) naming, config and quantizers
# ---------------------------------------------------------------------------

_ATTN_RENAMES = [  # HF suffix after "self_attn." -> upstream suffix after "attn."
    ("compressor.indexer.scorer.weights_proj.", "indexer.weights_proj."),
    ("compressor.indexer.q_b_proj.", "indexer.wq_b."),
    ("compressor.indexer.kv_proj.", "indexer.compressor.wkv."),
    ("compressor.indexer.gate_proj.", "indexer.compressor.wgate."),
    ("compressor.indexer.position_bias", "indexer.compressor.ape"),
    ("compressor.indexer.kv_norm.", "indexer.compressor.norm."),
    ("compressor.kv_proj.", "compressor.wkv."),
    ("compressor.gate_proj.", "compressor.wgate."),
    ("compressor.position_bias", "compressor.ape"),
    ("compressor.kv_norm.", "compressor.norm."),
    ("q_a_proj.", "wq_a."), ("q_a_norm.", "q_norm."), ("q_b_proj.", "wq_b."),
    ("kv_proj.", "wkv."), ("kv_norm.", "kv_norm."), ("o_a_proj.", "wo_a."), ("o_b_proj.", "wo_b."),
    ("sinks", "attn_sink"),
]


def upstream_name(hf):
    """Inverse of transformers' conversion mapping (dsv4-architecture.md §3.3), non-expert keys."""
    fixed = {"model.embed_tokens.weight": "embed.weight", "lm_head.weight": "head.weight",
             "model.norm.weight": "norm.weight", "model.hc_head.hc_fn": "hc_head_fn",
             "model.hc_head.hc_base": "hc_head_base", "model.hc_head.hc_scale": "hc_head_scale"}
    if hf in fixed:
        return fixed[hf]
    assert hf.startswith("model.layers."), hf
    parts = hf[len("model."):].split(".", 2)  # layers, L, rest
    head, rest = f"layers.{parts[1]}.", parts[2]
    if rest.startswith("self_attn."):
        sub = rest[len("self_attn."):]
        for a, b in _ATTN_RENAMES:
            if sub.startswith(a):
                return head + "attn." + b + sub[len(a):]
        raise RuntimeError(f"unmapped attention key {hf}")
    if rest.startswith("mlp."):
        sub = rest[len("mlp."):]
        sub = sub.replace("gate.e_score_correction_bias", "gate.bias")
        sub = sub.replace("shared_experts.gate_proj.", "shared_experts.w1.")
        sub = sub.replace("shared_experts.up_proj.", "shared_experts.w3.")
        sub = sub.replace("shared_experts.down_proj.", "shared_experts.w2.")
        return head + "ffn." + sub
    for site in ("attn_hc", "ffn_hc"):
        if rest.startswith(site + "."):
            return head + "hc_" + site.split("_")[0] + "_" + rest[len(site) + 1:]
    if rest == "input_layernorm.weight":
        return head + "attn_norm.weight"
    if rest == "post_attention_layernorm.weight":
        return head + "ffn_norm.weight"
    raise RuntimeError(f"unmapped key {hf}")


def upstream_config(c, extra_quant):
    """config.json in DeepSeek's upstream form (compress_ratios, num_hash_layers, ...)."""
    ratio = {"sliding_attention": 0, "compressed_sparse_attention": 4, "heavily_compressed_attention": 128}
    n_hash = sum(1 for t in c["mlp_layer_types"] if t == "hash_moe")
    assert c["mlp_layer_types"] == ["hash_moe"] * n_hash + ["moe"] * (len(c["mlp_layer_types"]) - n_hash)
    keys = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "n_routed_experts", "n_shared_experts",
            "num_experts_per_tok", "moe_intermediate_size", "routed_scaling_factor", "scoring_func",
            "swiglu_limit", "sliding_window", "index_n_heads", "index_head_dim", "index_topk", "hc_mult",
            "hc_sinkhorn_iters", "hc_eps", "rms_norm_eps", "rope_theta", "compress_rope_theta",
            "rope_scaling", "max_position_embeddings", "num_nextn_predict_layers", "tie_word_embeddings"]
    out = {k: c[k] for k in keys}
    out.update(model_type="deepseek_v4", architectures=["DeepseekV4ForCausalLM"],
               compress_ratios=[ratio[t] for t in c["layer_types"]],
               compress_rate_hca=c["compress_rates"]["heavily_compressed_attention"],
               num_hash_layers=n_hash, qk_rope_head_dim=int(round(c["head_dim"] * c["partial_rotary_factor"])),
               topk_method="noaux_tc", norm_topk_prob=True, hidden_act="silu",
               bos_token_id=0, eos_token_id=1, torch_dtype="bfloat16")
    out.update(extra_quant)
    return out


E2M1_VALUES = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6],
                           dtype=torch.float64)


def unpack_e2m1(packed):
    p = packed.to(torch.int64) & 0xFF
    codes = torch.stack([p & 0xF, p >> 4], dim=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)
    return E2M1_VALUES[codes]


def quantize_nvfp4_pair(w1, w3, w2):
    """ModelOpt NVFP4 for one expert; w1/w3 share weight_scale_2 (joint amax)."""
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor
    out = {}
    joint_s2 = NVFP4QTensor.get_weights_scaling_factor_2(torch.cat([w1, w3], 0).float())
    for tag, w, s2 in (("w1", w1, joint_s2), ("w3", w3, joint_s2), ("w2", w2, None)):
        qt, scale, s2_out = NVFP4QTensor.quantize(w.float(), 16, weights_scaling_factor_2=s2)
        packed = qt._quantized_data.to(torch.uint8)
        deq = (unpack_e2m1(packed) * (scale.to(torch.float32) * s2_out.float()).double()
               .repeat_interleave(16, dim=-1))
        # Cross-check against ModelOpt's own dequantizer (fp32 op order).
        ref = qt.dequantize(dtype=torch.float32, scale=scale, double_scale=s2_out, block_sizes={-1: 16})
        assert torch.equal(deq.float(), ref.float()), "NVFP4 dequant mismatch vs modelopt"
        out[tag] = dict(weight=packed, weight_scale=scale.contiguous(),
                        weight_scale_2=s2_out.float().reshape(()),
                        deq=deq)
    return out


def quantize_mxfp4(w):
    """OCP MXFP4: per 32 inputs a power-of-two E8M0 scale 2^(floor(log2 amax) - 2), RNE E2M1 codes."""
    w = w.double()
    blocks = w.reshape(w.shape[0], -1, 32)
    amax = blocks.abs().amax(-1)
    exp = torch.where(amax > 0, torch.floor(torch.log2(amax)) - 2, torch.full_like(amax, -127))
    scale = torch.pow(2.0, exp)
    y = blocks / scale.unsqueeze(-1)
    grid = E2M1_VALUES[:8]
    # RNE onto the grid: nearest value, ties to the even code.
    dist = (y.abs().unsqueeze(-1) - grid).abs()
    best = dist.min(-1, keepdim=True).values
    cand = (dist == best)
    even = cand & (torch.arange(8) % 2 == 0)
    code = torch.where(even.any(-1), even.float().argmax(-1), cand.float().argmax(-1))
    code = code + 8 * (y < 0).long()
    code = code.reshape(w.shape)
    packed = (code[:, 0::2] | (code[:, 1::2] << 4)).to(torch.uint8).view(torch.int8)
    e8m0 = (exp + 127).to(torch.uint8).view(torch.float8_e8m0fnu)
    deq = unpack_e2m1(packed.view(torch.uint8)) * scale.repeat_interleave(32, dim=-1)
    return packed, e8m0, deq


def quantize_fp8_block(w, e8m0_scales=True):
    """DeepSeek FP8: E4M3 weight, one scale per 128x128 tile. e8m0_scales: power-of-two (UE8M0) scales as in
    the FP4-expert releases; otherwise F32 scales amax/448 as in Flash-Base. Returns (values, scales, the fp32
    dequantized weight as an fp32 engine computes it)."""
    w = w.double()
    out_dim, in_dim = w.shape
    tiles_o, tiles_i = -(-out_dim // 128), -(-in_dim // 128)
    scales = torch.empty(tiles_o, tiles_i, dtype=torch.float32)
    q = torch.empty_like(w, dtype=torch.float8_e4m3fn)
    deq = torch.empty_like(w)
    for a in range(tiles_o):
        for b in range(tiles_i):
            rows, cols = slice(a * 128, (a + 1) * 128), slice(b * 128, (b + 1) * 128)
            tile = w[rows, cols]
            amax = float(tile.abs().max())
            if e8m0_scales:
                s = 2.0 ** (math.ceil(math.log2(amax / 448.0)) if amax > 0 else 0)
            else:
                s = float(torch.tensor(amax / 448.0 if amax > 0 else 1.0, dtype=torch.float32))
            qt = (tile / s).to(torch.float8_e4m3fn)
            q[rows, cols] = qt
            deq[rows, cols] = (qt.float() * torch.tensor(s, dtype=torch.float32)).double()
            scales[a, b] = s
    if e8m0_scales:
        stored = (torch.log2(scales).round() + 127).to(torch.uint8).view(torch.float8_e8m0fnu)
    else:
        stored = scales
    return q, stored, deq


def split_experts(sd, cfg):
    """Yield (layer, expert, w1, w3, w2) from the stacked HF expert tensors."""
    inter = cfg.moe_intermediate_size
    for layer in range(cfg.num_hidden_layers):
        gu = sd[f"model.layers.{layer}.mlp.experts.gate_up_proj"]
        dn = sd[f"model.layers.{layer}.mlp.experts.down_proj"]
        for e in range(cfg.n_routed_experts):
            yield layer, e, gu[e, :inter], gu[e, inter:], dn[e]


def make_quant_variant(kind, base_dir, out_dir, cfg_kwargs, cfg, model, ids):
    sd = {k: v.clone() for k, v in persistent_state(model).items()}
    tensors = {}
    inter = cfg.moe_intermediate_size
    fp8_targets = ("q_a_proj.weight", "q_b_proj.weight", "kv_proj.weight", "o_a_proj.weight",
                   "o_b_proj.weight", "shared_experts.gate_proj.weight", "shared_experts.up_proj.weight",
                   "shared_experts.down_proj.weight")
    for layer, e, w1, w3, w2 in split_experts(sd, cfg):
        pre = f"layers.{layer}.ffn.experts.{e}."
        if kind == "nvfp4":
            q = quantize_nvfp4_pair(w1, w3, w2)
            for tag in ("w1", "w3", "w2"):
                for field in ("weight", "weight_scale", "weight_scale_2"):
                    tensors[pre + f"{tag}.{field}"] = q[tag][field]
                # Static activation scale: not used by a W4A16 engine, present as in ModelOpt exports.
                tensors[pre + f"{tag}.input_scale"] = torch.tensor(4.0 / 2688.0, dtype=torch.float32)
            deq = {t: q[t]["deq"] for t in q}
        elif kind == "mxfp4":
            deq = {}
            for tag, w in (("w1", w1), ("w3", w3), ("w2", w2)):
                packed, scale, dq = quantize_mxfp4(w)
                tensors[pre + f"{tag}.weight"] = packed
                tensors[pre + f"{tag}.scale"] = scale
                deq[tag] = dq
        else:  # fp8: Flash-Base style FP8 experts with F32 block scales
            deq = {}
            for tag, w in (("w1", w1), ("w3", w3), ("w2", w2)):
                q, scale, dq = quantize_fp8_block(w, e8m0_scales=False)
                tensors[pre + f"{tag}.weight"] = q
                tensors[pre + f"{tag}.scale"] = scale
                deq[tag] = dq
        sd[f"model.layers.{layer}.mlp.experts.gate_up_proj"][e, :inter] = deq["w1"]
        sd[f"model.layers.{layer}.mlp.experts.gate_up_proj"][e, inter:] = deq["w3"]
        sd[f"model.layers.{layer}.mlp.experts.down_proj"][e] = deq["w2"]
    for k, v in sd.items():
        if k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj"):
            continue
        up = upstream_name(k)
        if kind in ("mxfp4", "fp8") and ".self_attn.compressor." not in k and k.endswith(fp8_targets):
            q, scale, dq = quantize_fp8_block(v, e8m0_scales=(kind == "mxfp4"))
            tensors[up] = q
            tensors[up[: -len("weight")] + "scale"] = scale
            sd[k] = dq
        elif v.dim() == 2 and v.dtype == torch.float64 and "hc" not in up:
            # Remaining matrices (embed, head, router, compressor, indexer weights_proj) in BF16.
            b = v.to(torch.bfloat16)
            tensors[up] = b
            sd[k] = b.double()
        elif v.dtype == torch.float64:
            tensors[up] = v.float()
            sd[k] = v.float().double()
        else:
            tensors[up] = v
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, os.path.join(out_dir, "model.safetensors"))
    if kind == "nvfp4":
        quant = {"quantization_config": {
            "quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "scale_fmt": "ue8m0",
            "weight_block_size": [128, 128], "moe_quant_algo": "NVFP4", "quant_algo": "MIXED_PRECISION",
            "kv_cache_quant_algo": None, "group_size": 16,
            "producer": {"name": "modelopt", "version": "dsv4-nvfp4-experts"},
            "ignore": ["*.attn.*", "*.ffn.shared_experts.*", "head", "mtp.*"]},
            "expert_dtype": "fp4"}
    elif kind == "mxfp4":
        quant = {"quantization_config": {
            "quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "scale_fmt": "ue8m0",
            "weight_block_size": [128, 128]}, "expert_dtype": "fp4"}
    else:
        quant = {"quantization_config": {
            "quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
            "weight_block_size": [128, 128]}, "expert_dtype": "fp8"}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(upstream_config(cfg_kwargs, quant), f, indent=2)
    # Goldens: transformers on the dequantized weights.
    model.load_state_dict(sd, strict=True)
    logits = hf_logits(model, ids)
    write_goldens(out_dir, ids, logits)
    return logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name, kwargs in CONFIGS.items():
        gen = torch.Generator().manual_seed(SEEDS[name])
        cfg, model = build_model(kwargs)
        randomise(model, cfg, gen)
        # Make the model exactly the values the checkpoint stores.
        with torch.no_grad():
            for pname, p in model.named_parameters():
                p.copy_(p.to(storage_dtype(name, pname, p)).double())
        ids = make_ids(cfg.vocab_size, SEQ_LEN[name], gen)
        out_dir = os.path.join(args.out, name)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        # transformers' own state-dict names (save_pretrained would write a half-upstream
        # naming through its reverse conversion mapping).
        os.makedirs(out_dir)
        cfg.save_pretrained(out_dir)
        state = {k: (v.to(storage_dtype(name, k, v)) if v.is_floating_point() else v).contiguous().clone()
                 for k, v in persistent_state(model).items()}
        save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        # Golden from the checkpoint as transformers itself reloads it (round-trip check).
        reloaded = DeepseekV4ForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float64)
        reloaded.set_experts_implementation("eager")
        reloaded.eval()
        logits = hf_logits(reloaded, ids)
        direct = hf_logits(model, ids)
        assert np.allclose(logits, direct, atol=1e-9), "save/reload changed the model"
        for extra in ("generation_config.json",):
            p = os.path.join(out_dir, extra)
            if os.path.exists(p):
                os.remove(p)
        write_goldens(out_dir, ids, logits)
        print(f"{name}: T={len(ids)} max|logit|={np.abs(logits).max():.3f}")
        if name == "tiny-a":
            base_state = {k: v.clone() for k, v in model.state_dict().items()}
            for kind in ("nvfp4", "mxfp4"):
                model.load_state_dict(base_state, strict=True)
                q_logits = make_quant_variant(kind, out_dir, os.path.join(args.out, f"tiny-a-{kind}"),
                                              kwargs, cfg, model, ids)
                print(f"tiny-a-{kind}: max|logit|={np.abs(q_logits).max():.3f} "
                      f"max|diff vs base|={np.abs(q_logits - logits).max():.3f}")
        if name == "tiny-b":
            q_logits = make_quant_variant("fp8", out_dir, os.path.join(args.out, "tiny-b-fp8"), kwargs, cfg, model,
                                          ids)
            print(f"tiny-b-fp8: max|logit|={np.abs(q_logits).max():.3f} "
                  f"max|diff vs base|={np.abs(q_logits - logits).max():.3f}")


if __name__ == "__main__":
    main()
