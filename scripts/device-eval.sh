#!/usr/bin/env bash
# First results of issue 5 on the GPU machine (after scripts/device-check.sh built build-cuda):
# SmolLM2 at 1K-8K, every RULER task and the robust family, N samples per task and length, for
# full, ssa, xa and the static retrieval-head baseline at Ω 0.5 and 0.75. Results (JSON per mode,
# the merged Markdown table and the plot) go to $RES (default /tmp/eval-results); a log line per
# step goes to $RES/progress.log. Streaming window: sink 64, local 512 (the paper's 128/2048 is
# sized for 64K-128K; at 1K-2K it would cover every pair).
set -uo pipefail
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH="/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread:/tmp/deps/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_WAIT_POLICY=PASSIVE
RES=${RES:-/tmp/eval-results}
M=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
N=${SAMPLES:-20}
L=${LENGTHS:-1024,2048,4096,8192}
E=build-cuda/bin/elastic
W="--sink 64 --local 512"
mkdir -p "$RES"
log() { echo "$(date +%T) $*" >> "$RES/progress.log"; }
t0=$SECONDS
MODES=${MODES:-"full ssa xa static-0.5 static-0.75"}
if [ -n "${RETRIEVAL:-}" ]; then  # scores from an earlier run
  cp "$RETRIEVAL" "$RES/retrieval-scores.json"
else
  log "retrieval scores: $N NIAH samples at 2048 tokens (CPU reference decode)"
  "$E" inspect -m "$M" --retrieval-scores "$RES/retrieval-scores.json" --samples "$N" --length 2048 2>>"$RES/stderr.log" || log "retrieval scores FAILED"
fi
run_mode() {  # name, attention flags...
  local name=$1; shift
  log "ruler $name"
  "$E" eval ruler -m "$M" --backend cuda --tasks all --lengths "$L" --samples "$N" --seed 0 "$@" $W --json \
      > "$RES/ruler-$name.json" 2>>"$RES/stderr.log" || log "ruler $name FAILED"
  log "robust $name"
  "$E" eval robust -m "$M" --backend cuda --lengths "$L" --samples "$N" --seed 0 "$@" $W --json \
      > "$RES/robust-$name.json" 2>>"$RES/stderr.log" || log "robust $name FAILED"
}
for m in $MODES; do
  case $m in
    full|ssa|xa) run_mode "$m" --attention "$m" ;;
    static-*) run_mode "$m" --attention "static:$RES/retrieval-scores.json" --msr "${m#static-}" ;;
  esac
done
"$E" eval report "$RES"/ruler-*.json "$RES"/robust-*.json --png "$RES/results.png" > "$RES/results.md" 2>>"$RES/stderr.log" || log "report FAILED"
log "done in $((SECONDS - t0)) s"
