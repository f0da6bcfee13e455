#!/usr/bin/env bash
# Router training on the GPU machine (issue 10), one action per call, each meant to be started with
# setsid and polled (a device command lasts at most 10 minutes; the machine keeps /tmp while warm):
#   bash scripts/device-train.sh build    # deps + build-cuda (scripts/device-check.sh STEPS="deps build")
#   bash scripts/device-train.sh model    # joins .carry/model-*/part* (in name order), checks sha256
#   bash scripts/device-train.sh test     # CUDA-vs-CPU training tests + the CPU trainer tests
#   bash scripts/device-train.sh bench    # training-step speed on SmolLM2 at 4K and 8K, peak GPU memory
#   bash scripts/device-train.sh train    # fa-ssa and fa-xa routers, trained side by side on the one GPU
#   bash scripts/device-train.sh eval     # full / fa-ssa / fa-xa, then the static baseline at fa-ssa's Ω
#                                         # (STATIC_MSR=X: all four side by side, static at Ω X)
#   bash scripts/device-train.sh train-eval # train, Ω pass, eval with the static baseline at that Ω
#   bash scripts/device-train.sh omega F... # mean Ω_MSR of eval JSON files
#   bash scripts/device-train.sh bigmodel # writes the Qwen3-8B-shaped random model (tokenizer:
#                                         # .carry/qwen3/tokenizer.json.gz) to $BIG
#   bash scripts/device-train.sh big      # one fa-ssa training step at 32K on it, with peak GPU memory
#   bash scripts/device-train.sh wait [S] # until no elastic process runs (at most S s, default 540)
#   bash scripts/device-train.sh stop     # kills running trainings (the checkpoints stay)
#   bash scripts/device-train.sh pack     # $RES's logs, checkpoints' routers and results as one
#                                         # $OUT/train-run.tgz (few files come back from a call)
# Stop runs with `stop`, not `pkill -f train-router`: -f also matches the calling shell, whose
# command line holds that text, and stops it with them.
# Inputs: .carry/train/mix.jsonl.gz (built on the dev machine with `elastic data build`, see
# docs/training.md; gzip keeps it within a call's carry), unpacked by `model` into $RES/mix.jsonl.
# Environment: RES (results, default /tmp/train-run), STEPS_N, BATCH, LR, LAMBDA_LR, LAMBDA_INIT,
# SINK, LOCAL (training and eval window), MAXSEQ (training), SAMPLES, LENGTHS, TASKS, ROBUST_TASKS,
# MODES (eval: which of full fa-ssa fa-xa fit), EVAL_MODES and PRE_MODES (train-eval), FIT_FIRST=1 (train: the warm start of TRAIN_EXTRA alone
# first, written as smollm2-fit.safetensors, then the training from it; FIT_ONLY=1: no training after it), STATIC=0 (eval: no static baseline), TRAIN_EXTRA (more train-router flags, e.g. --gumbel), BIG (the random 8B model's directory).
set -uo pipefail
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH="/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread:/tmp/deps/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_WAIT_POLICY=PASSIVE
RES=${RES:-/tmp/train-run}
BIG=${BIG:-/tmp/qwen3-8b-random}
E=build-cuda/bin/elastic
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
DATA=${DATA:-$RES/mix.jsonl}
ROUTERS=${ROUTERS:-$RES}
SINK=${SINK:-64}
LOCAL=${LOCAL:-512}
W="--sink $SINK --local $LOCAL"
mkdir -p "$RES"
log() { echo "$(date +%T) $*" | tee -a "$RES/progress.log"; }

# Peak GPU memory of the whole device while "$@" runs (nvidia-smi every 200 ms), in MiB.
with_peak_mem() {
  local tag=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$RES/mem-$tag.txt" 2>/dev/null &
  local smi=$!
  "$@"
  local rc=$?
  kill "$smi" 2>/dev/null
  log "$tag: peak GPU memory $(sort -n "$RES/mem-$tag.txt" | tail -1) MiB (whole device, nvidia-smi)"
  return $rc
}

case ${1:-} in
build)
  t0=$SECONDS
  STEPS="deps build" OUT="$RES/check" bash scripts/device-check.sh > "$RES/build.log" 2>&1
  log "build rc=$? in $((SECONDS - t0)) s"
  ;;
