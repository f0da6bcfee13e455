#!/usr/bin/env bash
# Runs the libFuzzer targets in build-fuzz/bin/, each seeded from fuzz/corpus-<name without the
# fuzz- prefix>/ (copied to a temporary folder first: the committed seeds are never modified).
#   scripts/run-fuzzers.sh SECONDS            # every target for SECONDS each (make test-long: 60)
#   scripts/run-fuzzers.sh --runs 10000000    # every target until 10 M executions
# Environment: JOBS (targets run side by side, default 2), ONLY (a space list of target names),
# SUMMARY (a file that receives the Markdown table; default build-fuzz/summary.md).
# Prints one table row per target: executions, seconds, executions/s, final corpus, coverage
# edges, result. Exits non-zero if any target crashes, leaks, times out or reports a sanitizer
# error (its crash-* / leak-* / timeout-* files stay in build-fuzz/artifacts/<name>/).
# Build first: cmake --preset fuzz && cmake --build build-fuzz -j2   (or: make fuzz)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build-fuzz/bin"
limit=()
what=""
case "${1:-}" in
  --runs) limit=(-runs="${2:?--runs N}"); what="${2} executions" ;;
  ''|-*) echo "usage: scripts/run-fuzzers.sh SECONDS | --runs N" >&2; exit 2 ;;
  *) limit=(-max_total_time="$1"); what="${1} s" ;;
esac
jobs_n=${JOBS:-2}
summary=${SUMMARY:-$root/build-fuzz/summary.md}
shopt -s nullglob
fuzzers=()
for f in "$bin"/fuzz-*; do
  [ -x "$f" ] || continue
  n=$(basename "$f")
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $n "* ]]; then continue; fi
  fuzzers+=("$f")
done
if [ ${#fuzzers[@]} -eq 0 ]; then
  echo "run-fuzzers: no fuzzers in $bin (cmake --preset fuzz && cmake --build build-fuzz -j2)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
run_one() {  # one target; writes $work/<name>.row and .rc
  local f=$1 name corpus seeds artifacts t0 rc
  name="$(basename "$f")"
  corpus="$work/$name.corpus"
  mkdir -p "$corpus"
  seeds="$root/fuzz/corpus-${name#fuzz-}"
  if [ -d "$seeds" ]; then cp -r "$seeds"/. "$corpus"/; fi
  artifacts="$root/build-fuzz/artifacts/$name"
  mkdir -p "$artifacts"
  t0=$(date +%s.%N)
  set +e
  "$f" "${limit[@]}" -print_final_stats=1 -rss_limit_mb=2048 -timeout=20 -artifact_prefix="$artifacts/" "$corpus" \
    > "$work/$name.log" 2>&1
  rc=$?
  set -e
  local secs execs edges files
  secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')
  execs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$work/$name.log" | grep -oE "[0-9]+$" | tail -1)
  edges=$(grep -oE "cov: [0-9]+" "$work/$name.log" | tail -1 | grep -oE "[0-9]+")
  files=$(ls "$corpus" | wc -l)
  printf '| %s | %s | %.0f | %.0f | %s | %s | %s |\n' "$name" "${execs:-?}" "$secs" \
    "$(awk -v e="${execs:-0}" -v s="$secs" 'BEGIN { print (s > 0 ? e / s : 0) }')" "$files" "${edges:-?}" "$([ $rc -eq 0 ] && echo clean || echo "FAILED (exit $rc)")" \
    > "$work/$name.row"
  echo "$rc" > "$work/$name.rc"
  if [ $rc -ne 0 ]; then
    tail -n 40 "$work/$name.log" > "$artifacts/last-log.txt"
    echo "run-fuzzers: $name FAILED; log tail in $artifacts/last-log.txt" >&2
  fi
}

echo "run-fuzzers: ${#fuzzers[@]} target(s), $what each, $jobs_n at a time" >&2
running=0
for f in "${fuzzers[@]}"; do
  run_one "$f" &
  running=$((running + 1))
  if [ $running -ge "$jobs_n" ]; then wait -n; running=$((running - 1)); fi
done
wait

{
  echo "| target | executions | seconds | executions/s | corpus files | coverage edges | result |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for f in "${fuzzers[@]}"; do cat "$work/$(basename "$f").row"; done
} | tee "$summary"
failed=0
for f in "${fuzzers[@]}"; do [ "$(cat "$work/$(basename "$f").rc")" = 0 ] || failed=$((failed + 1)); done
if [ $failed -gt 0 ]; then
  echo "run-fuzzers: $failed target(s) failed" >&2
  exit 1
fi
echo "run-fuzzers: all ${#fuzzers[@]} target(s) clean ($what each)" >&2
