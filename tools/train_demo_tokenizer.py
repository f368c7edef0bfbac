#!/usr/bin/env python3
"""Train the demo tokenizer (models/demo/tokenizer.json) on the demo corpus, and its goldens.

Byte-level BPE trained by Hugging Face `tokenizers` in DeepSeek-V4's tokenizer.json form: the normalizer,
pre-tokenizer (the three Split regexes + ByteLevel without regex), post-processor and decoder are copied from
the real DeepSeek-V4 tokenizer.json and checked equal after training. Layout like the real one: ids 0-2
BOS / EOS / pad (special), 3-258 the 256 ByteLevel byte characters, then the trained merges, then the other
added tokens of DeepSeek-V4 (every added token of the real file except the <｜place▁holder▁no▁N｜> ones), in
the real file's order and with its special / normalized flags, so the chat encoding works unchanged.

    python3 tools/train_demo_tokenizer.py "$(bash scripts/fetch_tokenizer.sh)"

Writes models/demo/tokenizer.json and tests/data/text/demo_tokenizer_goldens.json:
  heldout: the whole held-out split (models/demo/corpus/test.txt.xz) and its ids by `tokenizers`
           (no special tokens added), for `megamoe tokenize` (tests/text/test_demo_tokenizer.cpp)
  encode:  each held-out paragraph and a few special cases, text -> ids, for the in-process tokenizer
Deterministic: the trainer is single-threaded here (RAYON_NUM_THREADS=1 is set before import).
"""
import argparse
import json
import lzma
import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
from tokenizers import AddedToken, Tokenizer, pre_tokenizers, trainers  # noqa: E402

VOCAB_SIZE = 4096
SPECIAL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]
EXTRA_CASES = [
    "Once upon a time",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife.",
    " the  theory\n\nof 12345 things",
    "数字 123 and émigré 😀",
    "<｜User｜>Who is Mr. Darcy?<｜Assistant｜></think>He is a gentleman.<｜end▁of▁sentence｜>",
    "<｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜>",
]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def read_split(corpus, split):
    with lzma.open(os.path.join(corpus, f"{split}.txt.xz"), "rb") as f:
        return f.read().decode("utf-8")


def build(real, train_text):
    skeleton = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": real["normalizer"], "pre_tokenizer": real["pre_tokenizer"],
        "post_processor": real["post_processor"], "decoder": real["decoder"],
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {}, "merges": []},
    }
    extra = [t for t in real["added_tokens"] if t["content"] not in SPECIAL
             and "place▁holder" not in t["content"] and "place_holder" not in t["content"]]
    tok = Tokenizer.from_str(json.dumps(skeleton))
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(extra), special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_text.split("\n"), trainer)
    tok.add_tokens([AddedToken(t["content"], single_word=t["single_word"], lstrip=t["lstrip"], rstrip=t["rstrip"],
                               normalized=t["normalized"], special=t["special"]) for t in extra])
    out = json.loads(tok.to_str())
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert out[key] == real[key], f"{key} differs from the real tokenizer.json"
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE, tok.get_vocab_size(with_added_tokens=True)
    for i, t in enumerate(SPECIAL):
        assert tok.token_to_id(t) == i, t
    for i, t in enumerate(extra):
        assert tok.token_to_id(t["content"]) == VOCAB_SIZE - len(extra) + i, t
    by_content = {t["content"]: t for t in out["added_tokens"]}
    for t in real["added_tokens"]:
        if t["content"] in by_content:
            mine = by_content[t["content"]]
            assert all(mine[k] == t[k] for k in ("special", "normalized", "lstrip", "rstrip", "single_word")), t
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("real_tokenizer_json")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "models", "demo", "corpus"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "demo", "tokenizer.json"))
    ap.add_argument("--goldens", default=os.path.join(ROOT, "tests", "data", "text", "demo_tokenizer_goldens.json"))
    args = ap.parse_args()
    real = json.load(open(args.real_tokenizer_json, encoding="utf-8"))
    tok_json = build(real, read_split(args.corpus, "train"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(tok_json, f, ensure_ascii=False, separators=(",", ":"))
    tok = Tokenizer.from_file(args.out)  # goldens from the file as written

    heldout = read_split(args.corpus, "test")
    ids = tok.encode(heldout, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == heldout
    cases = []
    for text in [p for p in heldout.split("\n") if p][:60] + EXTRA_CASES:
        e = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(e, skip_special_tokens=False) == text
        cases.append({"text": text, "ids": e})
    goldens = {"tokenizers_version": tokenizers.__version__, "vocab_size": VOCAB_SIZE,
               "heldout": {"text": heldout, "ids": ids}, "encode": cases}
    with open(args.goldens, "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, separators=(",", ":"))
    print(f"vocab {VOCAB_SIZE}: held-out split {len(heldout)} chars -> {len(ids)} tokens "
          f"({len(heldout) / len(ids):.2f} chars/token); {len(cases)} encode cases")


if __name__ == "__main__":
    main()
