#!/usr/bin/env python3
"""Perplexity of the demo model (models/demo) on its held-out split with transformers' DeepseekV4ForCausalLM.

    python3 tools/eval_demo_transformers.py                     # first 8 windows -> tests/data/demo/eval_golden.json
    python3 tools/eval_demo_transformers.py --max-windows 0     # the whole test split: prints ppl (no golden written)

The evaluation protocol is tools/train_demo_model.py's (tokenize_docs and mean_nll, imported from there so the
two cannot drift): documents separated by a blank line, each BOS + ids + EOS in one stream (tokenized by the
`tokenizers` library); consecutive windows of --window tokens, each prefixed with BOS; the BOS position is not
scored and neither is the first token after it (logits[:, 1:-1] predict ids[:, 2:]), window - 1 scored tokens
per window. `megamoe eval` implements the same protocol (src/runtime/evaluate.hpp); tests/runtime/
test_demo_eval.cpp holds its per-window NLL sums to the ones written here.

The model runs in fp32 on the CPU (the BF16 checkpoint widened exactly), experts "eager". The golden holds the
window token ids (BOS first), the per-window NLL sums (in float64 from fp32 log-softmax), the overall mean NLL and
perplexity, the command and the versions. Nothing is downloaded.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import DeepseekV4ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_demo_model import DEMO, ROOT, read_split, tokenize_docs  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "data", "demo", "eval_golden.json")


def windows_of(stream, bos, window, max_windows):
    """mean_nll's windows: stream[j*W:(j+1)*W] after BOS, n = (len - 1) // W of them (all when max_windows is 0)."""
    n = (len(stream) - 1) // window
    if max_windows:
        n = min(n, max_windows)
    return [np.concatenate([[bos], stream[j * window:(j + 1) * window]]) for j in range(n)]


@torch.no_grad()
def window_nll_sums(model, rows, batch):
    """Per window: the sum over its scored positions of -log p(next token), in float64."""
    sums = []
    for i in range(0, len(rows), batch):
        ids = torch.from_numpy(np.stack(rows[i:i + batch]))
        logits = model(input_ids=ids, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, 1:-1], dim=-1).double()
        nll = -logp.gather(-1, ids[:, 2:].unsqueeze(-1)).squeeze(-1)
        sums += [float(s) for s in nll.sum(dim=1)]
        print(f"windows {min(i + batch, len(rows))}/{len(rows)}", file=sys.stderr, flush=True)
    return sums


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEMO)
    ap.add_argument("--tokenizer", default=os.path.join(DEMO, "tokenizer.json"))
    ap.add_argument("--corpus", default=os.path.join(DEMO, "corpus"))
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--max-windows", type=int, default=8, help="0: every window of the split")
    ap.add_argument("--batch", type=int, default=8, help="windows per forward")
    ap.add_argument("--out", default=None, help=f"golden to write (default {os.path.relpath(GOLDEN, ROOT)} when "
                                                "--max-windows > 0; nothing is written for the whole split)")
    ap.add_argument("--json", default=None, help="also write the summary (no ids) as JSON here")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    config = json.load(open(os.path.join(args.model, "config.json")))
    bos, eos = config["bos_token_id"], config["eos_token_id"]
    tok = Tokenizer.from_file(args.tokenizer)
    stream = tokenize_docs(tok, read_split(args.corpus, "test"), bos, eos)
    rows = windows_of(stream, bos, args.window, args.max_windows)
    assert rows, "the test split is shorter than one window"

    model = DeepseekV4ForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.set_experts_implementation("eager")
    model.eval()
    t0 = time.time()
    sums = window_nll_sums(model, rows, args.batch)
    scored = len(rows) * (args.window - 1)
    mean = sum(sums) / scored
    print(f"transformers {transformers.__version__} fp32 cpu: {len(rows)} windows of {args.window}, "
          f"{scored} tokens scored, mean nll {mean:.6f}, ppl {math.exp(mean):.4f} ({time.time() - t0:.0f} s)")

    summary = {
        "command": "python3 tools/eval_demo_transformers.py " + " ".join(sys.argv[1:]),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "model": os.path.relpath(os.path.abspath(args.model), ROOT),
        "dtype": "float32", "device": "cpu",
        "window": args.window, "windows": len(rows), "tokens_scored": scored,
        "test_stream_tokens": int(len(stream)),
        "mean_nll": mean, "ppl": math.exp(mean),
        "window_nll_sums": sums,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    out = args.out or (GOLDEN if args.max_windows else None)
    if out:
        golden = dict(summary, window_ids=[[int(t) for t in r] for r in rows])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(golden, f, indent=None, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
