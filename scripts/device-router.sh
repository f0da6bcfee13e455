#!/usr/bin/env bash
# Issue 12 on the GPU machine: the fused single-launch router (src/cuda/router.cu) against the
# cuBLAS path and the CPU reference. From the repository root:
#   bash scripts/device-router.sh
# It builds first with scripts/device-check.sh (STEPS="deps build" when /tmp/deps or
# build-cuda/bin/elastic is missing, else an incremental "build").
# Steps (each line of the summary says how it went, with seconds):
#   test      CudaRouter.* (fused kernel at every cluster size and the cuBLAS path vs an fp64
#             bound and the CPU reference; H 1..12, d 64/128, bf16/fp16/fp32 keys, T around the
#             window) and Ops.RouterLogitsMatchReference (the backend's default path, cublas),
#             that test again with ELASTIC_ROUTER_KERNEL=fused (the default is cublas)
#   sanitize  compute-sanitizer memcheck on the cluster-size sweep and the path comparison;
#             racecheck on the path comparison (shared memory, the cluster's DSMEM stores)
#   bench     elastic bench router at the Qwen3-8B shape (8 KV heads, d 128, T 32768, bf16):
#             fused (default cluster, then 1/2/4/8/16) vs cublas, device ms (events over 200
#             back-to-back calls, weights rotated past 128 MiB) and host ms per call (launches +
#             one copy to pinned memory + sync); also T 1000 and the smollm shape (3 heads, d 64)
# Environment: OUT (logs and router-summary.md go there; default build-cuda/router-logs).
# Takes under 2 minutes once built.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/router-logs}
NAME=router
. scripts/device-lib.sh
unset ELASTIC_ROUTER_KERNEL ELASTIC_ROUTER_CLUSTER
device_build

run test timeout 150 build-cuda/bin/elastic_tests --gtest_filter='CudaRouter.*:Ops.RouterLogitsMatchReference'
grep -E '^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure|max error|seed ' "$LOGS/test.log" | head -20 | tee -a "$SUM"
ELASTIC_ROUTER_KERNEL=fused run test-fused timeout 60 build-cuda/bin/elastic_tests --gtest_filter='Ops.RouterLogitsMatchReference'
grep -E '^\[  (PASSED|FAILED) |Failure' "$LOGS/test-fused.log" | head -5 | sed "s/^/ELASTIC_ROUTER_KERNEL=fused: /" | tee -a "$SUM"

run sanitize timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 build-cuda/bin/elastic_tests \
  --gtest_filter='CudaRouter.FusedEveryClusterSize:CudaRouter.PathsAgreeThroughRouterLogits'
grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$LOGS/sanitize.log" | tail -3 | tee -a "$SUM"
run racecheck timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 build-cuda/bin/elastic_tests \
  --gtest_filter='CudaRouter.PathsAgreeThroughRouterLogits'
grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$LOGS/racecheck.log" | tail -3 | tee -a "$SUM"

note ""
note "### router of one layer, fused vs cublas (ms per layer; target <= 0.02)"
run bench "$E" bench router --backend cuda --kv-heads 8 --head-dim 128 --seq 32768 --cluster 0,1,2,4,8,16
grep -E '^router|^\|' "$LOGS/bench.log" | tee -a "$SUM"
run bench-short "$E" bench router --backend cuda --kv-heads 8 --head-dim 128 --seq 1000
grep -E '^\| (fused|cublas)' "$LOGS/bench-short.log" | sed 's/^/T 1000: /' | tee -a "$SUM"
run bench-small "$E" bench router --backend cuda --kv-heads 3 --head-dim 64 --seq 4096
grep -E '^\| (fused|cublas)' "$LOGS/bench-small.log" | sed 's/^/H 3 d 64: /' | tee -a "$SUM"
echo
echo "summary: $SUM"
