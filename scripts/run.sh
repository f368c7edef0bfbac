#!/usr/bin/env bash
# The main job on a fresh machine: build, quantize the demo DeepSeek-V4 (models/demo, trained on Jane
# Austen) to NVFP4 the way NVIDIA's checkpoints are made, and continue a prompt with it (cuda where a
# GPU is present, else cpu).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
BUILD_DIR=$build_dir bash "$root/scripts/build.sh" "$@"
demo=$root/models/demo
nvfp4=$build_dir/demo-nvfp4
if [[ ! -f $nvfp4/model.safetensors || $demo/model.safetensors -nt $nvfp4/model.safetensors ]]; then
  rm -rf "$nvfp4"
  echo "megamoe quantize --in models/demo --out $nvfp4 --format nvfp4 --calib-text models/demo/calibration.txt"
  "$build_dir/megamoe" quantize --in "$demo" --out "$nvfp4" --format nvfp4 --calib-text "$demo/calibration.txt" --quiet
fi
echo
echo "megamoe generate --model $nvfp4 --prompt 'Once upon a time' --max-new-tokens 64"
printf 'Once upon a time'  # generate prints the continuation only
"$build_dir/megamoe" generate --model "$nvfp4" --prompt "Once upon a time" \
  --max-new-tokens 64
echo
