#!/usr/bin/env bash
# Installs the Debian packages the CPU build, the tests and the fuzzers need. Idempotent and quick
# when everything is present (one dpkg query); runs apt-get only for what is missing.
set -euo pipefail
pkgs=(cmake make g++ pkg-config libpcre2-dev nlohmann-json3-dev libcli11-dev libopenblas-dev
      libgtest-dev libgmock-dev libbenchmark-dev libcairo2-dev clang libclang-rt-14-dev unzip python3-pip
      libcpp-httplib-dev python3-venv chromium-headless-shell)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The server's Python tests: the official openai client and a DevTools websocket for the browser
# test, pinned, in an ignored virtual environment (.venv) so the system Python stays untouched.
if ! .venv/bin/python -c 'import openai, websocket' 2>/dev/null; then
  echo "setup: creating .venv (openai, websocket-client)" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements-serve.txt
fi

# CUTLASS/CuTe headers for the Hopper prefill kernel (CUDA builds only; 6.4 MB wheel from PyPI).
if command -v "${CUDACXX:-nvcc}" >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  bash scripts/get-cutlass.sh
fi