model)
  mkdir -p models
  cat .carry/model-*/part* > "$M"
  echo "$(cat scripts/model.sha256)  $M" | sha256sum -c --quiet >> "$RES/progress.log" 2>&1
  log "model rc=$?"
  gunzip -c .carry/train/mix.jsonl.gz > "$RES/mix.jsonl"
  log "data: $(wc -l < "$RES/mix.jsonl") lines"
  ;;
test)
  t0=$SECONDS
  build-cuda/bin/elastic_tests --gtest_filter='CudaTrain*:Train/CudaTrain*:TrainerStep*:Trainer/TrainerGrad*' \
    > "$RES/test.log" 2>&1
  log "test rc=$? in $((SECONDS - t0)) s: $(grep -E '^\[  (PASSED|FAILED) ' "$RES/test.log" | tr '\n' ' ')"
  ;;
bench)
  # Fixed-length samples: 3 steps of batch 1 at each length; the log's tokens/s of steps 2-3.
  for L in 4096 8192; do
    "$E" data build --out "$RES/bench-$L.jsonl" --tokens $((L * 4)) --min-seq "$L" --max-seq "$L" --seed 1 -m "$M" --force \
      > /dev/null 2>&1
    with_peak_mem "bench-$L" "$E" train-router -m "$M" --data "$RES/bench-$L.jsonl" --config fa-ssa --steps 3 --batch 1 \
      --max-seq "$L" $W --backend cuda -o "$RES/bench-$L.safetensors" --log "$RES/bench-$L.log.jsonl" \
      > "$RES/bench-$L.out" 2>&1
    log "bench $L: $(tail -2 "$RES/bench-$L.log.jsonl" | python3 -c 'import sys,json; r=[json.loads(l) for l in sys.stdin]; print(" ".join("%s tok/s (%.2f s)" % (round(x["tokens"]/x["seconds"]), x["seconds"]) for x in r))')"
  done
  ;;
train)
  N=${STEPS_N:-300}
  B=${BATCH:-4}
  for cfg in ${CONFIGS:-fa-ssa fa-xa}; do
    (
      # The flags both invocations below share.
      common=(-m "$M" --data "$DATA" --config "$cfg" --steps "$N" --batch "$B" --max-seq "${MAXSEQ:-8192}" $W
        --backend cuda --lr "${LR:-1e-3}" --lambda-lr "${LAMBDA_LR:-0.05}" --lambda-init "${LAMBDA_INIT:-1}"
        ${TRAIN_EXTRA:-} --seed 0 --checkpoint-dir "$RES/ckpt-$cfg")
      if [ "${FIT_FIRST:-0}" = 1 ]; then
        # The warm start alone (step 0: TRAIN_EXTRA's --fit-static ...), kept as smollm2-fit.safetensors
        # for the evaluation (mode fit), its curve as fit-CONFIG.jsonl; then the training resumes from
        # its checkpoint.
        t0=$SECONDS
        "$E" train-router "${common[@]}" --stop-at 0 --fit-log "$RES/fit-$cfg.jsonl" -o "$RES/smollm2-fit.safetensors" \
          > "$RES/fit-$cfg.out" 2>&1
        log "fit $cfg rc=$? in $((SECONDS - t0)) s: $(grep -h fitted "$RES/fit-$cfg.out")"
        [ "${FIT_ONLY:-0}" = 1 ] && exit 0  # the warm start alone (evaluated as mode fit)
        RESUME=1
      fi
      t0=$SECONDS
      with_peak_mem "train-$cfg" "$E" train-router "${common[@]}" --checkpoint-every 25 \
        ${RESUME:+--resume "$RES/ckpt-$cfg"} --log "$RES/train-$cfg.jsonl" -o "$RES/smollm2-$cfg.safetensors" \
        > "$RES/train-$cfg.out" 2>&1
      log "train $cfg rc=$? in $((SECONDS - t0)) s: $(tail -1 "$RES/train-$cfg.out")"
    ) &
  done
  wait
  ;;
