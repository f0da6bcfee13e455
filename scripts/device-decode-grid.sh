#!/usr/bin/env bash
# Issue 12: where the decode attention's fixed cost per call goes. Times one layer of decode
# attention (32/8 heads, d 128, bf16 cache; full and fa-ssa Ω 0.75) with the grid capped at
# CTAS CTAs (ELASTIC_DECODE_CTAS; at most one CTA per KV head means no pair is cut, so no grid
# barrier and no merge), against the default one-wave grid. From the repository root, on a bare
# GPU machine (it builds only the elastic binary):
#   bash scripts/device-decode-grid.sh
# Environment: CTAS (default "8 16 32 66 132"), CTX (default 1024,8192,32768), OUT (logs).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/decode-grid-logs}
mkdir -p "$LOGS"
export LD_LIBRARY_PATH="/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread:/tmp/deps/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
t0=$SECONDS
steps="build"; [ -d /tmp/deps/usr ] || steps="deps build"
STEPS="$steps" BUILD_TARGET=elastic OUT="$LOGS/check" bash scripts/device-check.sh > "$LOGS/build.log" 2>&1 \
  || { echo "build failed (log $LOGS/build.log)"; tail -20 "$LOGS/build.log"; exit 1; }
echo "## decode grid $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); built in $((SECONDS - t0)) s"
for n in default ${CTAS:-8 16 32 66 132}; do
  if [ "$n" = default ]; then unset ELASTIC_DECODE_CTAS; else export ELASTIC_DECODE_CTAS=$n; fi
  echo "### CTAs: $n"
  build-cuda/bin/elastic bench attention --backend cuda --seq 1024 --reps 1 --config fa-ssa --msr 0,0.75 \
    --decode-ctx "${CTX:-1024,8192,32768}" 2>&1 | grep '^decode'
done
