#!/usr/bin/env bash
# Configures and builds megamoe into build/ (override with BUILD_DIR).
# Extra arguments go to CMake, e.g. -DMEGAMOE_CUDA=OFF.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} "$@" >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
