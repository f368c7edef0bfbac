#!/usr/bin/env bash
# The one device script of issue 5 (run on the GPU machine from the repo root):
# build with CUDA into build-gpu/, run the gpu MoE tests, compute-sanitizer on
# a small subset, the C++ bench and the torch bf16 peer. Logs go to $OUT.
# Stages: STAGES="build test sanitize bench torch" (default all). FRESH=1: clean build.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
STAGES=${STAGES:-"build test sanitize bench torch"}
BENCH_ARGS=${BENCH_ARGS:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
has() { [[ " $STAGES " == *" $1 "* ]]; }
failed=()
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv; git rev-parse HEAD 2>/dev/null; date -u; } | tee "$OUT/env.txt"
if has build; then
  # Copied sources may carry older mtimes than objects left by an earlier call: FRESH=1 rebuilds from scratch.
  [ "${FRESH:-0}" = 1 ] && rm -rf build-gpu
  cmake -S . -B build-gpu -G Ninja -DMEGAMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DMEGAMOE_SERVER="$(pkg-config --exists cpp-httplib 2>/dev/null && echo ON || echo OFF)" > "$OUT/build.log" 2>&1 &&
    cmake --build build-gpu -j16 --target test_kernels megamoe >> "$OUT/build.log" 2>&1
  rc=$?; echo "build rc=$rc"; if [ $rc -ne 0 ]; then grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; fi
fi
if has test; then
  timeout ${TEST_TIMEOUT:-300} ./build-gpu/tests/test_kernels --gtest_filter="${TEST_FILTER:-GpuMoe.*:*Device*}" > "$OUT/test.log" 2>&1 ||
    failed+=(test)
  grep -E "^\[  (FAILED|PASSED|  OK) |Failure|Expected|Which is|actual|relative" "$OUT/test.log" | tail -60
fi
if has sanitize; then
  timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool memcheck --error-exitcode 9 ./build-gpu/tests/test_kernels \
    --gtest_filter="${SANITIZE_FILTER:-GpuMoe.SmallNvfp4GemvAndWgmma:GpuMoe.HashRouting:GpuMoe.BadTid2eidSetsErrorFlag:GpuMoe.Mxfp4Weights:GpuMoe.EveryTokenSameExperts:GpuMoe.GraphCaptureReplayMatchesEager:GpuMoe.W4a4DynamicScales}" \
    > "$OUT/sanitizer.log" 2>&1 || failed+=(sanitize)
  tail -5 "$OUT/sanitizer.log"
fi
if has bench; then
  timeout ${BENCH_TIMEOUT:-300} ./build-gpu/megamoe bench moe $BENCH_ARGS 2>&1 | tee "$OUT/bench.log" || failed+=(bench)
fi
if has torch; then
  PYTHONUNBUFFERED=1 timeout ${TORCH_TIMEOUT:-240} python3 tools/bench_torch_moe.py ${TORCH_ARGS:-} 2>&1 | tee "$OUT/torch.log" ||
    failed+=(torch)
fi
if ((${#failed[@]})); then
  grep -E "^\[  FAILED  \]" "$OUT/test.log" 2>/dev/null | tail -40
  echo "FAILED stages: ${failed[*]}"
  exit 1
fi
