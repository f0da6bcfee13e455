set -uo pipefail
STEPS="deps build" OUT=/tmp/q2 bash scripts/device-check.sh > /tmp/q2-build.log 2>&1 || { tail -20 /tmp/q2-build.log; echo BUILD FAILED; exit 1; }
echo BUILT
