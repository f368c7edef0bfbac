#!/usr/bin/env python3
"""Train the demo DeepSeek-V4 (models/demo) on the demo corpus with transformers' DeepseekV4ForCausalLM.

    python3 tools/train_demo_model.py --out DIR [--max-seconds 540] [--device cuda|cpu]

A small config that exercises every part of the architecture: SWA, CSA (with the lightning indexer pruning:
index_topk < the number of compressed entries) and HCA layers, hash-routed and learned MoE layers, 8 routed
experts (top-2) + the shared expert, mHC with 4 streams and 20 Sinkhorn iterations, plain RoPE on the SWA
layers and YaRN on the compressed ones. BF16 it is ~9.6 MB (+ the 0.16 MB tokenizer), under the 12 MB cap.

Training (all settings below, seeded): random windows of SEQ_LEN tokens of the tokenized train split, each
starting with BOS (the engine's prompts start with BOS); AdamW, linear warmup then cosine decay to 10% over the
time budget (the schedule runs on elapsed time / --max-seconds, so a shorter budget is a shorter schedule); bf16
autocast on cuda (fp32 master weights), fp32 on cpu. The learned routers' e_score_correction_bias (a buffer, no
gradient) is updated as DeepSeek's auxiliary-loss-free balancing does: after each step, bias += BIAS_RATE *
sign(mean load - expert load). Hash layers' tid2eid: seeded random distinct experts per token id.
Every EVAL_EVERY steps the loss on a validation tail of the train split (VAL_FRACTION, not the test split) is
measured; the weights saved are the best of those and the final ones (a guard against over-fitting the
~0.9M-token corpus, whose epochs a 540 s H200 run may repeat many times).

Writes to --out: config.json + model.safetensors (transformers' own key names, every float tensor BF16, as
tests/data/tiny-text; src/core/key_names.cpp maps upstream names onto these), and train_log.json (settings,
loss curve, held-out perplexity of the saved BF16 weights, a greedy sample). Nothing is downloaded.
"""
import argparse
import copy
import json
import lzma
import math
import os
import random
import time

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEMO = os.path.join(ROOT, "models", "demo")

CONFIG = dict(
    vocab_size=4096, hidden_size=192, num_hidden_layers=6,
    num_attention_heads=4, num_key_value_heads=1, head_dim=64, partial_rotary_factor=0.25,  # d_r = 16
    q_lora_rank=96, o_groups=2, o_lora_rank=96,
    n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=64,
    routed_scaling_factor=1.5, scoring_func="sqrtsoftplus", swiglu_limit=10.0,
    sliding_window=64, index_n_heads=8, index_head_dim=32, index_topk=16,
    hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6,
    rope_theta=10000.0, compress_rope_theta=160000.0,
    # YaRN on the compressed layers: factor 4 over an original context of 256 (HF takes the factor as
    # max_position_embeddings / original_max_position_embeddings).
    rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                  "beta_fast": 32, "beta_slow": 1},
    max_position_embeddings=1024,
    layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                 "compressed_sparse_attention", "heavily_compressed_attention", "sliding_attention"],
    mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe", "moe", "moe"],
    compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
    num_nextn_predict_layers=0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)

SEED = 1234
SEQ_LEN = 256           # tokens per window after BOS: 64 CSA entries > index_topk 16, 16 HCA entries
BATCH = 32
LR = 3e-3
MIN_LR_FRACTION = 0.1
WARMUP_STEPS = 200
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0
BIAS_RATE = 1e-3
EVAL_EVERY = 500        # steps between val evaluations (64 windows of the val tail); the best is kept
VAL_FRACTION = 0.01     # tail of the train stream held back for the loss curve (the test split stays unseen)
BYTES_LIMIT = 12 * 1024 * 1024


def read_split(corpus, split):
    with lzma.open(os.path.join(corpus, f"{split}.txt.xz"), "rb") as f:
        return f.read().decode("utf-8")


def tokenize_docs(tok, text, bos, eos):
    """Novels are separated by a blank line; each becomes BOS + ids + EOS in one stream."""
    out = []
    for doc in text.split("\n\n"):
        if doc.strip():
            out += [bos] + tok.encode(doc, add_special_tokens=False).ids + [eos]
    return np.array(out, dtype=np.int64)


def build_model(seed):
    cfg = DeepseekV4Config(**copy.deepcopy(CONFIG))
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("tid2eid"):
                rows = [torch.randperm(cfg.n_routed_experts, generator=gen)[: cfg.num_experts_per_tok]
                        for _ in range(b.shape[0])]
                b.copy_(torch.stack(rows).to(b.dtype))
    return cfg, model


