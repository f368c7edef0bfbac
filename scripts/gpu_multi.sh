#!/usr/bin/env bash
# On a machine with 2 (or more) GPUs, from the repo root: the multi-GPU run of
# issue 13 (docs/parallel.md), in stages (STAGES="build test flash cli bench"):
#   build  CUDA build of megamoe and the gpu tests into build-gpu (NCCL from the CUDA toolkit)
#   test   the multi-GPU tests (2 GPUs vs 1 on the tiny checkpoints), the ranks-on-one-GPU tests
#          (host-staged, CudaRanksOneGpu* and GpuMoe.ExpertParallel*) and the CPU ranks' tests
#   flash  a FLASH_LAYERS-layer (default 2) V4-Flash-width synthetic checkpoint (NVFP4 experts),
#          2 GPUs vs 1 on it (logits, greedy tokens, graph decode with NCCL inside)
#   cli    `megamoe generate --devices 2` prints the ids of `--device cuda` (1 GPU), of
#          `--device cuda --ranks 2` (2 ranks on one GPU) and of `--device cpu --ranks 2` on tiny-a
#   bench  `bench decode` at batch 1, 8, 64, 128 and `bench prefill` with --devices 2 (and 1 for
#          comparison); the stage table's `comm` column is the per-step time of the layers'
#          all-reduces (divide by FLASH_LAYERS for the per-layer communication time, by 2 more
#          for one all-reduce); the logits all-gather is inside `head`
# Outputs land in $OUT. Exits non-zero if any stage fails, naming the failed stages last.
set -uo pipefail
OUT=${OUT:-/tmp/out}
STAGES=${STAGES:-build test flash cli bench}
BUILD=${BUILD_DIR:-build-gpu}
DEVICES=${DEVICES:-2}
FLASH_LAYERS=${FLASH_LAYERS:-2}
FLASH_DIR=${FLASH_DIR:-/tmp/megamoe-flash-${FLASH_LAYERS}l}
mkdir -p "$OUT"
failed=()
has() { [[ " $STAGES " == *" $1 "* ]]; }
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
nvidia-smi topo -m > "$OUT/topology.txt" 2>&1 || true
gpus=$(nvidia-smi -L | wc -l)
if ((gpus < DEVICES)); then echo "FAILED: $DEVICES GPUs needed, $gpus found"; exit 1; fi

if has build; then
  if cmake -S . -B "$BUILD" -G Ninja -DMEGAMOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release > "$OUT/build.log" 2>&1 &&
     cmake --build "$BUILD" -j"$(nproc)" --target test_kernels test_parallel megamoe >> "$OUT/build.log" 2>&1; then
    echo "build: ok"
  else
    grep -E "error|Error" "$OUT/build.log" | head -40
    echo "FAILED stages: build"; exit 1
  fi
fi

if has test; then
  NCCL_DEBUG=${NCCL_DEBUG:-WARN} timeout 420 "$BUILD/tests/test_kernels" --gtest_filter='MultiGpu.*' \
    > "$OUT/multi_gpu_tests.log" 2>&1
  rc=$?
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[ info \]|skipped" "$OUT/multi_gpu_tests.log" | tail -30
  # A skip here means the machine has fewer GPUs than the tests need: a failure of this run.
  if [[ $rc -ne 0 ]] || grep -q "^\[  SKIPPED \] MultiGpu.Tiny" "$OUT/multi_gpu_tests.log"; then
    grep -B2 -A12 "Failure$\|error:\|what()" "$OUT/multi_gpu_tests.log" | head -80; failed+=("test(rc=$rc)")
  fi
  timeout 420 "$BUILD/tests/test_kernels" --gtest_filter='*CudaRanksOneGpu*:GpuMoe.ExpertParallel*' \
    > "$OUT/ranks_one_gpu_tests.log" 2>&1 || failed+=(test-ranks-one-gpu)
  grep -E "^\[  (PASSED|FAILED) |^\[ info \].*ranks" "$OUT/ranks_one_gpu_tests.log" | tail -30
  timeout 420 "$BUILD/tests/test_parallel" > "$OUT/cpu_ranks_tests.log" 2>&1 || failed+=(test-cpu-ranks)
  grep -E "tests? ran|^\[  (PASSED|FAILED) " "$OUT/cpu_ranks_tests.log" | tail -5
