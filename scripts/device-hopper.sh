#!/usr/bin/env bash
# The Hopper prefill kernel on the GPU machine (issue 11), one run: build, the prefill tests through
# both tensor-core kernels, compute-sanitizer memcheck on the Hopper kernel, and the kernel table
# (ours on sm90 and on sm80, the peers, same run).
#   bash scripts/device-hopper.sh                   # all steps
#   STEPS="test bench" bash scripts/device-hopper.sh  # a subset (after a build in the same machine)
# Needs .carry/debs (scripts/pack-device.sh) and the CUTLASS wheel at third_party/ (carry it:
# third_party/nvidia_cutlass-4.2.0.0-py3-none-any.whl). Logs and JSON go to $OUT (default
# /tmp/hopper); the summary is printed last. Steps: build test sanitize bench e2e peers table.
# Knobs: SEQS, OMEGAS, REPS (bench); VARIANTS (tested), BENCH_VARIANTS (benched besides the
# default), KERNELS (sm90 sm80), NO_PLAIN=1 (skip the unsorted-work-list run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/hopper}
STEPS=${STEPS:-"build test sanitize bench peers table"}
SEQS=${SEQS:-32768,131072}
OMEGAS=${OMEGAS:-0,0.25,0.5,0.75,1}
REPS=${REPS:-5}
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
  note "build rc=$rc in $((SECONDS - t0)) s ($(grep -c 'Hopper prefill kernel: on' "$OUT/build.log") x Hopper on)"
  [ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
fi

if want test; then
  t0=$SECONDS
  "$E" --version > /dev/null 2>&1
  for v in ${VARIANTS:-overlap deep simple}; do
    ELASTIC_SM90_VARIANT=$v build-cuda/bin/elastic_tests --gtest_filter='CudaAttention.Prefill*:CudaTiles*' \
      > "$OUT/test-$v.log" 2>&1
    note "test ($v) rc=$? in $((SECONDS - t0)) s: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test-$v.log" | tr '\n' ' ')"
    grep -E 'Failure|err |FAILED' "$OUT/test-$v.log" | head -20
  done
fi

if want sanitize; then
  t0=$SECONDS
  compute-sanitizer --tool memcheck --error-exitcode 9 build-cuda/bin/elastic_tests \
    --gtest_filter='CudaAttention.PrefillVarlenBatchNative:CudaAttention.PrefillStridedQKV' > "$OUT/memcheck.log" 2>&1
  note "memcheck rc=$? in $((SECONDS - t0)) s: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | head -1)"
fi

if want bench; then
  args="--backend cuda --precision bf16 --config fa-ssa --seq $SEQS --msr $OMEGAS -r $REPS"
  for k in ${KERNELS:-sm90 sm80}; do
    t0=$SECONDS
    ELASTIC_PREFILL_KERNEL=$k "$E" bench attention $args --json > "$OUT/bench-$k.json" 2> "$OUT/bench-$k.err"
    note "bench $k rc=$? in $((SECONDS - t0)) s"
    ELASTIC_PREFILL_KERNEL=$k "$E" bench attention $args 2>&1 | tail -n 14
  done
  for v in ${BENCH_VARIANTS:-deep simple}; do
    ELASTIC_SM90_VARIANT=$v "$E" bench attention $args --json > "$OUT/bench-sm90-$v.json" 2>&1
    note "bench sm90 variant $v rc=$?"
  done
  # Longest-first against the plain order (the work list as built, no sort), Hopper kernel.
  if [ -z "${NO_PLAIN:-}" ]; then
    ELASTIC_PREFILL_ORDER=plain "$E" bench attention $args --json > "$OUT/bench-sm90-plain.json" 2>&1
    note "bench sm90 plain order rc=$?"
  fi
  "$E" bench attention --backend cuda --precision bf16 --seq 32768 --msr 0,0.75 -r 3 --check 2>&1 | tail -n 6
fi

# End to end: 32K prefill (and decode after it) of the Qwen3-8B-shaped random model, both kernels.
if want e2e; then
  mkdir -p /tmp/qwen3-tok
  gunzip -c .carry/qwen3/tokenizer.json.gz > /tmp/qwen3-tok/tokenizer.json
  cp .carry/qwen3/tokenizer_config.json /tmp/qwen3-tok/
  dir=/tmp/qwen3-8b-random
  t0=$SECONDS
  [ -f "$dir/config.json" ] || "$E" random-model --arch qwen3-8b --tokenizer /tmp/qwen3-tok -o "$dir" --force > /dev/null
  [ -f "$dir/router.safetensors" ] || "$E" router-init -m "$dir" -o "$dir/router.safetensors" > /dev/null
  note "e2e model ready in $((SECONDS - t0)) s"
  for k in sm90 sm80; do
    for a in "full" "msr:0.75 --router $dir/router.safetensors --sink 128 --local 2048"; do
      echo "--- $k $a"
      ELASTIC_PREFILL_KERNEL=$k "$E" bench model -m "$dir" --backend cuda -p 32768 -n 16 -r 3 --attention $a 2>&1 | tail -n 4
    done
  done 2>&1 | tee "$OUT/e2e.log"
fi

if want peers; then
  t0=$SECONDS
  python3 bench/peers/peers.py --seqs "$SEQS" --omegas "$OMEGAS" --decode-ctx 32768 --json "$OUT/peers.json" \
    > "$OUT/peers.log" 2>&1
  note "peers rc=$? in $((SECONDS - t0)) s"
fi

if want table; then
  for k in sm90 sm80 sm90-plain sm90-simple sm90-deep; do
    [ -f "$OUT/bench-$k.json" ] && [ -f "$OUT/peers.json" ] || continue
    echo "--- ours = $k"
    python3 bench/peers/compare.py "$OUT/bench-$k.json" "$OUT/peers.json" --markdown "$OUT/table-$k.md" 2>&1 | tail -n 20
  done
fi

printf '\n'
for s in "${SUM[@]}"; do printf -- '- %s\n' "$s"; done
