# Shared by the device check scripts (scripts/device-{decode,graph,router}.sh), sourced from the
# repository root after they set LOGS (their log folder) and NAME (decode, graph, router):
# the dependency paths of the GPU machine, a summary file ($LOGS/$NAME-summary.md) written by
# note(), run NAME CMD... (output in $LOGS/NAME.log, one summary line with exit status and
# seconds), device_build (unpacks .carry/debs when needed, else an incremental build), qwen3_tokenizer
# (the carried Qwen3 tokenizer into /tmp/qwen3-tok), qwen3_random_model and bench_row (one table row of a bench model log).
DEPS=${DEPS:-/tmp/deps}
E=build-cuda/bin/elastic
mkdir -p "$LOGS"
SUM="$LOGS/$NAME-summary.md"
: > "$SUM"
export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu:$DEPS/usr/lib/x86_64-linux-gnu/openblas-pthread:$DEPS/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_WAIT_POLICY=PASSIVE

note() { echo "$*" | tee -a "$SUM"; }

run() {
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  note "- $name: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s (log $LOGS/$name.log)"
  return $rc
}

# The summary's title line, then the build (scripts/device-check.sh); exits when the build fails.
device_build() {
  note "## device-$NAME $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  local steps="build"
  { [ -d "$DEPS/usr" ] && [ -x "$E" ]; } || steps="deps build"
  STEPS="$steps" OUT="$LOGS/check" run build bash scripts/device-check.sh || { note "build failed: see $LOGS/check/build.log"; exit 1; }
}

# The Qwen3 tokenizer carried in .carry/qwen3, unpacked into /tmp/qwen3-tok (random-model's --tokenizer).
qwen3_tokenizer() {
  mkdir -p /tmp/qwen3-tok
  gunzip -c .carry/qwen3/tokenizer.json.gz > /tmp/qwen3-tok/tokenizer.json
  cp .carry/qwen3/tokenizer_config.json /tmp/qwen3-tok/
}

# qwen3_random_model DIR: the Qwen3-8B-shaped random model and its router in DIR (kept when there),
# its log in $LOGS/model.log, one summary line.
qwen3_random_model() {
  local dir=$1 t0=$SECONDS
  qwen3_tokenizer
  [ -f "$dir/config.json" ] || "$E" random-model --arch qwen3-8b --tokenizer /tmp/qwen3-tok -o "$dir" --force > "$LOGS/model.log" 2>&1
  [ -f "$dir/router.safetensors" ] || "$E" router-init -m "$dir" -o "$dir/router.safetensors" >> "$LOGS/model.log" 2>&1
  note "- model ready in $((SECONDS - t0)) s ($dir)"
}

# bench_row LOG LABEL RC [attention]: the row "| LABEL | decode tok/s median (range) | prefill tok/s |
# graph launches / replays / instantiations / updates |" of an `elastic bench model --json` log (with `attention`, the
# run's attention mode first); a log without the JSON line gives "FAILED (exit RC)".
bench_row() {
  python3 - "$@" <<'PY'
import json, sys
log, label, rc = sys.argv[1:4]
first = len(sys.argv) > 4
row = None
for line in open(log):
    if line.startswith('{'):
        row = json.loads(line)["results"][0]
lead = f"| {row['attention'] if row else '?'} " if first else ""
if row is None:
    print(f"{lead}| {label} | FAILED (exit {rc}) | | |")
else:
    d, p = row["decode_tok_s"], row["prefill_tok_s"]
    print(f"{lead}| {label} | {d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f}) | {p['median']:.0f} | "
          f"{row.get('graph_launches', 0)} / {row.get('graph_replays', 0)} / {row.get('graph_instantiations', 0)} / "
          f"{row.get('graph_updates', 0)} |")
PY
}
