#!/usr/bin/env bash
# Issue 12 on the GPU machine: the decode step replayed as CUDA graphs, and top-p on the device.
# From the repository root (alone: it unpacks .carry/debs when /tmp/deps is missing and builds
# build-cuda; otherwise it only rebuilds what changed):
#   bash scripts/device-graph.sh
# Steps (each line of the summary says how it went, with seconds):
#   build   incremental build of build-cuda (scripts/device-check.sh's build step)
#   test    CudaGraph.* (graph replay = the uncaptured step, bit for bit; device top-p = host top-p)
#           CudaModel.* (the forward against the CPU) and CudaAttention.Decode* (its scratch sizing changed)
#   model   the Qwen3-8B-shaped random model (tokenizer from .carry/qwen3) and its router
#   bench   elastic bench model -p 32768 -n 32 -r 3, full and msr:0.75, graphs on and off, and (full)
#           on with one graph per SEGMENT layers (default 9; SEGMENT=0 skips it): decode tok/s
# Environment: OUT (logs and graph-summary.md; default build-cuda/graph-logs), SEGMENT, REPS.
# About 3-4 minutes once built (most of it the 32K prefills and writing the 16 GB model).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/graph-logs}
NAME=graph
. scripts/device-lib.sh
SEGMENT=${SEGMENT:-9}
REPS=${REPS:-3}
device_build

run test build-cuda/bin/elastic_tests --gtest_filter='CudaGraph.*:CudaModel.*:CudaAttention.Decode*'
grep -E '^\[graph\]|^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure' "$LOGS/test.log" | head -30 | tee -a "$SUM"

qwen3_tokenizer
dir=/tmp/qwen3-8b-random
t0=$SECONDS
[ -f "$dir/config.json" ] || "$E" random-model --arch qwen3-8b --tokenizer /tmp/qwen3-tok -o "$dir" --force > "$LOGS/model.log" 2>&1
[ -f "$dir/router.safetensors" ] || "$E" router-init -m "$dir" -o "$dir/router.safetensors" >> "$LOGS/model.log" 2>&1
note "- model ready in $((SECONDS - t0)) s ($dir)"

note ""
note "### decode tok/s at 32K (Qwen3-8B shape, bf16; $REPS reps of 32 tokens; median (range))"
note "| attention | graphs | decode tok/s | prefill tok/s | graph launches / instantiations |"
note "|---|---|---|---|---|"
bench() {  # bench LABEL GRAPH SEGMENT ATTENTION...
  local label=$1 g=$2 seg=$3; shift 3
  local log="$LOGS/bench-$label.log"
  ELASTIC_CUDA_GRAPH=$g ELASTIC_CUDA_GRAPH_LAYERS=$seg timeout 170 "$E" bench model -m "$dir" --backend cuda \
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
echo
echo "summary: $SUM"
