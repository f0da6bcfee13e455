#!/usr/bin/env bash
# One complete GPU session in the background (the lent machine answers each call within 10
# minutes; the whole check takes longer). After .carry travelled (scripts/pack-device.sh: debs;
# .carry/fixtures: a copy of ../shared/fixtures; .carry/GPL-3; the model in .carry/model-a and
# .carry/model-b, carried in separate calls), from the repository root on the device machine:
#   bash scripts/device-run-all.sh start     # sets up, starts scripts/device-check.sh detached
#   bash scripts/device-run-all.sh status    # tail of the log; DONE when finished
#   bash scripts/device-run-all.sh collect   # copies logs and results to $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=/tmp/device-run-all.log
RES=/tmp/device-results
case ${1:-status} in
  start)
    [ -f /usr/share/common-licenses/GPL-3 ] || { mkdir -p /usr/share/common-licenses && cp .carry/GPL-3 /usr/share/common-licenses/GPL-3; }
    if [ -d .carry/fixtures ] && [ ! -d ../shared/fixtures ]; then mkdir -p ../shared && cp -r .carry/fixtures ../shared/; fi
    mkdir -p "$RES"
    setsid bash -c "OUT=$RES bash scripts/device-check.sh > $LOG 2>&1; echo DONE rc=\$? >> $LOG" < /dev/null > /dev/null 2>&1 &
    echo "started; log $LOG"
    ;;
  model)  # join the two carried halves of the default model
    mkdir -p models
    cat .carry/model-a/part0 .carry/model-b/part1 > models/SmolLM2-135M-Instruct.Q4_1.gguf
    sha256sum models/SmolLM2-135M-Instruct.Q4_1.gguf
    ;;
  status)
    grep -E "^=== device-check|DONE" "$LOG" | tail -4
    tail -n "${LINES_TAIL:-15}" "$LOG"
    ;;
  collect)  # one archive (the device tool returns at most 8 files) plus the log and the table
    mkdir -p "${OUT:?}"
    cp "$LOG" "$OUT/" 2>/dev/null
    cp "$RES/table.md" "$OUT/" 2>/dev/null
    tar czf "$OUT/results.tgz" -C "$RES" . "$LOG" 2>/dev/null
    ls -la "$OUT"
    ;;
esac