eval)
  N=${SAMPLES:-50}
  L=${LENGTHS:-2048,4096,8192}
  T=${TASKS:-niah_single_1,niah_single_2,niah_multikey_1,fwe}
  RT=${ROBUST_TASKS:-ppl-prose,code-next-line}
  run_mode() {  # name, attention flags...
    local name=$1; shift
    local t0=$SECONDS
    # -o: the file is rewritten after every task x length, so a run cut short keeps what finished.
    # --predictions: per-sample scores (and plans), so that `elastic eval compare` pairs two modes.
    "$E" eval ruler -m "$M" --backend cuda --tasks "$T" --lengths "$L" --samples "$N" --seed 0 "$@" $W \
      --predictions -o "$RES/ruler-$name.json" > /dev/null 2> "$RES/eval-$name.err"
    local a=$?
    "$E" eval robust -m "$M" --backend cuda --tasks "$RT" --lengths "$L" --samples "$N" --seed 0 "$@" $W \
      --predictions -o "$RES/robust-$name.json" > /dev/null 2>> "$RES/eval-$name.err"
    log "eval $name rc=$a/$? in $((SECONDS - t0)) s"
  }
  for mode in ${MODES:-full fa-ssa fa-xa}; do
    case $mode in
    full) run_mode full --attention full & ;;
    fit) run_mode fit --attention fa-ssa --router "$ROUTERS/smollm2-fit.safetensors" & ;;
    *) run_mode "$mode" --attention "$mode" --router "$ROUTERS/smollm2-$mode.safetensors" & ;;
    esac
  done
  if [ "${STATIC:-1}" = 0 ]; then  # no static baseline (e.g. a quick pass that measures Ω first)
    wait
    log "eval done (no static)"
    exit 0
  fi
  if [ -n "${STATIC_MSR:-}" ]; then  # Ω given (e.g. from a pre-pass): all side by side, one static
    # baseline per value of STATIC_MSR (a list; with several, named static-<Ω>)
    set -- $STATIC_MSR
    for msr in "$@"; do
      name=static; [ $# -gt 1 ] && name=static-$msr
      run_mode "$name" --attention static:docs/results/retrieval-scores.json --msr "$msr" &
    done
    wait
    "$E" eval report "$RES"/ruler-*.json "$RES"/robust-*.json > "$RES/results.md" 2>> "$RES/progress.log"
    log "eval done"
    exit 0
  fi
  wait
  # The static retrieval-head baseline at the mean Ω_MSR elastic fa-ssa reached over the same samples.
  msr=$(python3 -c '
import json, sys
v = []
for f in sys.argv[1:]:
    d = json.load(open(f))
    for r in d.get("results", []):
        if "omega_msr" in r: v.append(r["omega_msr"])
print("%.4f" % (sum(v) / len(v)) if v else "0.5")' "$RES/ruler-fa-ssa.json" "$RES/robust-fa-ssa.json")
  log "static baseline at Ω_MSR $msr"
  run_mode static --attention static:docs/results/retrieval-scores.json --msr "$msr"
  "$E" eval report "$RES"/ruler-*.json "$RES"/robust-*.json --png "$RES/results.png" > "$RES/results.md" 2>> "$RES/progress.log"
  log "eval done"
  ;;
train-eval)
  # The whole run in one background job: train (CONFIGS, as `train`), then a quick pass of fa-ssa
  # over PRE_SAMPLES (default 5) samples per task and length for its mean Ω_MSR on the evaluation
  # prompts, then EVAL_MODES (default "full fa-ssa") with the static baseline at that Ω, side by side.
  # PRE_MODES (default fa-ssa; e.g. "fa-ssa fit"): the routed modes whose Ω gets a static baseline.
  bash "$0" train
  pre=$RES/pre
  RES=$pre ROUTERS=$ROUTERS SAMPLES=${PRE_SAMPLES:-5} MODES="${PRE_MODES:-fa-ssa}" STATIC=0 bash "$0" eval
  msrs=""
  for m in ${PRE_MODES:-fa-ssa}; do
    msr=$(bash "$0" omega "$pre/ruler-$m.json" "$pre/robust-$m.json")
    log "static baseline at Ω_MSR $msr ($m's mean over the ${PRE_SAMPLES:-5}-sample pass)"
    msrs="$msrs $msr"
  done
  MODES=${EVAL_MODES:-full fa-ssa} STATIC_MSR=$msrs bash "$0" eval
  ;;
omega)
  # Mean Ω_MSR over the task x length results of eval JSON files (arguments after the action).
  shift
  python3 -c '
import json, sys
v = [r["omega_msr"] for f in sys.argv[1:] for r in json.load(open(f)).get("results", []) if "omega_msr" in r]
print("%.4f" % (sum(v) / len(v)) if v else "nan")' "$@"
  ;;
