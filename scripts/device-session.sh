#!/usr/bin/env bash
# One device session's work as a single background job, so that it outlives one 10-minute command:
#   setsid nohup bash scripts/device-session.sh > /tmp/sess.out 2>&1 < /dev/null &
#   bash scripts/device-session.sh wait 560      # polls; prints the summary when done (or at the limit)
# then, in the same or a later command while the machine is warm, `bash scripts/device-session.sh
# pack $OUT` puts every log into $OUT/session.tgz (the tool brings back at most 8 files).
# Steps ($STEPS, in this order; default all): build info test decode model graph ncu prefill
#   build    incremental build of build-cuda (scripts/device-lib.sh's device_build)
#   info     nvcc and the CUDA libraries of the machine (what a carried binary may link)
#   test     $TESTS (default: graphs, decode, GEMV, router, the Hopper prefill suite)
#   decode   one layer of decode attention at 32K and 128K, full and fa-ssa Ω 0.75
#   model    the Qwen3-8B-shaped random model in /tmp/qwen3-8b-random
#   graph    bench model at 32K, decode tok/s with and without CUDA graphs, with and without
#            programmatic dependent launch ($GRAPH_MODES: full|msr - off|on|pdl (ELASTIC_PDL=1, graphs off))
#   ncu      kernel durations of two decode steps (ncu, gpu__time_duration), 1K prompt
#   prefill  the Hopper kernel's variants at 32K / 128K, Ω 0.75 and 1 ($VARIANTS)
#   llama    scripts/device-llama-peer.sh (llama.cpp CUDA beside ours on one GGUF), when present
# Logs: /tmp/sess (summary.md first).
set -uo pipefail
cd "$(dirname "$0")/.."
SESS=/tmp/sess

case "${1:-}" in
wait)
  lim=${2:-560}
  t0=$SECONDS
  while [ ! -f $SESS/DONE ] && [ $((SECONDS - t0)) -lt "$lim" ]; do sleep 5; done
  [ -f $SESS/DONE ] && echo "session: done" || echo "session: still running after $lim s"
  cat $SESS/summary.md 2>/dev/null
  exit 0
  ;;
pack)
  tar czf "$2/session.tgz" -C /tmp sess
  ls -la "$2"
  exit 0
  ;;
esac

rm -rf $SESS
LOGS=$SESS
NAME=session
. scripts/device-lib.sh
cp /dev/null $SESS/summary.md
SUM=$SESS/summary.md
STEPS=${STEPS:-"build info test decode model graph ncu ncu-attn prefill llama"}
want() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
trap 'touch $SESS/DONE' EXIT

want build && device_build

if want info; then
  { nvcc --version | tail -2; ls /usr/local/cuda/lib64/ | grep -E 'libcublas|libcudart' | head; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv; } > $SESS/info.log 2>&1
  note "- info: $(grep -o 'release [0-9.]*' $SESS/info.log | head -1)"
fi

if want test; then
  T=${TESTS:-'CudaGraph.*:CudaAttention.Decode*:CudaGemv.*:CudaFused.*:CudaRouter.*:CudaAttention.Prefill*:CudaTiles*'}
  run test timeout 300 build-cuda/bin/elastic_tests --gtest_filter="$T"
  grep -E '^\[graph\]|^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure|max error' $SESS/test.log | head -30 | tee -a $SUM
fi

if want decode; then
  note "### decode attention, one layer (32/8 heads, d 128, bf16; fa-ssa sink 128 local 2048)"
  run decode timeout 120 "$E" bench attention --backend cuda --seq 1024 --reps 1 --config fa-ssa --msr 0,0.75 --decode-ctx 1024,8192,32768,131072
  grep '^decode' $SESS/decode.log | tee -a $SUM
fi

dir=/tmp/qwen3-8b-random
if want model; then
  qwen3_tokenizer
  t0=$SECONDS
  [ -f "$dir/config.json" ] || timeout 200 "$E" random-model --arch qwen3-8b --tokenizer /tmp/qwen3-tok -o "$dir" --force > $SESS/model.log 2>&1
  [ -f "$dir/router.safetensors" ] || timeout 60 "$E" router-init -m "$dir" -o "$dir/router.safetensors" >> $SESS/model.log 2>&1
  note "- model ready in $((SECONDS - t0)) s"
