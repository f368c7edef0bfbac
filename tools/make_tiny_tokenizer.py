#!/usr/bin/env python3
"""Make tests/data/tiny-tokenizer: a 320-token tokenizer.json in the exact format of
DeepSeek-V4's (same normalizer, pre-tokenizer Split regexes + ByteLevel, decoder),
small enough for the tiny checkpoint tests/data/tiny-text (vocab_size 320), plus
goldens from Hugging Face `tokenizers` and transformers for `megamoe generate`.

    .venv-fixtures/bin/python tools/make_tiny_tokenizer.py "$(bash scripts/fetch_tokenizer.sh)"

Layout (like the real one): ids 0-2 BOS / EOS / pad (special), 3-258 the 256
ByteLevel byte characters, 259-313 BPE merges trained by `tokenizers` on a small
fixed corpus, 314-319 the non-special added tokens the chat encoding uses.

goldens.json:
  encode:   text -> ids by `tokenizers` (no special tokens added)
  generate: prompt text -> prompt ids (BOS + encode) -> transformers fp64 greedy
            ids from tests/data/tiny-text (EOS ignored) -> `tokenizers` decode of
            them; the smallest top-1/top-2 logit gap is recorded so a float32
            engine is known to make the same greedy choices.
"""
import argparse
import json
import os

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import AddedToken, Tokenizer, pre_tokenizers, trainers

VOCAB_SIZE = 320
SPECIAL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]
CHAT_TOKENS = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜", "<｜latest_reminder｜>"]
CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "The engine generates text from the tiny model, token by token.",
    "Once upon a time there was a tiny model that wrote the story of the world.",
    "def hello():\n    return 'hello world'\n",
    "There is the theory of the thing, and then there is the thing itself.",
] * 20
ENCODE_CASES = [
    "Hello world",
    "Once upon a time",
    " the  theory\n\nof 12345 things",
    "数字 123 and émigré 😀",
    "<｜User｜>hi<｜Assistant｜></think>",
    "<｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜>",
]
GENERATE_CASES = [("Once upon a time", 24), ("Hello world", 16)]


def build(real_json_path):
    real = json.load(open(real_json_path, encoding="utf-8"))
    skeleton = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": real["normalizer"], "pre_tokenizer": real["pre_tokenizer"],
        "post_processor": real["post_processor"], "decoder": real["decoder"],
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {}, "merges": []},
    }
    tok = Tokenizer.from_str(json.dumps(skeleton))
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(CHAT_TOKENS), special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens([AddedToken(t, normalized=True, special=False) for t in CHAT_TOKENS])
    out = json.loads(tok.to_str())
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert out[key] == real[key], f"{key} differs from the real tokenizer.json"
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE, tok.get_vocab_size()
    for i, t in enumerate(SPECIAL):
        assert tok.token_to_id(t) == i, t
    for i, t in enumerate(CHAT_TOKENS):
        assert tok.token_to_id(t) == VOCAB_SIZE - len(CHAT_TOKENS) + i, t
    assert len(out["model"]["vocab"]) == VOCAB_SIZE - len(CHAT_TOKENS)
    return tok, out


def greedy(model, ids, steps):
    ids = list(ids)
    out, min_gap = [], float("inf")
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].to(torch.float64)
            top = torch.topk(logits, 2)
            min_gap = min(min_gap, float(top.values[0] - top.values[1]))
            nxt = int(top.indices[0])
            out.append(nxt)
            ids.append(nxt)
    return out, min_gap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("real_tokenizer_json")
    data = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    ap.add_argument("--out", default=os.path.join(data, "tiny-tokenizer"))
    ap.add_argument("--model", default=os.path.join(data, "tiny-text"))
    args = ap.parse_args()
    torch.set_num_threads(2)

    tok, tok_json = build(args.real_tokenizer_json)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok_json, f, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_file(path)  # goldens from the file as written

    model = transformers.DeepseekV4ForCausalLM.from_pretrained(args.model, torch_dtype=torch.float64)
    model.set_experts_implementation("eager")
    model.eval()
    assert model.config.vocab_size == VOCAB_SIZE
    bos = model.config.bos_token_id
    assert bos == tok.token_to_id(SPECIAL[0])

    goldens = {"tokenizers_version": tokenizers.__version__, "transformers_version": transformers.__version__,
               "encode": [], "generate": []}
    for text in ENCODE_CASES:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
        goldens["encode"].append({"text": text, "ids": ids})
    for prompt, steps in GENERATE_CASES:
        prompt_ids = [bos] + tok.encode(prompt, add_special_tokens=False).ids
        ids, gap = greedy(model, prompt_ids, steps)
        assert gap > 1e-3, f"greedy choice too close to call for a float32 engine: gap {gap}"
        text = tok.decode(ids, skip_special_tokens=False)
        goldens["generate"].append({"prompt": prompt, "prompt_ids": prompt_ids, "ids": ids, "text": text,
                                    "min_top2_gap": gap})
        print(f"{prompt!r}: {ids} -> {text!r} (min gap {gap:.4f})")
    with open(os.path.join(args.out, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
