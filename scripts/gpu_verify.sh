#!/usr/bin/env bash
# On a GPU machine (from the repo root): build the CUDA backend, run every
# `gpu` test through CTest, then compute-sanitizer memcheck over the kernel
# tests and racecheck over the amax reduction. Logs go to $OUT. Exits non-zero
# when the build, any test or any sanitizer run fails, naming them last.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
failed=()
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/env.txt"
cmake -S . -B build-gpu -G Ninja -DMEGAMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DMEGAMOE_SERVER="$(pkg-config --exists cpp-httplib 2>/dev/null && echo ON || echo OFF)" > "$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j"$(nproc)" --target test_kernels megamoe >> "$OUT/build.log" 2>&1 ||
  { grep -E "error" "$OUT/build.log" | head -40; echo "FAILED: build"; exit 1; }
(cd build-gpu && ctest -L gpu --output-on-failure --no-tests=error --timeout 300) > "$OUT/ctest_gpu.log" 2>&1 ||
  failed+=("ctest -L gpu")
grep -E "tests passed|tests failed" "$OUT/ctest_gpu.log"
seed=$RANDOM  # again with fresh random inputs (tests/test_seed.hpp)
(cd build-gpu && MEGAMOE_TEST_SEED=$seed ctest -L gpu --output-on-failure --no-tests=error --timeout 300) > "$OUT/ctest_gpu_seed.log" 2>&1 ||
  failed+=("ctest -L gpu MEGAMOE_TEST_SEED=$seed")
grep -E "tests passed|tests failed" "$OUT/ctest_gpu_seed.log"
timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 ./build-gpu/tests/test_kernels \
  --gtest_filter="${MEMCHECK_FILTER:-GpuNvfp4ActQuant.*:GpuMoe.SmallNvfp4GemvAndWgmma:GpuMoe.HashRouting:GpuMoe.Mxfp4Weights:GpuMoe.Fp8SharedExpertE8m0AndF32Scales:GpuMoe.GraphCaptureReplayMatchesEager}" \
  > "$OUT/memcheck.log" 2>&1 || failed+=(memcheck)
tail -3 "$OUT/memcheck.log"
timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 ./build-gpu/tests/test_kernels \
  --gtest_filter='GpuNvfp4ActQuant.AmaxIsDeterministicAcrossRuns:GpuNvfp4ActQuant.RandomShapesBf16MatchHostBytes' \
  > "$OUT/racecheck.log" 2>&1 || failed+=(racecheck)
tail -3 "$OUT/racecheck.log"
if ((${#failed[@]})); then
  grep -E "^\s*[0-9]+ - .*\((Failed|Timeout|Exception)\)" "$OUT/ctest_gpu.log" "$OUT/ctest_gpu_seed.log" | tail -40
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all passed"
