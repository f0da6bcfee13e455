#!/usr/bin/env bash
# Issue 12 on the GPU machine: decode attention and the decode GEMV at the memory limit. From the
# repository root, after the usual build step (or alone: it unpacks .carry/debs and builds
# build-cuda itself when /tmp/deps or build-cuda/bin/elastic is missing; otherwise it only rebuilds
# what changed):
#   bash scripts/device-decode.sh
# Steps (each line of the summary says how it went, with seconds):
#   build     incremental build of build-cuda (scripts/device-check.sh's build step)
#   test      CudaAttention.Decode* (lean and full caches, every config, GQA 1-16, wrapping rings)
#             and CudaGemv.* (our GEMV and matmul's paths vs fp64)
#   sanitize  compute-sanitizer memcheck on the decode and GEMV tests, racecheck on the decode
#             kernel's split and merge (its cp.async ring, lane-group merge and grid barrier)
#   attn      elastic bench attention --decode-ctx 32768,131072, full and fa-ssa Ω 0.75: device ms
#             per call (events around 50 back-to-back calls over cache copies past 256 MiB, so no
#             L2 reuse between calls), GB/s, and one call's host-timed ms (launch included)
#   gemv      elastic bench gemv: Qwen3-8B shapes, T = 1 and 4, ours vs cuBLAS, % of 4.0 TB/s
#   peer      bench/peers/decode_peer.py: device copy, SDPA decode, torch GEMV at the same shapes
# Environment: OUT (logs and decode-summary.md go there; default build-cuda/decode-logs).
# Takes about 3-5 minutes once built.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/decode-logs}
NAME=decode
. scripts/device-lib.sh
device_build

run test build-cuda/bin/elastic_tests --gtest_filter='CudaAttention.Decode*:CudaGemv.*'
grep -E '^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure|err ' "$LOGS/test.log" | head -20 | tee -a "$SUM"

run sanitize timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 build-cuda/bin/elastic_tests \
  --gtest_filter='CudaAttention.DecodeGroupsConfigsRings:CudaAttention.DecodeManyPiecesMerge:CudaGemv.KernelMatchesFp64'
grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$LOGS/sanitize.log" | tail -3 | tee -a "$SUM"
run racecheck timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 build-cuda/bin/elastic_tests \
  --gtest_filter='CudaAttention.DecodeManyPiecesMerge'
grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$LOGS/racecheck.log" | tail -3 | tee -a "$SUM"

note ""
note "### decode attention (32/8 heads, d 128, bf16 cache; fa-ssa: sink 128, local 2048)"
run attn "$E" bench attention --backend cuda --seq 1024 --reps 1 --config fa-ssa --msr 0,0.75 --decode-ctx 32768,131072
grep '^decode' "$LOGS/attn.log" | tee -a "$SUM"
run attn-xa "$E" bench attention --backend cuda --seq 1024 --reps 1 --config xa-ssa --msr 0.75 --decode-ctx 131072
grep '^decode' "$LOGS/attn-xa.log" | tee -a "$SUM"

note ""
note "### GEMV (bf16 weights, ours vs cuBLAS; fractions of 4.0 TB/s)"
run gemv "$E" bench gemv --backend cuda --tokens 1,4
grep '^|' "$LOGS/gemv.log" | tee -a "$SUM"

note ""
note "### PyTorch peers (same shapes)"
run peer python3 bench/peers/decode_peer.py --json "$LOGS/decode-peer.json"
tee -a "$SUM" < "$LOGS/peer.log"
echo
echo "summary: $SUM"