def persistent_state(model):
    sd = model.state_dict()
    non_persistent = set()
    for mod_name, mod in model.named_modules():
        for b in getattr(mod, "_non_persistent_buffers_set", ()):
            non_persistent.add(f"{mod_name}.{b}" if mod_name else b)
    return {k: v for k, v in sd.items() if k not in non_persistent}


def lr_at(step, frac):
    if step < WARMUP_STEPS:
        return LR * (step + 1) / WARMUP_STEPS
    frac = min(max(frac, 0.0), 1.0)
    return LR * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * frac)))


def batch_from(stream, rng, bos, batch, seq_len):
    starts = rng.integers(0, len(stream) - seq_len, size=batch)
    rows = np.stack([stream[s:s + seq_len] for s in starts])
    return torch.from_numpy(np.concatenate([np.full((batch, 1), bos), rows], axis=1))


@torch.no_grad()
def mean_nll(model, stream, bos, seq_len, device, autocast, max_windows=None):
    """Mean next-token NLL over consecutive windows of the stream, each prefixed with BOS (BOS not scored)."""
    model.eval()
    total, count = 0.0, 0
    n = (len(stream) - 1) // seq_len
    if max_windows:
        n = min(n, max_windows)
    for i in range(0, n, 8):
        rows = [np.concatenate([[bos], stream[j * seq_len:(j + 1) * seq_len]]) for j in range(i, min(n, i + 8))]
        ids = torch.from_numpy(np.stack(rows)).to(device)
        with autocast():
            logits = model(input_ids=ids, use_cache=False).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, 1:-1].reshape(-1, logits.shape[-1]),
                                                ids[:, 2:].reshape(-1), reduction="sum")
        total += float(nll)
        count += ids[:, 2:].numel()
    model.train()
    return total / max(count, 1)


