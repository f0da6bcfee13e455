#!/usr/bin/env bash
# Issue 12 on the GPU machine: the decode step recorded once and replayed as a CUDA graph, and
# top-p on the device. From the repository root (alone: it unpacks .carry/debs when /tmp/deps is
# missing and builds build-cuda; otherwise it only rebuilds what changed):
#   bash scripts/device-graph.sh
# Steps (each line of the summary says how it went, with seconds):
#   build     incremental build of build-cuda (scripts/device-check.sh's build step)
#   test      CudaGraph.* (replay = the uncaptured step, bit for bit; sessions sharing a backend;
#             device top-p = host top-p), CudaModel.* (the forward against the CPU),
#             CudaAttention.Decode* (the decode kernel's one-wave grid) and CudaFused.*
#   sanitize  compute-sanitizer memcheck on CudaGraph.ReplayGivesTheBitsOfTheUncapturedStep and the
#             decode tests; racecheck on the decode split and merge
#   attn      elastic bench attention --decode-ctx 1024,32768,131072, full and fa-ssa Ω 0.75
#   model     the Qwen3-8B-shaped random model (tokenizer from .carry/qwen3) and its router
#   bench     elastic bench model -p 32768 -n 32 -r REPS, full and msr:0.75, graphs off and on,
#             and (full) on with one graph per SEGMENT layers (SEGMENT=0, the default, skips it);
#             msr:0.75 once more with the cuBLAS router (ELASTIC_ROUTER_KERNEL=cublas; the default is
#             the fused kernel): Ω and router ms per layer of both
# Environment: OUT (logs and graph-summary.md; default build-cuda/graph-logs), SEGMENT, REPS, TESTS
# (the test step's gtest filter), STEPS
# (a subset of "test attn bench sanitize", run in that order; default all).
# About 6-8 minutes on a bare machine (the build, the 32K prefills, writing the 16 GB model).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/graph-logs}
NAME=graph
. scripts/device-lib.sh
SEGMENT=${SEGMENT:-0}
REPS=${REPS:-3}
STEPS=${STEPS:-test attn bench sanitize}
has() { [[ " $STEPS " == *" $1 "* ]]; }
device_build
T=build-cuda/bin/elastic_tests

if has test; then
  run test $T --gtest_filter="${TESTS:-CudaGraph.*:CudaModel.*:CudaAttention.Decode*:CudaFused.*}"
  grep -E '^\[graph\]|^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure' "$LOGS/test.log" | head -30 | tee -a "$SUM"
fi
if has attn; then
  note ""
  note "### decode attention (32/8 heads, d 128, bf16 cache; fa-ssa: sink 128, local 2048)"
  run attn "$E" bench attention --backend cuda --seq 1024 --reps 1 --config fa-ssa --msr 0,0.75 \
    --decode-ctx 1024,32768,131072
  grep '^decode' "$LOGS/attn.log" | tee -a "$SUM"
fi
if has bench; then
  dir=/tmp/qwen3-8b-random
  qwen3_random_model "$dir"
  note ""
  note "### decode tok/s at 32K (Qwen3-8B shape, bf16; $REPS reps of 32 tokens; median (range))"
  note "| attention | graphs | decode tok/s | prefill tok/s | graph launches / replays / instantiations / updates |"
  note "|---|---|---|---|---|"
  bench() {  # bench LABEL GRAPH SEGMENT ATTENTION...
    local label=$1 g=$2 seg=$3; shift 3
    local log="$LOGS/bench-$label-$1-${ROUTER:-fused}.log"
    ELASTIC_ROUTER_KERNEL=${ROUTER:-fused} ELASTIC_CUDA_GRAPH=$g ELASTIC_CUDA_GRAPH_LAYERS=$seg timeout 170 "$E" bench model -m "$dir" --backend cuda \
      -p 32768 -n 32 -r "$REPS" --json --attention "$@" > "$log" 2>&1
    local rc=$?
    bench_row "$log" "$label" "$rc" attention | tee -a "$SUM"
  }
  MSR="msr:0.75 --router $dir/router.safetensors --sink 128 --local 2048"
  bench "off" 0 0 full
  bench "on" 1 0 full
  [ "$SEGMENT" -gt 0 ] && bench "on-seg$SEGMENT" 1 "$SEGMENT" full
  bench "off" 0 0 $MSR
  bench "on" 1 0 $MSR
  ROUTER=cublas bench "on, cuBLAS router" 1 0 $MSR
  bench "off-again" 0 0 full
  note ""
  note "### Ω_MSR, Ω_ESR and router ms per layer of each run"
  for f in "$LOGS"/bench-*.log; do
    python3 - "$f" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    if line.startswith('{'):
        r = json.loads(line)["results"][0]
        print(f"- {os.path.basename(sys.argv[1])}: omega_msr {r['omega_msr']:.4f}, omega_esr {r['omega_esr']:.4f}, "
              f"router {r['router_ms_per_layer']:.4f} ms/layer, attention {r['attention_seconds']:.3f} s")
PY
  done | tee -a "$SUM"
fi
if has sanitize; then
  run memcheck timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $T \
    --gtest_filter='CudaGraph.ReplayGivesTheBitsOfTheUncapturedStep:CudaAttention.DecodeGroupsConfigsRings:CudaAttention.DecodeManyPiecesMerge'
  grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$LOGS/memcheck.log" | tail -3 | tee -a "$SUM"
  run racecheck timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 $T \
    --gtest_filter='CudaAttention.DecodeManyPiecesMerge'
  grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$LOGS/racecheck.log" | tail -3 | tee -a "$SUM"
fi
echo
echo "summary: $SUM"
