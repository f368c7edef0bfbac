#!/usr/bin/env bash
# On a GPU machine (from the repo root, no network; torch and transformers preinstalled): the torch
# peer of `megamoe bench decode|prefill` — transformers' DeepseekV4ForCausalLM in bf16 on a synthetic
# V4-Flash-width checkpoint (tools/bench_torch_dsv4.py).
#
#   scripts/gpu_torch_peer.sh DIR        DIR from `megamoe make-synthetic --preset flash --layers N`
#
# With MEGAMOE=path/to/megamoe and no DIR/config.json yet, DIR is made first
# (`make-synthetic --preset flash --layers ${MAKE_LAYERS:-8} --experts ${EXPERTS:-nvfp4}`, not timed).
#
# 1. check: the loader and dequantizer on the GPU, fp32, against the transformers goldens of the tiny
#    checkpoints (tests/data/tiny-*; also against `megamoe logits --device cpu` when MEGAMOE=path).
# 2. bench: decode (batch 1 8 32 64 128 x context 1K 16K 64K) and prefill (1K 8K 32K) with a total
#    budget of BUDGET seconds (default 150, model loading included), as many layers of DIR as fit in
#    bf16 (LAYERS=auto; about 12.3 GiB per Flash-width layer, RESERVE_GB kept for caches/activations).
# Writes $OUT/torch_peer.jsonl (one JSON object per case), $OUT/torch_peer.log, $OUT/torch_check.*;
# exits non-zero if a stage fails or no decode case ran. For a smoke run elsewhere: DEVICE=cpu and
# smaller BATCHES / CONTEXTS / PREFILL (e.g. on `megamoe make-synthetic --preset small`).
set -uo pipefail
DIR=${1:?usage: scripts/gpu_torch_peer.sh SYNTHETIC_CHECKPOINT_DIR}
OUT=${OUT:-/tmp/out}
BUDGET=${BUDGET:-150}
LAYERS=${LAYERS:-auto}
RESERVE_GB=${RESERVE_GB:-32}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BATCHES=${BATCHES:-1 8 32 64 128}
CONTEXTS=${CONTEXTS:-1K 16K 64K}
PREFILL=${PREFILL:-1K 8K 32K}
mkdir -p "$OUT"
failed=()
if [[ ! -f "$DIR/config.json" && -n "${MEGAMOE:-}" ]]; then
  "$MEGAMOE" make-synthetic --preset flash --layers "${MAKE_LAYERS:-8}" --experts "${EXPERTS:-nvfp4}" --out "$DIR" \
    || { echo "FAILED: make-synthetic"; exit 2; }
fi
[[ -f "$DIR/config.json" ]] || { echo "no $DIR/config.json"; exit 2; }
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, torch.cuda.get_device_name() if '$DEVICE' != 'cpu' else 'cpu')" \
  || { echo "FAILED: torch/transformers"; exit 2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [[ "${CHECK:-1}" == 1 ]]; then
  tiny=(tests/data/tiny-a tests/data/tiny-a-nvfp4 tests/data/tiny-a-mxfp4 tests/data/tiny-b-fp8)
  extra=()
  [[ -n "${MEGAMOE:-}" ]] && extra=(--megamoe "$MEGAMOE")
  timeout 300 "$PY" tools/bench_torch_dsv4.py --check-logits "${tiny[@]}" --device "$DEVICE" --dtype fp32 \
    --tolerance 1e-3 --json "$OUT/torch_check.jsonl" "${extra[@]}" 2>&1 | grep -v -i warn | tee "$OUT/torch_check.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || failed+=(check)
fi

# the hard limit leaves the script's own budget room to finish the case it is in and report
# shellcheck disable=SC2086  # BATCHES, CONTEXTS, PREFILL are lists
timeout $((BUDGET + 120)) "$PY" tools/bench_torch_dsv4.py --model "$DIR" --device "$DEVICE" --dtype bf16 \
  --layers "$LAYERS" --reserve-gb "$RESERVE_GB" --batches $BATCHES --contexts $CONTEXTS \
  --prefill $PREFILL --iters "${ITERS:-5}" --max-seconds "$BUDGET" --json "$OUT/torch_peer.jsonl" \
  2>&1 | grep -v -i "warn" | tee "$OUT/torch_peer.log"
rc=${PIPESTATUS[0]}
[[ $rc -eq 0 ]] || failed+=("bench(rc=$rc)")
if ! grep -q '"kind": "decode", "status": "ok"' "$OUT/torch_peer.jsonl" 2>/dev/null; then
  failed+=(no-decode-case)
fi

if ((${#failed[@]})); then echo "FAILED stages: ${failed[*]}"; exit 1; fi
echo "torch peer: all stages passed ($OUT/torch_peer.jsonl)"
