#!/usr/bin/env bash
# The main job on a fresh machine: build, describe the tiny DeepSeek-V4
# checkpoint shipped in tests/data, and generate tokens from it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
BUILD_DIR=$build_dir bash "$root/scripts/build.sh" "$@"
model=$root/tests/data/tiny-a-nvfp4
"$build_dir/megamoe" inspect "$model"
echo
echo "megamoe generate --model $model --ids 0,5,7 --max-new-tokens 16"
"$build_dir/megamoe" generate --model "$model" --ids 0,5,7 --max-new-tokens 16
echo
echo "megamoe generate --model tests/data/tiny-text --tokenizer tests/data/tiny-tokenizer/tokenizer.json --prompt 'Once upon a time'"
"$build_dir/megamoe" generate --model "$root/tests/data/tiny-text" \
  --tokenizer "$root/tests/data/tiny-tokenizer/tokenizer.json" --prompt "Once upon a time" --max-new-tokens 24 --ignore-eos
