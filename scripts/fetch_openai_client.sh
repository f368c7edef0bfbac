#!/usr/bin/env bash
# Installs the official `openai` Python client (pinned) into a cache folder and
# prints that folder; tests/server/openai_client_test.py imports it from there
# through MEGAMOE_OPENAI_SITE:
#   export MEGAMOE_OPENAI_SITE=$(bash scripts/fetch_openai_client.sh)
# Works offline once fetched. Override the cache with MEGAMOE_CACHE_DIR.
set -euo pipefail
version=3.51.0
site=${MEGAMOE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/megamoe}/openai-$version
if [[ ! -f $site/.complete ]]; then
  rm -rf "$site"
  mkdir -p "$site"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --target "$site" \
    "openai==$version" >&2
  touch "$site/.complete"
fi
echo "$site"
