#!/usr/bin/env bash
# Builds megamoe and runs the whole test suite. GPU tests (label `gpu`) report
# themselves as skipped on a machine without a CUDA device.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
BUILD_DIR=$build_dir bash "$root/scripts/build.sh" "$@"
cd "$build_dir"
ctest --output-on-failure -j "${JOBS:-$(nproc)}" ${CTEST_ARGS:-}
