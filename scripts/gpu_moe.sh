#!/usr/bin/env bash
# The one device script of issue 5 (run on the GPU machine from the repo root):
# build with CUDA into build-gpu/, run the gpu MoE tests, compute-sanitizer on
# a small subset, the C++ bench and the torch bf16 peer. Logs go to $OUT.
# Stages: STAGES="build test sanitize bench torch" (default), plus on request:
#   routing_ab  `bench moe` ($AB_ARGS) with the multi-block routing and again with MEGAMOE_MOE_ROUTING=single
#   gemv_ab     `bench moe` ($GEMV_AB_ARGS) per MEGAMOE_MOE_GEMV in $GEMV_AB_VARIANTS (auto stream split)
#   ncu         Nsight Compute on the GEMM kernels of one `bench moe` ($NCU_BENCH_ARGS), key sections only
# FRESH=1: clean build.
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
if has routing_ab; then
  AB_ARGS=${AB_ARGS:---shapes flash pro --tokens 64 256 1024 4096 --stage-tokens 64 256 1024 4096 --routings uniform --iters 10}
  for routing in multi single; do
    echo "== routing: $routing"
    # shellcheck disable=SC2086  # an argument list
    MEGAMOE_MOE_ROUTING=$routing timeout ${BENCH_TIMEOUT:-300} ./build-gpu/megamoe bench moe $AB_ARGS 2>&1 |
      tee "$OUT/bench_routing_$routing.log" || failed+=("routing_ab:$routing")
  done
fi
if has gemv_ab; then
  GEMV_AB_ARGS=${GEMV_AB_ARGS:---shapes flash pro --tokens 16 64 256 --stage-tokens 16 64 256 --routings uniform skewed --iters 10}
  for variant in ${GEMV_AB_VARIANTS:-auto stream split}; do
    echo "== tc-gemv variant: $variant"
    # shellcheck disable=SC2086  # an argument list
    MEGAMOE_MOE_GEMV=$variant timeout ${BENCH_TIMEOUT:-300} ./build-gpu/megamoe bench moe $GEMV_AB_ARGS 2>&1 |
      tee "$OUT/bench_gemv_$variant.log" || failed+=("gemv_ab:$variant")
  done
fi
if has ncu; then
  NCU_BENCH_ARGS=${NCU_BENCH_ARGS:---shapes flash --tokens 256 4096 --routings uniform --iters 1 --stage-tokens 0}
  # shellcheck disable=SC2086
  timeout ${NCU_TIMEOUT:-200} ncu --clock-control none -k "regex:moe_tc_gemv|moe_wgmma" --launch-count ${NCU_LAUNCHES:-8} \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
    ./build-gpu/megamoe bench moe $NCU_BENCH_ARGS > "$OUT/ncu.log" 2>&1 || failed+=(ncu)
  grep -E "moe_|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued|Issued Warp" "$OUT/ncu.log" | head -120
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