fi

MSR="msr:0.75 --router $dir/router.safetensors --sink 128 --local 2048"
bench_model() {  # LABEL GRAPH ATTENTION...
  local label=$1 g=$2; shift 2
  ELASTIC_CUDA_GRAPH=$g timeout 170 "$E" bench model -m "$dir" --backend cuda -p 32768 -n 32 -r "${REPS:-2}" --json \
    --attention "$@" > $SESS/bench-$label.log 2>&1
  local rc=$?
  bench_row $SESS/bench-$label.log "$label" "$rc" | tee -a $SUM
}
if want graph; then
  note "### 8B-shaped model, 32K prompt, 32 decoded tokens (decode tok/s median (range), prefill tok/s, graph launches / replays / instantiations / updates)"
  note "| run | decode tok/s | prefill tok/s | graphs |"
  note "|---|---|---|---|"
  for m in ${GRAPH_MODES:-full-off full-on msr-on}; do
    case $m in
    full-off) bench_model $m 0 full ;;
    full-on) bench_model $m 1 full ;;
    msr-off) bench_model $m 0 $MSR ;;
    msr-on) bench_model $m 1 $MSR ;;
    full-pdl) ELASTIC_PDL=1 bench_model $m 0 full ;;
    msr-pdl) ELASTIC_PDL=1 bench_model $m 0 $MSR ;;
    esac
  done
fi

if want ncu; then
  t0=$SECONDS
  # Decode kernels only (the prefill's GEMMs and attention are not profiled): two decode steps.
  ELASTIC_CUDA_GRAPH=0 timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file $SESS/ncu.csv \
    -k 'regex:gemv|qk_norm|decode_kernel|cache_|embedding|top_pass|rms_norm|rope|swiglu|add_kernel' \
    "$E" bench model -m "$dir" --backend cuda -p 1024 -n 3 -r 1 --attention full > $SESS/ncu.log 2>&1
  note "- ncu (decode step): exit $? in $((SECONDS - t0)) s, $(wc -l < $SESS/ncu.csv 2>/dev/null) lines"
fi

if want ncu-attn; then
  t0=$SECONDS
  # One decode-attention call at 32K, full: where its time goes (throughput, stalls, occupancy).
  timeout 150 ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section LaunchStats --section Occupancy --section SchedulerStats -k regex:decode_kernel -s 10 -c 1 \
    "$E" bench attention --backend cuda --seq 1024 --reps 1 --config fa-ssa --msr 0 --decode-ctx 32768 > $SESS/ncu-attn.log 2>&1
  note "- ncu (decode attention 32K): exit $? in $((SECONDS - t0)) s"
  grep -E 'Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued' $SESS/ncu-attn.log | head -20 | tee -a $SUM
fi

if want prefill; then
  note "### Hopper prefill variants (fa-ssa, 32/8 heads, d 128, sink 128 local 2048; ms median)"
  for v in ${VARIANTS:-overlap deep}; do
    ELASTIC_SM90_VARIANT=$v timeout 120 "$E" bench attention --backend cuda --precision bf16 --config fa-ssa \
      --seq 32768,131072 --msr ${OMEGAS:-0.75,1} -r 3 --json > $SESS/prefill-$v.json 2> $SESS/prefill-$v.err
    python3 - $SESS/prefill-$v.json "$v" <<'PY' | tee -a $SUM
import json, sys
rows = json.load(open(sys.argv[1]))
print(sys.argv[2] + ": " + ", ".join(f"{r['seq']}/Ω {r['msr']}: {r['time_ms']['median']:.2f} ms ({100 * r['fraction_of_ideal']:.0f} % of own ideal)" for r in rows))
PY
  done
fi

if want llama && [ -f scripts/device-llama-peer.sh ]; then
  OUT=$SESS/llama run llama timeout 420 bash scripts/device-llama-peer.sh
  cat $SESS/llama/llama-summary.md >> $SUM 2>/dev/null
fi
note "- session end after $SECONDS s"
