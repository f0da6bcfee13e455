#!/usr/bin/env bash
# One-off: this tree against a07fe90 (2026-12-05) with and without PDL, decode tok/s at 32K.
set -uo pipefail
OUT=${OUT:-/tmp/ab4}
[ -x build-cuda/bin/elastic ] && [ -x .carry/base/build-cuda/bin/elastic ] || BASELINE=1 PDL=0 STEPS='build' OUT=$OUT timeout 300 bash scripts/device-decode-ab.sh
LOGS=$OUT; NAME=pdl; . scripts/device-lib.sh
EB=.carry/base/build-cuda/bin/elastic
dir=/tmp/qwen3-8b-random
qwen3_random_model "$dir"
note "| attention | build | decode tok/s | prefill tok/s | graph launches / replays / instantiations / updates |"
note "|---|---|---|---|---|"
row() {  # LABEL BIN ENV... -- ATTENTION ARGS
  local label=$1 bin=$2; shift 2
  local log="$LOGS/m-${label// /_}.log"
  env "$@" timeout 100 "$bin" bench model -m "$dir" --backend cuda -p 32768 -n 32 -r 3 --json --attention full > "$log" 2>&1
  bench_row "$log" "$label" "$?" attention | tee -a "$SUM"
}
row "baseline" "$EB" X=1
row "this tree" "$E" X=1
row "this tree ELASTIC_PDL=0" "$E" ELASTIC_PDL=0
row "baseline ELASTIC_PDL=0" "$EB" ELASTIC_PDL=0
row "this tree again" "$E" X=1
