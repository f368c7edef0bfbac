#!/usr/bin/env bash
# The main job on a fresh machine: build, then run megamoe on the tiny
# DeepSeek-V4 checkpoint shipped in tests/data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
BUILD_DIR=$build_dir bash "$root/scripts/build.sh" "$@"
"$build_dir/megamoe" version
