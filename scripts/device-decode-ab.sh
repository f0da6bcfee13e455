#!/usr/bin/env bash
# Issue 12: this tree's decode against a baseline tree in the same run, on one GPU machine.
# BASE (default .carry/base) holds the baseline's sources, e.g. from the build machine:
#   rm -rf .carry/base && mkdir -p .carry/base &&
#   git archive <commit> CMakeLists.txt CMakePresets.json src tools tests bench scripts fuzz | tar -x -C .carry/base
# Steps (STEPS, default "build test attn peer router model"; each line of the summary says how it went):
#   build   this tree (all targets) and the baseline's `elastic` binary, side by side
#   test    this tree's tests of TESTS (a gtest filter, default Cuda*)
#   attn    one layer of decode attention (32/8 heads, d 128, bf16; full and fa-ssa Ω 0.75) at CTX
#           contexts: baseline, this tree, this tree with ELASTIC_PDL=1 ELASTIC_DECODE_PDL=1, then both traced
#           (ELASTIC_DECODE_TRACE=1: per-CTA stamps of the last call, cuda::decode_trace_summary())
#   peer    bench/peers/decode_peer.py: device copy and SDPA decode at 32K and 128K (the targets' yardsticks)
#   router  elastic bench router: the fused router kernel with clusters of 1, 4, 8 and 16 CTAs (queued,
#           and replayed from a graph), and cuBLAS; clusters of 8 and 16 with ELASTIC_ROUTER_SYNC=barrier;
#           then traced (ELASTIC_ROUTER_TRACE=1), both hand-offs
#   model   Qwen3-8B-shaped random weights (tokenizer from .carry/qwen3), 32K prompt, 32 decoded
#           tokens, REPS reps, full and msr:0.75: baseline, this tree, this tree with ELASTIC_PDL=1 (the
#           GEMVs launched programmatically); MODEL_ENVS (rows separated by ';', e.g.
#           "ELASTIC_PDL=1 ELASTIC_DECODE_TRIGGER=written;ELASTIC_PDL=1 ELASTIC_DECODE_SMALL_PDL=1")
#           replaces that last row with one row of this tree per environment
#   route   (not in the default STEPS) the same model's prefill under msr:0.75 at ROUTE_PROMPTS (default
#           2048 and 32768) tokens, routed on the device and on the host (ELASTIC_ROUTE=host), alternating
# BASELINE=0 leaves the baseline out (no second build, no baseline rows); PDL=0 leaves out the
# programmatic-launch rows. Both shorten a run that must fit one call's time limit.
# From the repository root: bash scripts/device-decode-ab.sh. Logs and decode-ab-summary.md in OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/decode-ab-logs}
NAME=decode-ab
BASE=${BASE:-.carry/base}
STEPS=${STEPS:-build test attn peer router model}
REPS=${REPS:-3}
BASELINE=${BASELINE:-1}
PDL=${PDL:-1}
. scripts/device-lib.sh
has() { [[ " $STEPS " == *" $1 "* ]]; }
EB=$BASE/build-cuda/bin/elastic
T=build-cuda/bin/elastic_tests

note "## device-$NAME $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
if has build; then
  # The dependencies once (device-check.sh's deps step), then the baseline's build beside this tree's.
  [ -d "$DEPS/usr" ] || STEPS=deps OUT="$LOGS/check" run deps bash scripts/device-check.sh
  base_pid=
  if [ "$BASELINE" = 1 ]; then
    mkdir -p "$BASE/third_party"
    [ -e "$BASE/third_party/cutlass" ] || ln -s "$PWD/third_party/cutlass" "$BASE/third_party/cutlass"
    ( cd "$BASE" && STEPS=build BUILD_TARGET=elastic OUT="$PWD/build-cuda/check-logs" DEPS=$DEPS bash scripts/device-check.sh ) \
      > "$LOGS/base-build.log" 2>&1 &
    base_pid=$!
  fi
  STEPS=build OUT="$LOGS/check" run build bash scripts/device-check.sh || { note "build failed: see $LOGS/check/build.log"; exit 1; }
  if [ -n "$base_pid" ]; then
    wait $base_pid
    note "- baseline build: $([ -x "$EB" ] && echo ok || echo FAILED) (log $LOGS/base-build.log)"
  fi
fi

if has test; then
  run test $T --gtest_filter="${TESTS:-Cuda*}"
  grep -E '^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure' "$LOGS/test.log" | head -30 | tee -a "$SUM"
fi

if has attn; then
  battn() {  # battn BINARY: the decode lines of one bench attention run
    "$1" bench attention --backend cuda --seq 1024 --reps 1 --config fa-ssa --msr 0,0.75 \
      --decode-ctx "${CTX:-1024,8192,32768,131072}" 2>&1 | grep -E '^decode|^context'
  }
  for round in 1 2; do
    note ""
    if [ "$BASELINE" = 1 ]; then
      note "### decode attention, round $round: baseline"
      battn "$EB" | tee -a "$SUM"
    fi
    note "### decode attention, round $round: this tree"
    battn "$E" | tee -a "$SUM"
    if [ "$PDL" = 1 ]; then
      note "### decode attention, round $round: this tree, ELASTIC_PDL=1 ELASTIC_DECODE_PDL=1"
      ELASTIC_PDL=1 ELASTIC_DECODE_PDL=1 battn "$E" | tee -a "$SUM"
    fi
  done
  if [ "$BASELINE" = 1 ]; then
    note "### traced (ELASTIC_DECODE_TRACE=1): baseline"
    ELASTIC_DECODE_TRACE=1 battn "$EB" | tee -a "$SUM"
  fi
  note "### traced (ELASTIC_DECODE_TRACE=1): this tree"
  ELASTIC_DECODE_TRACE=1 battn "$E" | tee -a "$SUM"