@torch.no_grad()
def greedy(model, tok, prompt, bos, steps, device):
    model.eval()
    ids = [bos] + tok.encode(prompt, add_special_tokens=False).ids
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1]
        ids.append(int(logits.argmax()))
    model.train()
    return tok.decode(ids[1:], skip_special_tokens=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-seconds", type=float, default=540.0, help="training time budget (eval/save extra)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--corpus", default=os.path.join(DEMO, "corpus"))
    ap.add_argument("--tokenizer", default=os.path.join(DEMO, "tokenizer.json"))
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--experts", default=None, help="experts implementation (default grouped_mm on cuda, "
                                                     "eager on cpu)")
    ap.add_argument("--eval-every", type=int, default=EVAL_EVERY, help="steps between val evaluations "
                    "(a multiple of the 50-step log interval)")
    ap.add_argument("--eval-windows", type=int, default=None, help="cap the held-out windows (smoke runs)")
    args = ap.parse_args()
    t_start = time.time()
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tok = Tokenizer.from_file(args.tokenizer)
    assert tok.get_vocab_size(with_added_tokens=True) == CONFIG["vocab_size"]
    bos, eos = CONFIG["bos_token_id"], CONFIG["eos_token_id"]
    assert tok.token_to_id("<｜begin▁of▁sentence｜>") == bos and tok.token_to_id("<｜end▁of▁sentence｜>") == eos
    train_all = tokenize_docs(tok, read_split(args.corpus, "train"), bos, eos)
    n_val = int(len(train_all) * VAL_FRACTION)
    train, val = train_all[:-n_val], train_all[-n_val:]
    test = tokenize_docs(tok, read_split(args.corpus, "test"), bos, eos)
    print(f"tokens: train {len(train)}, val {len(val)}, test {len(test)}", flush=True)

    cfg, model = build_model(SEED)
    n_params = sum(p.numel() for p in persistent_state(model).values() if p.is_floating_point())
    print(f"params {n_params} ({2 * n_params / 1e6:.2f} MB in BF16)", flush=True)
    assert 2 * n_params + os.path.getsize(args.tokenizer) <= BYTES_LIMIT, "model + tokenizer over 12 MB"
    experts = args.experts or ("grouped_mm" if device.type == "cuda" else "eager")
    model.to(device).train()
    if device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        import contextlib

        def autocast():
            return contextlib.nullcontext()
    # A forward + backward with the chosen experts implementation; eager (always works) if it fails.
    model.set_experts_implementation(experts)
    try:
        probe = batch_from(train, np.random.default_rng(0), bos, 2, SEQ_LEN).to(device)
        with autocast():
            model(input_ids=probe, labels=probe, use_cache=False).loss.backward()
    except Exception as e:  # noqa: BLE001
        if experts == "eager":
            raise
        print(f"experts implementation {experts} failed ({type(e).__name__}: {e}); using eager", flush=True)
        experts = "eager"
        model.set_experts_implementation(experts)
    model.zero_grad(set_to_none=True)

    # Aux-loss-free balancing: record the learned routers' choices.
    loads = {}

    def hook(mod, _inp, out):
        if mod.training:
            loads[mod] = torch.bincount(out[2].reshape(-1), minlength=mod.num_experts)

    routers = [m for m in model.modules() if type(m).__name__ == "DeepseekV4TopKRouter"]
    for r in routers:
        r.register_forward_hook(hook)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "hc" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "hc" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS,
                            fused=device.type == "cuda")
    rng = np.random.default_rng(SEED)
    log, step = [], 0
    best = (float("inf"), -1, None)  # (val loss, step, state): the saved weights are the best on val
    t_train = time.time()
    while True:
        elapsed = time.time() - t_train
        if elapsed >= args.max_seconds:
            break
        lr = lr_at(step, elapsed / args.max_seconds)
        for g in opt.param_groups:
            g["lr"] = lr
        ids = batch_from(train, rng, bos, args.batch, SEQ_LEN).to(device)
        with autocast():
            out = model(input_ids=ids, labels=ids, use_cache=False)
        loss = out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        with torch.no_grad():
            for r, cnt in loads.items():
                r.e_score_correction_bias += BIAS_RATE * torch.sign(cnt.float().mean() - cnt.float())
        loads.clear()
        if step % 50 == 0:
            entry = {"step": step, "seconds": round(time.time() - t_train, 1), "lr": lr, "loss": loss.item(),
                     "grad_norm": gnorm.item()}
            if not math.isfinite(entry["loss"]):
                raise RuntimeError(f"non-finite loss at step {step}")
            if step % args.eval_every == 0 and step > 0:
                entry["val_loss"] = mean_nll(model, val, bos, SEQ_LEN, device, autocast,
                                             max_windows=min(64, args.eval_windows or 64))
                if entry["val_loss"] < best[0]:
                    best = (entry["val_loss"], step,
                            {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            log.append(entry)
            print(json.dumps(entry), flush=True)
        step += 1
    train_seconds = time.time() - t_train
    final_val = mean_nll(model, val, bos, SEQ_LEN, device, autocast, max_windows=min(64, args.eval_windows or 64))
    log.append({"step": step, "seconds": round(train_seconds, 1), "val_loss": final_val})
    print(json.dumps(log[-1]), flush=True)
    if best[2] is not None and best[0] < final_val:
        print(f"keeping step {best[1]} (val loss {best[0]:.4f} < final {final_val:.4f})", flush=True)
        model.load_state_dict(best[2])
        kept_step = best[1]
    else:
        kept_step = step

    # Round to the stored BF16 values, then evaluate exactly what is saved.
    model.float()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        for r in routers:
            r.e_score_correction_bias.copy_(r.e_score_correction_bias.to(torch.bfloat16).float())
    test_nll = mean_nll(model, test, bos, SEQ_LEN, device, autocast, max_windows=args.eval_windows)
    val_nll = mean_nll(model, val, bos, SEQ_LEN, device, autocast, max_windows=args.eval_windows)
    sample = greedy(model, tok, "Once upon a time", bos, 48, device)
    print(f"steps {step} in {train_seconds:.0f}s; val ppl {math.exp(val_nll):.2f}, test ppl {math.exp(test_nll):.2f}")
    print(f"sample: {sample!r}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    model.cpu()
    cfg.save_pretrained(args.out)
    gen_cfg = os.path.join(args.out, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous().clone()
             for k, v in persistent_state(model).items()}
    save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    settings = {k: v for k, v in globals().items() if k.isupper() and isinstance(v, (int, float, tuple))}
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"settings": settings, "args": vars(args), "device": str(device), "experts_implementation": experts,
                   "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                   "params": n_params, "safetensors_bytes": size, "steps": step, "kept_step": kept_step,
                   "train_seconds": train_seconds,
                   "tokens_seen": step * args.batch * SEQ_LEN, "val_ppl": math.exp(val_nll),
                   "test_ppl": math.exp(test_nll), "test_tokens_scored": None if args.eval_windows else len(test),
                   "sample_once_upon_a_time": sample, "log": log, "wall_seconds": time.time() - t_start}, f, indent=1)
    print(f"wrote {args.out}: model.safetensors {size} bytes", flush=True)


if __name__ == "__main__":
    main()