bigmodel)
  t0=$SECONDS
  mkdir -p /tmp/qwen3-tok
  gunzip -c .carry/qwen3/tokenizer.json.gz > /tmp/qwen3-tok/tokenizer.json
  cp .carry/qwen3/tokenizer_config.json /tmp/qwen3-tok/ 2>/dev/null
  [ -f "$BIG/config.json" ] || "$E" random-model --arch qwen3-8b --tokenizer /tmp/qwen3-tok -o "$BIG" --force \
    > "$RES/bigmodel.out" 2>&1
  # The GPU machine has no prose for `data build`: the 32K sample is built on the dev machine with
  # `elastic data build --out .carry/big/big-32k.jsonl --tokens 32768 --min-seq 32768 --max-seq 32768
  # --seed 1 -m <dir with the Qwen3 tokenizer>` and carried; built here only when it was not.
  if [ -f .carry/big/big-32k.jsonl ]; then
    cp .carry/big/big-32k.jsonl "$RES/big-32k.jsonl"
  else
    "$E" data build --out "$RES/big-32k.jsonl" --tokens 32768 --min-seq 32768 --max-seq 32768 --seed 1 -m "$BIG" --force \
      >> "$RES/bigmodel.out" 2>&1
  fi
  log "bigmodel rc=$? in $((SECONDS - t0)) s: $(ls "$BIG" | wc -l) files, $(du -sh "$BIG" | cut -f1)"
  ;;
big)
  # One step (batch 1, a 32K-token sample) of fa-ssa training at the paper's window on the random
  # Qwen3-8B-shaped model held in fp32; steps 1 and 2 of 2 (the first also loads and uploads;
  # BIG_STEPS=1 when device time is short).
  t0=$SECONDS
  with_peak_mem big-32k "$E" train-router -m "$BIG" --data "$RES/big-32k.jsonl" --config fa-ssa --steps "${BIG_STEPS:-2}" --batch 1 \
    --max-seq 32768 --sink 128 --local 2048 --backend cuda --seed 0 -o "$RES/big-32k.safetensors" \
    --log "$RES/big-32k.log.jsonl" > "$RES/big-32k.out" 2>&1
  log "big rc=$? in $((SECONDS - t0)) s: $(python3 -c 'import sys,json; r=[json.loads(l) for l in open(sys.argv[1])]; print(" ".join("step %d: %.1f s, %.0f tok/s" % (x["step"], x["seconds"], x["tokens"]/x["seconds"]) for x in r))' "$RES/big-32k.log.jsonl" 2>&1)"
  ;;
wait)
  # Waits until no `elastic` process runs (started with setsid by an earlier action) or for at most
  # ${2:-540} seconds, then prints the progress log: poll with this, not `pgrep -f` (whose pattern
  # matches the polling shell's own command line).
  end=$((SECONDS + ${2:-540}))
  while pgrep -x elastic > /dev/null && [ $SECONDS -lt $end ]; do sleep 5; done
  pgrep -x elastic > /dev/null && echo "wait: still running after ${2:-540} s"
  cat "$RES/progress.log" 2>/dev/null
  ;;
stop)
  pkill -x elastic
  for f in "$RES"/ckpt-*/state.json; do
    [ -f "$f" ] && log "stop: $(dirname "$f") at step $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$f")"
  done
  ;;
pack)
  p=/tmp/train-pack
  rm -rf "$p" && mkdir -p "$p"
  for d in "$RES"/ckpt-*; do [ -d "$d" ] && mkdir -p "$p/$(basename "$d")" && cp "$d/router.safetensors" "$d/state.json" "$p/$(basename "$d")/"; done
  (cd "$RES" && cp -- *.jsonl *.json *.out *.md *.log *.safetensors "$p/" 2>/dev/null)
  if [ -d "$RES/pre" ]; then mkdir -p "$p/pre" && cp "$RES"/pre/*.json "$RES"/pre/*.log "$p/pre/" 2>/dev/null; fi
  rm -f "$p/mix.jsonl" "$p"/bench-*[0-9].jsonl "$p/big-32k.jsonl"
  tar czf "${OUT:-/tmp}/train-run.tgz" -C "$p" .
  log "pack: ${OUT:-/tmp}/train-run.tgz"
  ;;
*)
  echo "usage: device-train.sh build|model|test|bench|train|eval|train-eval|omega|bigmodel|big|wait|stop|pack" >&2
  exit 2
  ;;
esac
