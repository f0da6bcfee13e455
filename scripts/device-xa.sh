#!/usr/bin/env bash
# XAttention selection kept on the GPU (issue 11), one run on the GPU machine: build, the XA and
# prefill tests, compute-sanitizer on the new kernels, the estimation timed with the selection on
# the device against the host selection, and a model prefill with every head XA both ways.
#   bash scripts/device-xa.sh                    # all steps
#   STEPS="test bench" bash scripts/device-xa.sh # a subset (after a build in the same machine)
# Needs .carry/debs (scripts/pack-device.sh), the CUTLASS wheel at third_party/ and, for the e2e
# step, .carry/qwen3/tokenizer.json(.gz) with tokenizer_config.json. Logs go to $OUT (default
# /tmp/xa); the summary is printed last. Steps: build test sanitize bench e2e profile.
# profile: ncu on the Hopper prefill kernel at 32K, all heads FA and all heads SSA (issue 11's Ω = 1
# gap): speed of light, warp states, instruction and pipe statistics.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/xa}
STEPS=${STEPS:-"build test sanitize bench e2e profile"}
SEQS=${SEQS:-32768,131072}
REPS=${REPS:-3}
DEPS=${DEPS:-/tmp/deps}
ARCH=x86_64-linux-gnu
E=build-cuda/bin/elastic
mkdir -p "$OUT"
SUM=()
want() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
note() { SUM+=("$*"); printf '=== %s\n' "$*"; }
export LD_LIBRARY_PATH="$DEPS/usr/lib/$ARCH:$DEPS/usr/lib/$ARCH/openblas-pthread:$DEPS/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if want build; then
  t0=$SECONDS
  STEPS="deps build" OUT="$OUT/check" bash scripts/device-check.sh > "$OUT/build.log" 2>&1
  rc=$?
  note "build rc=$rc in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
fi

if want test; then
  t0=$SECONDS
  build-cuda/bin/elastic_tests --gtest_filter='CudaAttention.*:CudaTiles*:Ops.XAttention*' > "$OUT/test.log" 2>&1
  note "test rc=$? in $((SECONDS - t0)) s: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test.log" | tr '\n' ' ')"
  grep -E 'Failure|FAILED|Expected|Which is|differ' "$OUT/test.log" | head -30
  t0=$SECONDS
  ELASTIC_PREFILL_ORDER=plain build-cuda/bin/elastic_tests --gtest_filter='CudaAttention.XADevice*' > "$OUT/test-plain.log" 2>&1
  note "test (plain order) rc=$? in $((SECONDS - t0)) s: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test-plain.log" | tr '\n' ' ')"
  t0=$SECONDS
  build-cuda/bin/elastic_tests --gtest_filter='Cuda*:-CudaAttention.*:CudaTiles*' > "$OUT/test-cuda-rest.log" 2>&1
  note "other CUDA tests rc=$? in $((SECONDS - t0)) s: $(grep -E '^\[  (PASSED|FAILED|  SKIPPED) ' "$OUT/test-cuda-rest.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]' "$OUT/test-cuda-rest.log" | head
fi

if want sanitize; then
  t0=$SECONDS
  compute-sanitizer --tool memcheck --error-exitcode 9 build-cuda/bin/elastic_tests \
    --gtest_filter='CudaAttention.XADevice*' > "$OUT/memcheck.log" 2>&1
  note "memcheck rc=$? in $((SECONDS - t0)) s: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | head -1)"
  t0=$SECONDS
  timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 build-cuda/bin/elastic_tests \
    --gtest_filter='CudaAttention.XADeviceSelectionFollowsTheHostRule' > "$OUT/racecheck.log" 2>&1  # (90 s at most)
  note "racecheck rc=$? in $((SECONDS - t0)) s: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" | head -1)"
fi

if want bench; then
  t0=$SECONDS
  "$E" bench attention --backend cuda --precision bf16 --config fa-xa --seq "$SEQS" --msr 0.5,1 -r "$REPS" \
    > "$OUT/bench.txt" 2>&1
  note "bench rc=$? in $((SECONDS - t0)) s"
  cat "$OUT/bench.txt"
  "$E" bench attention --backend cuda --precision bf16 --config fa-xa --seq "$SEQS" --msr 0.5,1 -r "$REPS" --json \
    > "$OUT/bench.json" 2> "$OUT/bench.err"
fi

# Every head XA on a Qwen3-8B-shaped random model (8 layers: the estimation is per layer), 32K
# prompt: the selection on the device (default) against ELASTIC_XA_SELECT=host.
if want e2e; then
  mkdir -p /tmp/qwen3-tok
  if [ -f .carry/qwen3/tokenizer.json.gz ]; then gunzip -c .carry/qwen3/tokenizer.json.gz > /tmp/qwen3-tok/tokenizer.json
  else cp .carry/qwen3/tokenizer.json /tmp/qwen3-tok/; fi
  cp .carry/qwen3/tokenizer_config.json /tmp/qwen3-tok/
  dir=/tmp/qwen3-8b-random-8l
  t0=$SECONDS
  [ -f "$dir/config.json" ] || "$E" random-model --arch qwen3-8b --layers 8 --tokenizer /tmp/qwen3-tok -o "$dir" --force > /dev/null
  note "e2e model ready in $((SECONDS - t0)) s"
  for sel in device host; do
    echo "--- XA selection on the $sel"
    if [ $sel = host ]; then export ELASTIC_XA_SELECT=host; else unset ELASTIC_XA_SELECT; fi
    "$E" bench model -m "$dir" --backend cuda -p 32768 -n 4 -r 3 --attention xa --json > "$OUT/e2e-$sel.json" 2> "$OUT/e2e-$sel.err"
    python3 -c 'import json,sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
for r in j["results"]:
    print("prefill tok/s %.0f (%.0f-%.0f), XA estimation %.3f s, attention %.3f s, Omega_ESR %.3f (last prefill)" % (
        r["prefill_tok_s"]["median"], r["prefill_tok_s"]["min"], r["prefill_tok_s"]["max"], r["xa_seconds"],
        r["attention_seconds"], r["omega_esr"]))' "$OUT/e2e-$sel.json" || tail -5 "$OUT/e2e-$sel.json"
  done 2>&1 | tee "$OUT/e2e.log"
  unset ELASTIC_XA_SELECT
fi

# Launch order of `bench attention --msr 1 -r 1` at one length: warm-up SSA, warm-up FA, then
# FA and SSA once each; launches 2 and 4 (skip 1, count 3) are a dense and a streaming one, warm.
if want profile; then
  t0=$SECONDS
  timeout 300 ncu --clock-control none --kernel-name regex:hybrid_prefill_sm90 --launch-skip 1 --launch-count 3 \
    --section SpeedOfLight --section WarpStateStats --section InstructionStats --section ComputeWorkloadAnalysis \
    --section SchedulerStats --section Occupancy --section LaunchStats \
    "$E" bench attention --backend cuda --precision bf16 --config fa-ssa --seq 32768 --msr 1 -r 1 \
    > "$OUT/ncu-prefill-omega1.txt" 2>&1
  note "profile rc=$? in $((SECONDS - t0)) s ($(grep -c 'hybrid_prefill_sm90' "$OUT/ncu-prefill-omega1.txt") kernel sections)"
  grep -E 'hybrid_prefill_sm90|Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Issued Warp|No Eligible|Active Warps Per Scheduler|Eligible Warps|Warp Cycles Per Issued|Executed Ipc A' \
    "$OUT/ncu-prefill-omega1.txt" | head -60
fi

echo
echo "== summary"
printf '%s\n' "${SUM[@]}"
