#!/usr/bin/env bash
# Issue 16: show that a planted GPU failure turns the GPU test script red. Copies the source tree to a scratch
# directory, applies one patch of tools/planted/ there (never to this tree), and runs scripts/gpu_model.sh's
# build and test stages on the copy. Exits 0 only if that run FAILED, as it must; 1 if it passed (the tests
# cannot see the planted bug) or the patch did not apply.
#
#   bash scripts/gpu_planted.sh [PATCH] [GTEST_FILTER]
#     defaults: tools/planted/gpu-w4a4-act-quant.patch  'GpuMoe.W4a4*'
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
patch=${1:-tools/planted/gpu-w4a4-act-quant.patch}
filter=${2:-GpuMoe.W4a4*}
OUT=${OUT:-/tmp/out}
scratch=${PLANTED_DIR:-/tmp/megamoe-planted}
rm -rf "$scratch" && mkdir -p "$scratch"
tar -C "$root" --exclude='./build*' --exclude='./.peers' --exclude='./.git' -cf - . | tar -C "$scratch" -xf -
if ! (cd "$scratch" && { git apply "$root/$patch" 2>/dev/null || patch -p1 < "$root/$patch"; }); then echo "planted: $patch does not apply"; exit 1; fi
echo "planted: $patch applied in $scratch; running its gpu tests ($filter), which must fail"
(cd "$scratch" && OUT="$OUT/planted" STAGES="build test" GTEST_FILTER="$filter" bash scripts/gpu_model.sh)
rc=$?
if [[ $rc -ne 0 ]]; then echo "planted: red as it must be (gpu_model.sh exit $rc)"; exit 0; fi
echo "planted: gpu_model.sh exited 0 with $patch applied: the tests did not catch it"; exit 1