fi

if has peer; then
  note ""
  note "### PyTorch peers in the same run (copy bandwidth, SDPA decode; 32/8 heads, d 128, bf16)"
  run peer python3 bench/peers/decode_peer.py --json "$LOGS/decode-peer.json"
  grep -E '^(device|copy)|^ +[0-9]+ ' "$LOGS/peer.log" | tee -a "$SUM"
fi

if has router; then
  note ""
  note "### router, one layer (Qwen3-8B shape, 32K bf16 keys): fused kernel by cluster size, and cuBLAS"
  run router "$E" bench router --backend cuda --cluster 1,4,8,16
  grep -vE '^\s*$' "$LOGS/router.log" | tail -12 | tee -a "$SUM"
  note "### router, the cluster barrier after each layer (ELASTIC_ROUTER_SYNC=barrier) instead of st.async + mbarriers"
  ELASTIC_ROUTER_SYNC=barrier run router-barrier "$E" bench router --backend cuda --cluster 8,16
  grep -vE '^\s*$' "$LOGS/router-barrier.log" | tail -8 | tee -a "$SUM"
  note "### router traced (ELASTIC_ROUTER_TRACE=1; its times include a memset per call)"
  ELASTIC_ROUTER_TRACE=1 run router-trace "$E" bench router --backend cuda --cluster 1,4,8,16
  grep -E '^router trace|trace' "$LOGS/router-trace.log" | grep -v '^| path' | tail -8 | tee -a "$SUM"
  ELASTIC_ROUTER_SYNC=barrier ELASTIC_ROUTER_TRACE=1 run router-trace-barrier "$E" bench router --backend cuda --cluster 16
  grep -E '^router trace|trace' "$LOGS/router-trace-barrier.log" | grep -v '^| path' | tail -3 | sed 's/^/barrier: /' | tee -a "$SUM"
fi

if has model; then
  dir=/tmp/qwen3-8b-random
  qwen3_random_model "$dir"
  note ""
  note "### decode tok/s at 32K (Qwen3-8B shape, bf16; graphs on; $REPS reps of 32 tokens; median (range))"
  note "| attention | build | decode tok/s | prefill tok/s | graph launches / replays / instantiations / updates |"
  note "|---|---|---|---|---|"
  bmodel() {  # bmodel LABEL BINARY ATTENTION...
    local label=$1 bin=$2; shift 2
    local log="$LOGS/model-${label// /_}-$1.log"
    timeout 170 "$bin" bench model -m "$dir" --backend cuda -p 32768 -n 32 -r "$REPS" --json --attention "$@" > "$log" 2>&1
    bench_row "$log" "$label" "$?" attention | tee -a "$SUM"
  }
  MSR="msr:0.75 --router $dir/router.safetensors --sink 128 --local 2048"
  for a in full msr; do
    args=full; [ $a = msr ] && args=$MSR
    [ "$BASELINE" = 1 ] && bmodel baseline "$EB" $args
    bmodel "this tree" "$E" $args
    if [ -n "${MODEL_ENVS:-}" ]; then
      IFS=';' read -ra envs <<< "$MODEL_ENVS"
      for ev in "${envs[@]}"; do
        ( export $ev; bmodel "this tree, $ev" "$E" $args )
      done
    elif [ "$PDL" = 1 ]; then
      ELASTIC_PDL=1 bmodel "this tree, ELASTIC_PDL=1" "$E" $args
    fi
    [ "$BASELINE" = 1 ] && bmodel "baseline again" "$EB" $args
  done
fi
if has route; then
  dir=/tmp/qwen3-8b-random
  qwen3_random_model "$dir"
  note ""
  note "### prefill routed on the device (default) against the host (ELASTIC_ROUTE=host): msr:0.75, Qwen3-8B shape, $REPS reps"
  note "| prompt | routing | prefill tok/s median (range) | router ms per layer | attention s | Ω_MSR |"
  note "|---|---|---|---|---|---|"
  for p in ${ROUTE_PROMPTS:-2048 32768}; do
    for r in host device host device; do
      log="$LOGS/route-$p-$r.log"
      ELASTIC_ROUTE=$r timeout 170 "$E" bench model -m "$dir" --backend cuda -p "$p" -n 1 -r "$REPS" --json \
        --attention msr:0.75 --router "$dir/router.safetensors" --sink 128 --local 2048 > "$log" 2>&1
      python3 - "$log" "$p" "$r" <<'PY' | tee -a "$SUM"
import json, sys
log, p, r = sys.argv[1:4]
row = None
for line in open(log):
    if line.startswith('{'):
        row = json.loads(line)["results"][0]
if row is None:
    print(f"| {p} | {r} | FAILED | | | |")
else:
    q = row["prefill_tok_s"]
    print(f"| {p} | {r} | {q['median']:.0f} ({q['min']:.0f}-{q['max']:.0f}) | {row['router_ms_per_layer']:.4f} | "
          f"{row['attention_seconds']:.4f} | {row['omega_msr']:.4f} |")
PY
    done
  done
fi
echo
echo "summary: $SUM"
