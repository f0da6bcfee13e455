#!/usr/bin/env bash
# XAttention selection kept on the GPU (issue 11), one run on the GPU machine: build, the XA and
# prefill tests, compute-sanitizer on the new kernels, the estimation timed with the selection on
# the device against the host selection, a model prefill with every head XA both ways, and an ncu
# profile of the Hopper prefill kernel at Ω = 1.
#   bash scripts/device-xa.sh                    # all steps
#   STEPS="test bench" bash scripts/device-xa.sh # a subset (after a build in the same machine)
# Needs .carry/debs (scripts/pack-device.sh), the CUTLASS wheel at third_party/ and, for the e2e
# step, .carry/qwen3/tokenizer.json.gz with tokenizer_config.json. Logs and xa-summary.md go to
# $OUT (default /tmp/xa). Steps: build test sanitize bench e2e profile.
#   profile: ncu on the Hopper prefill kernel at 32K, all heads FA and all heads SSA (issue 11's
#   Ω = 1 gap): speed of light, warp states, instruction and pipe statistics.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS=${OUT:-/tmp/xa}
NAME=xa
STEPS=${STEPS:-"build test sanitize bench e2e profile"}
SEQS=${SEQS:-32768,131072}
REPS=${REPS:-3}
. scripts/device-lib.sh
want() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
passed() { grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]' "$LOGS/$1.log" | tee -a "$SUM"; }

want build && device_build

if want test; then
  run test build-cuda/bin/elastic_tests --gtest_filter='CudaAttention.*:CudaTiles*:Ops.XAttention*'
  passed test
  grep -E 'Failure|Expected|Which is|differ' "$LOGS/test.log" | head -30
  ELASTIC_PREFILL_ORDER=plain run test-plain build-cuda/bin/elastic_tests --gtest_filter='CudaAttention.XADevice*'
  passed test-plain
  run test-cuda-rest build-cuda/bin/elastic_tests --gtest_filter='Cuda*:-CudaAttention.*:CudaTiles*'
  passed test-cuda-rest
fi

if want sanitize; then
  run memcheck compute-sanitizer --tool memcheck --error-exitcode 9 build-cuda/bin/elastic_tests \
    --gtest_filter='CudaAttention.XADevice*'
  grep -E 'ERROR SUMMARY' "$LOGS/memcheck.log" | head -1 | tee -a "$SUM"
  run racecheck timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 build-cuda/bin/elastic_tests \
    --gtest_filter='CudaAttention.XADeviceSelectionFollowsTheHostRule'
  grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$LOGS/racecheck.log" | head -1 | tee -a "$SUM"
fi

if want bench; then
  args="--backend cuda --precision bf16 --config fa-xa --seq $SEQS --msr 0.5,1 -r $REPS"
  run bench "$E" bench attention $args
  cat "$LOGS/bench.log"
  "$E" bench attention $args --json > "$LOGS/bench.json" 2> "$LOGS/bench.err"
fi

# Every head XA on a Qwen3-8B-shaped random model (8 layers: the estimation is per layer), 32K
# prompt: the selection on the device (default) against ELASTIC_XA_SELECT=host.
if want e2e; then
  qwen3_tokenizer
  dir=/tmp/qwen3-8b-random-8l
  [ -f "$dir/config.json" ] ||
    run random-model "$E" random-model --arch qwen3-8b --layers 8 --tokenizer /tmp/qwen3-tok -o "$dir" --force
  for sel in device host; do
    if [ $sel = host ]; then export ELASTIC_XA_SELECT=host; else unset ELASTIC_XA_SELECT; fi
    run "e2e-$sel" "$E" bench model -m "$dir" --backend cuda -p 32768 -n 4 -r 3 --attention xa --json
    python3 - "$LOGS/e2e-$sel.log" "$sel" <<'PY' | tee -a "$SUM"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
for r in (rows[-1]["results"] if rows else []):
    print("XA selection on the %s: prefill tok/s %.0f (%.0f-%.0f), XA estimation %.3f s, attention %.3f s, "
          "Omega_ESR %.3f (last prefill)" % (sys.argv[2], r["prefill_tok_s"]["median"], r["prefill_tok_s"]["min"],
          r["prefill_tok_s"]["max"], r["xa_seconds"], r["attention_seconds"], r["omega_esr"]))
PY
  done
  unset ELASTIC_XA_SELECT
fi

# Launch order of `bench attention --msr 1 -r 1` at one length: warm-up SSA, warm-up FA, then
# FA and SSA once each; launches 2 to 4 (skip 1, count 3) are two dense ones and a streaming one.
if want profile; then
  run profile timeout 300 ncu --clock-control none --kernel-name regex:hybrid_prefill_sm90 --launch-skip 1 \
    --launch-count 3 --section SpeedOfLight --section WarpStateStats --section InstructionStats \
    --section ComputeWorkloadAnalysis --section SchedulerStats --section Occupancy --section LaunchStats \
    "$E" bench attention --backend cuda --precision bf16 --config fa-ssa --seq 32768 --msr 1 -r 1
  grep -E 'hybrid_prefill_sm90|Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Issued Warp|No Eligible|Eligible Warps|Executed Instructions  |highest-utilized' \
    "$LOGS/profile.log" | head -60
fi

echo
echo "== summary ($SUM)"
cat "$SUM"
