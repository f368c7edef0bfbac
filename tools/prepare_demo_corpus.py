#!/usr/bin/env python3
"""Prepare the demo corpus (models/demo/corpus/{train,test}.txt.xz) from Jane Austen's six novels.

Source: the Debian package r-cran-janeaustenr 1.0.0-1 (CRAN's janeaustenr by Julia Silge, MIT; the texts are
Project Gutenberg's editions of novels published 1811-1818, in the public domain). The package is not
installed (it would pull in R): its .deb is fetched with `apt-get download` into a cache, unpacked with
dpkg-deb, and the R lazy-load database data/Rdata.{rdx,rdb} is read by the small R-serialization reader
below (character vectors only, all this data needs). Python standard library only.

    python3 tools/prepare_demo_corpus.py [--deb path/to/r-cran-janeaustenr_1.0.0-1_all.deb]

Output (committed; the GPU machine reads the files, nothing is downloaded there):
  train.txt.xz  every novel except its last HOLDOUT fraction of paragraphs
  test.txt.xz   the held-out tail of each novel (continuous text, unseen in training)
  SOURCE.md     provenance, license, sizes and sha256 of the uncompressed splits
Paragraphs are the package's lines joined (one paragraph per line), documents separated by a blank line.
"""
import argparse
import glob
import gzip
import hashlib
import lzma
import os
import struct
import subprocess
import tempfile
import zlib

PACKAGE = "r-cran-janeaustenr"
VERSION = "1.0.0-1"
BOOKS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]
TITLES = {"sensesensibility": "Sense and Sensibility", "prideprejudice": "Pride and Prejudice",
          "mansfieldpark": "Mansfield Park", "emma": "Emma", "northangerabbey": "Northanger Abbey",
          "persuasion": "Persuasion"}
HOLDOUT = 0.05


class RReader:
    """Reader for R's XDR serialization format (version 2/3), enough for lists and character vectors."""

    def __init__(self, data):
        assert data[:2] == b"X\n", "not an XDR R serialization"
        self.d, self.p = data, 2
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader version
        if version == 3:
            n = self.int()  # native encoding name
            self.p += n
        self.refs = []

    def int(self):
        v = struct.unpack_from(">i", self.d, self.p)[0]
        self.p += 4
        return v

    def read(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
        if t == 254:  # NILVALUE
            return None
        if t == 255:  # REFSXP
            return self.refs[(flags >> 8) - 1]
        if t == 1:  # SYMSXP
            name = self.read()
            self.refs.append(name)
            return name
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.d[self.p:self.p + n].decode("utf-8")
            self.p += n
            return s
        if t == 2:  # LISTSXP (pairlist) -> dict/list of (tag, value)
            items = []
            while True:
                attr = self.read() if has_attr else None
                tag = self.read() if has_tag else None
                items.append((tag, self.read()))
                nxt = self.int()
                if (nxt & 0xFF) == 254:
                    break
                self.p -= 4
                flags = self.int()
                has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
                assert (flags & 0xFF) == 2
            return items
        if t in (16, 19):  # STRSXP, VECSXP
            n = self.int()
            v = [self.read() for _ in range(n)]
        elif t == 13 or t == 10:  # INTSXP, LGLSXP
            n = self.int()
            v = list(struct.unpack_from(f">{n}i", self.d, self.p))
            self.p += 4 * n
        elif t == 14:  # REALSXP
            n = self.int()
            v = list(struct.unpack_from(f">{n}d", self.d, self.p))
            self.p += 8 * n
        else:
            raise RuntimeError(f"unsupported R SEXP type {t}")
        if has_attr:
            attrs = dict(self.read())
            names = attrs.get("names")
            if names is not None and t == 19:
                return dict(zip(names, v))
        return v


def read_lazyload(prefix):
    index = RReader(gzip.decompress(open(prefix + ".rdx", "rb").read())).read()
    rdb = open(prefix + ".rdb", "rb").read()
    out = {}
    for name, (offset, length) in index["variables"].items():
        blob = rdb[int(offset):int(offset) + int(length)]
        out[name] = RReader(zlib.decompress(blob[4:])).read()
    return out


def fetch_deb(cache):
    os.makedirs(cache, exist_ok=True)
    debs = glob.glob(os.path.join(cache, f"{PACKAGE}_{VERSION}_all.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=cache, check=True)
        debs = glob.glob(os.path.join(cache, f"{PACKAGE}_{VERSION}_all.deb"))
    return debs[0]


def paragraphs(lines):
    """Join the wrapped lines of a novel into paragraphs (one per line)."""
    out, cur = [], []
    for line in lines:
        line = line.strip()
        if line:
            cur.append(line)
        elif cur:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap = argparse.ArgumentParser()
    ap.add_argument("--deb", help="the .deb (default: apt-get download into the cache)")
    ap.add_argument("--cache", default=os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                                    "megamoe", "debs"))
    ap.add_argument("--out", default=os.path.join(root, "models", "demo", "corpus"))
    args = ap.parse_args()
    deb = args.deb or fetch_deb(args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
        data = read_lazyload(os.path.join(tmp, "usr/lib/R/site-library/janeaustenr/data/Rdata"))
        copyright_text = open(os.path.join(tmp, "usr/share/doc", PACKAGE, "copyright"), encoding="utf-8").read()
    assert "License: MIT" in copyright_text
    train, test, rows = [], [], []
    for book in BOOKS:
        paras = paragraphs(data[book])
        cut = int(len(paras) * (1 - HOLDOUT))
        train.append("\n".join(paras[:cut]))
        test.append("\n".join(paras[cut:]))
        rows.append((TITLES[book], len(paras), cut, sum(map(len, paras[:cut])), sum(map(len, paras[cut:]))))
    os.makedirs(args.out, exist_ok=True)
    digests = {}
    for split, docs in (("train", train), ("test", test)):
        text = "\n\n".join(docs) + "\n"
        raw = text.encode("utf-8")
        digests[split] = (len(raw), hashlib.sha256(raw).hexdigest())
        with lzma.open(os.path.join(args.out, f"{split}.txt.xz"), "wb", preset=9) as f:
            f.write(raw)
    with open(os.path.join(args.out, "SOURCE.md"), "w", encoding="utf-8") as f:
        f.write("# Demo corpus\n\n"
                f"Jane Austen's six completed novels from the Debian package {PACKAGE} {VERSION} (CRAN package\n"
                "janeaustenr 1.0.0 by Julia Silge, MIT license; the texts are the Project Gutenberg editions of\n"
                "novels first published 1811-1818, in the public domain). Made by tools/prepare_demo_corpus.py.\n"
                "One paragraph per line; novels separated by a blank line, in the order below. test.txt.xz holds\n"
                f"the last {HOLDOUT:.0%} of each novel's paragraphs, train.txt.xz the rest.\n\n"
                "| novel | paragraphs | train paragraphs | train chars | test chars |\n|---|---|---|---|---|\n")
        for r in rows:
            f.write("| %s | %d | %d | %d | %d |\n" % r)
        f.write("\n| split | bytes (UTF-8) | sha256 |\n|---|---|---|\n")
        for split, (n, h) in digests.items():
            f.write(f"| {split} | {n} | {h} |\n")
    for split, (n, h) in digests.items():
        print(f"{split}: {n} bytes, sha256 {h}")


if __name__ == "__main__":
    main()
