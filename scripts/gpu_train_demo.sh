#!/usr/bin/env bash
# On a GPU machine (from the repo root, no network; torch and transformers preinstalled): trains the demo
# DeepSeek-V4 (tools/train_demo_model.py) on the committed corpus and tokenizer (models/demo/) and writes
# the checkpoint to $OUT/demo (config.json, model.safetensors, train_log.json) plus $OUT/train_demo.log.
#
#   OUT=/tmp/out scripts/gpu_train_demo.sh        MAX_SECONDS (default 530) is the training budget;
#                                                 evaluation and saving take a few seconds more.
# With MEGAMOE=path/to/megamoe also runs `megamoe generate` on the result ($OUT/generate.txt).
# Exits non-zero when training fails, or the result is missing or over the 12 MB budget.
set -uo pipefail
OUT=${OUT:-/tmp/out}
PY=${PYTHON:-python3}
MAX_SECONDS=${MAX_SECONDS:-530}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, transformers, tokenizers, safetensors; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, \
torch.cuda.get_device_name() if '$DEVICE' != 'cpu' else 'cpu')" || { echo "FAILED: python packages"; exit 2; }
timeout $((${MAX_SECONDS%.*} + 50)) "$PY" tools/train_demo_model.py --out "$OUT/demo" --device "$DEVICE" \
  --max-seconds "$MAX_SECONDS" "$@" 2>&1 | grep -v -i "warn" | tee "$OUT/train_demo.log"
rc=${PIPESTATUS[0]}
[[ $rc -eq 0 ]] || { echo "FAILED: train_demo_model.py rc=$rc"; exit 1; }
for f in config.json model.safetensors train_log.json; do
  [[ -s $OUT/demo/$f ]] || { echo "FAILED: no $OUT/demo/$f"; exit 1; }
done
bytes=$(($(stat -c %s "$OUT/demo/model.safetensors") + $(stat -c %s models/demo/tokenizer.json)))
((bytes <= 12 * 1024 * 1024)) || { echo "FAILED: model + tokenizer $bytes bytes > 12 MB"; exit 1; }
if [[ -n "${MEGAMOE:-}" ]]; then  # optional: the engine continues the prompt from the new checkpoint
  "$MEGAMOE" generate --model "$OUT/demo" --tokenizer models/demo/tokenizer.json --device cpu \
    --prompt "Once upon a time" --max-new-tokens 48 | tee "$OUT/generate.txt" || { echo "FAILED: megamoe generate"; exit 1; }
fi
echo "OK: $OUT/demo, model + tokenizer $bytes bytes"
