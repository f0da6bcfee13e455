#!/usr/bin/env bash
# A short GPU check for a lease with little time left (run from the repository root on the device
# machine, after .carry/debs travelled and the model was joined into models/): dependencies and
# build (scripts/device-check.sh steps deps + build), the GPU tests without the model, SmolLM2
# log-probs CUDA vs CPU (auto = f32, and bf16), the demo answer, and the kernel table at 32K/128K.
# Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-quick}
mkdir -p "$OUT"
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
STEPS="deps build" OUT=$OUT bash scripts/device-check.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export LD_LIBRARY_PATH="/tmp/deps/usr/lib/x86_64-linux-gnu:/tmp/deps/usr/lib/x86_64-linux-gnu/openblas-pthread:/tmp/deps/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_WAIT_POLICY=PASSIVE
E=build-cuda/bin/elastic
echo "== GPU tests (no model)"
ELASTIC_MODEL=/nonexistent build-cuda/bin/elastic_tests --gtest_brief=1 --gtest_filter='Ops*:Cuda*:Elastic*:Model*:Precision*:Sampler*' 2>&1 | tail -8
echo "== log-probs CUDA vs CPU"
head -c 9200 /usr/share/common-licenses/GPL-3 > /tmp/doc.txt 2>/dev/null || head -c 9200 .carry/GPL-3 > /tmp/doc.txt
"$E" ppl -m "$M" -f /tmp/doc.txt --ctx 2048 --per-token --json --backend cpu > "$OUT/ppl-cpu.json"
for p in auto bf16; do
  "$E" ppl -m "$M" -f /tmp/doc.txt --ctx 2048 --per-token --json --backend cuda --precision $p > "$OUT/ppl-cuda-$p.json"
  python3 - "$OUT/ppl-cpu.json" "$OUT/ppl-cuda-$p.json" $p <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
d = [abs(x["logprob"] - y["logprob"]) for x, y in zip(a["per_token"], b["per_token"]) if x["logprob"] is not None]
print(f"precision {sys.argv[3]}: scored {len(d)}: max |d log-prob| {max(d):.3e}, mean {sum(d)/len(d):.3e}; ppl cpu {a['ppl']:.4f} cuda {b['ppl']:.4f}")
PY
done
echo "== demo question"
for b in "cpu" "cuda" "cuda --precision bf16"; do
  echo "--backend $b: $("$E" run -m "$M" --backend $b --chat -p "What is the capital of France?" -n 12 --temp 0 -v 2>&1 | tr '\n' ' ')"
done
echo "== kernels (32/8 heads, d 128, bf16, sink 128, local 2048)"
"$E" bench attention --backend cuda --precision bf16 --config fa-ssa --seq 32768,131072 --msr 0,0.75 --decode-ctx 32768,131072 -r 5 | tee "$OUT/kernels.md"
echo "== model throughput (SmolLM2, cuda auto)"
"$E" bench model -m "$M" --backend cuda -r 3 -p 2048,8192 -n 32
