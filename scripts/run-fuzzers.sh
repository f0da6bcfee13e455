#!/usr/bin/env bash
# Runs every libFuzzer target in build-fuzz/bin/ for SECONDS each, seeded from
# fuzz/corpus-<name without the fuzz- prefix>/ when that folder exists. The corpus is copied to a
# temporary folder first, so the committed seeds are never modified. Exits non-zero if any fuzzer
# crashes (its crash-* / leak-* / timeout-* files are left in build-fuzz/artifacts/<name>/).
# Build first: cmake --preset fuzz && cmake --build build-fuzz -j2
set -euo pipefail

seconds="${1:?usage: scripts/run-fuzzers.sh SECONDS}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build-fuzz/bin"
shopt -s nullglob
fuzzers=("$bin"/fuzz-*)
if [ ${#fuzzers[@]} -eq 0 ]; then
    echo "run-fuzzers: no fuzzers in $bin (cmake --preset fuzz && cmake --build build-fuzz -j2)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for f in "${fuzzers[@]}"; do
    [ -x "$f" ] || continue
    name="$(basename "$f")"
    corpus="$work/$name"
    mkdir -p "$corpus"
    seeds="$root/fuzz/corpus-${name#fuzz-}"
    if [ -d "$seeds" ]; then cp -r "$seeds"/. "$corpus"/; fi
    artifacts="$root/build-fuzz/artifacts/$name"
    mkdir -p "$artifacts"
    echo "== $name: ${seconds}s, $(ls "$corpus" | wc -l) seeds"
    if "$f" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" \
        >"$work/$name.log" 2>&1; then
        grep -E "stat::number_of_executed_units|cov:" "$work/$name.log" | tail -2 || true
        echo "   ok"
    else
        tail -n 40 "$work/$name.log"
        echo "   FAILED: $name (artifacts in $artifacts)"
        failed+=("$name")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "run-fuzzers: ${#failed[@]} fuzzer(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "run-fuzzers: all ${#fuzzers[@]} fuzzer(s) ran ${seconds}s clean"
