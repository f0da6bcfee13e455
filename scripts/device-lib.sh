# Shared by the device check scripts (scripts/device-{decode,graph,router}.sh), sourced from the
# repository root after they set LOGS (their log folder) and NAME (decode, graph, router):
# the dependency paths of the GPU machine, a summary file ($LOGS/$NAME-summary.md) written by
# note(), run NAME CMD... (output in $LOGS/NAME.log, one summary line with exit status and
# seconds) and device_build (unpacks .carry/debs when needed, else an incremental build).
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