fi

if has flash; then
  if [[ ! -f "$FLASH_DIR/config.json" ]]; then
    "$BUILD/megamoe" make-synthetic --out "$FLASH_DIR" --preset flash --layers "$FLASH_LAYERS" --experts nvfp4 \
      || failed+=(make-synthetic)
  fi
  MEGAMOE_FLASH_CHECKPOINT=$FLASH_DIR timeout 500 "$BUILD/tests/test_kernels" \
    --gtest_filter='MultiGpu.FlashWidthSynthetic*' > "$OUT/flash_multi.log" 2>&1 || failed+=(flash-multi)
  grep -E "^\[ info \]|OK|FAILED|SKIPPED|Failure|Expected|Which is" "$OUT/flash_multi.log" | head -20
  grep -q "^\[  SKIPPED \]" "$OUT/flash_multi.log" && failed+=(flash-multi-skipped)
fi

if has cli; then
  dir=tests/data/tiny-a
  ids=$(tr -d '[] \n' < "$dir/golden_ids.json" | cut -d, -f1-8)
  one=$("$BUILD/megamoe" generate --model "$dir" --ids "$ids" --max-new-tokens 32 --ignore-eos --device cuda 2>/dev/null)
  two=$("$BUILD/megamoe" generate --model "$dir" --ids "$ids" --max-new-tokens 32 --ignore-eos --devices "$DEVICES" 2>"$OUT/cli_devices.err")
  cpu=$("$BUILD/megamoe" generate --model "$dir" --ids "$ids" --max-new-tokens 32 --ignore-eos --device cpu --ranks 2 2>/dev/null)
  staged=$("$BUILD/megamoe" generate --model "$dir" --ids "$ids" --max-new-tokens 32 --ignore-eos --device cuda --ranks 2 2>/dev/null)
  echo "cli tiny-a: 1 GPU [$one] / $DEVICES GPUs [$two] / 2 ranks on 1 GPU [$staged] / cpu 2 ranks [$cpu]" | tee "$OUT/cli.log"
  if [[ -z "$one" || "$one" != "$two" || "$one" != "$cpu" || "$one" != "$staged" ]]; then
    tail -3 "$OUT/cli_devices.err"; failed+=(cli)
  fi
fi

if has bench; then
  [[ -f "$FLASH_DIR/config.json" ]] || "$BUILD/megamoe" make-synthetic --out "$FLASH_DIR" --preset flash \
    --layers "$FLASH_LAYERS" --experts nvfp4 || failed+=(make-synthetic)
  for n in 1 "$DEVICES"; do
    # shellcheck disable=SC2086  # lists
    timeout 400 "$BUILD/megamoe" bench decode --model "$FLASH_DIR" --devices "$n" --batches ${BATCHES:-1 8 64 128} \
      --contexts ${CONTEXTS:-1K} --profile-steps 5 2>&1 | tee "$OUT/bench_decode_${n}gpu.log" | grep -v "^.loading" \
      || failed+=("bench-decode-${n}gpu")
    # shellcheck disable=SC2086
    timeout 300 "$BUILD/megamoe" bench prefill --model "$FLASH_DIR" --devices "$n" --tokens ${PREFILL_TOKENS:-1K 8K} \
      2>&1 | tee "$OUT/bench_prefill_${n}gpu.log" | grep -v "^.loading" || failed+=("bench-prefill-${n}gpu")
  done
fi

if ((${#failed[@]})); then echo "FAILED stages: ${failed[*]}"; exit 1; fi
echo "all stages passed"
