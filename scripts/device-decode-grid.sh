#!/usr/bin/env bash
# Issue 12: where the decode attention's fixed cost per call goes. Times one layer of decode
# attention (32/8 heads, d 128, bf16 cache; full and fa-ssa Ω 0.75) at CTX contexts:
#   - the default one-wave grid with ELASTIC_DECODE_TRACE=1: every CTA stamps %globaltimer at
#     entry, after its first stages are issued, after its stream, after writing its piece, past the
#     grid barrier and after the merge (cuda::decode_trace_summary(): min/median/max over CTAs);
#   - the default grid launched without the cooperative attribute (ELASTIC_DECODE_COOP=0);
#   - the grid capped at CTAS CTAs (ELASTIC_DECODE_CTAS; at most one CTA per KV head means no
#     pair is cut, so no grid barrier and no merge).
# Before that, the tests of TESTS (a gtest filter, default Cuda*; TESTS=none skips them).
# From the repository root, on a bare GPU machine:
#   bash scripts/device-decode-grid.sh
# Environment: CTAS (default "8 16 32 66 132"), CTX (default 1024,8192,32768), OUT (logs).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/decode-grid-logs}
NAME=decode-grid
. scripts/device-lib.sh
device_build
T=build-cuda/bin/elastic_tests
if [ "${TESTS:-Cuda*}" != none ]; then
  run test $T --gtest_filter="${TESTS:-Cuda*}"
  grep -E '^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure' "$LOGS/test.log" | head -30 | tee -a "$SUM"
fi
bench() { $E bench attention --backend cuda --seq 1024 --reps 1 --config fa-ssa --msr 0,0.75 --decode-ctx "${CTX:-1024,8192,32768}" 2>&1 | grep -E '^decode|^context'; }
note ""
note "### default grid, traced (ELASTIC_DECODE_TRACE=1)"
ELASTIC_DECODE_TRACE=1 bench | tee -a "$SUM"
note "### default grid, no trace"
bench | tee -a "$SUM"
note "### default grid, not cooperative (ELASTIC_DECODE_COOP=0)"
ELASTIC_DECODE_COOP=0 bench | tee -a "$SUM"
for n in ${CTAS:-8 16 32 66 132}; do
  note "### CTAs: $n (traced)"
  ELASTIC_DECODE_CTAS=$n ELASTIC_DECODE_TRACE=1 bench | tee -a "$SUM"
done
