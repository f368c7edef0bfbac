#!/usr/bin/env bash
# The FP4 quality report on the demo model (issue 12): perplexity on the held-out split
# (models/demo/corpus/test.txt.xz) of the BF16 model and of its NVFP4 (W4A16), NVFP4 W4A4, MXFP4 and FP8
# versions made by `megamoe quantize`, each with the mean KL divergence against BF16 and the top-1 agreement;
# plus transformers' BF16 perplexity by the same protocol when torch is installed.
#
#   bash scripts/demo_quality.sh [DEVICE]      DEVICE: cpu (default) or cuda; BUILD_DIR (default build)
#
# Prints a markdown table; the JSON of every run lands in $OUT (default /tmp/demo-quality).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
device=${1:-cpu}
build=${BUILD_DIR:-$root/build}
out=${OUT:-/tmp/demo-quality}
megamoe=$build/megamoe
demo=$root/models/demo
mkdir -p "$out"
xz -dc "$demo/corpus/test.txt.xz" > "$out/test.txt"

quantize() {  # NAME ARGS...: a quantized copy of the demo model in $out/NAME
  local name=$1
  shift
  rm -rf "${out:?}/$name"
  "$megamoe" quantize --in "$demo" --out "$out/$name" --quiet "$@" > /dev/null
}
quantize nvfp4 --format nvfp4 --calib-text "$demo/calibration.txt"
quantize mxfp4 --format mxfp4
quantize fp8 --format fp8 --dense-fp8

evaluate() {  # NAME DIR ARGS...: one line of the table
  local name=$1 dir=$2
  shift 2
  "$megamoe" eval --model "$dir" --reference "$demo" --tokenizer "$demo/tokenizer.json" --text "$out/test.txt" \
    --device "$device" --json "$out/$name.json" "$@" > "$out/$name.txt" 2> "$out/$name.err"
  python3 - "$name" "$out/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
def get(*keys):
    for k in keys:
        if k in d: return d[k]
    return float("nan")
print(f"| {sys.argv[1]} | {get('ppl', 'perplexity'):.3f} | {get('kl', 'mean_kl'):.5f} | {100 * get('top1', 'top1_agreement'):.2f}% | {get('tokens', 'tokens_scored')} |")
PY
}
echo "| megamoe ($device) | perplexity | mean KL vs BF16 (nats/token) | top-1 agreement | tokens scored |"
echo "|---|---:|---:|---:|---:|"
evaluate bf16 "$demo"
evaluate nvfp4-w4a16 "$out/nvfp4"
evaluate nvfp4-w4a4 "$out/nvfp4" --w4a4
evaluate mxfp4 "$out/mxfp4"
evaluate fp8-all-linear "$out/fp8"
if python3 -c "import torch, transformers" 2> /dev/null; then
  python3 "$root/tools/eval_demo_transformers.py" --max-windows 0 2>&1 | grep -i "ppl\|perplexity" | tail -1 | sed 's/^/transformers (fp32, cpu): /'
fi
