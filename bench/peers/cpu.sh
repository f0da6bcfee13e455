#!/usr/bin/env bash
# Elastic against llama.cpp on the CPU, side by side on this machine: the same GGUF, the same thread
# count, runs interleaved (elastic, llama.cpp, elastic, llama.cpp, ...) so both see the same
# background load. Prefill of N tokens and decode at context N, N in LENGTHS.
#   bench/peers/cpu.sh                     # SmolLM2 Q4_1, LENGTHS 512,2048,8192, 3 rounds, 2 threads
#   ROUNDS=3 LENGTHS=512,2048 THREADS=2 GEN=32 MODEL=models/X.gguf bench/peers/cpu.sh
# elastic: `elastic bench model -p N -n GEN -r 1` (prefill tok/s of the N-token prompt, then decode
# tok/s of GEN tokens after it); llama.cpp: `llama-bench -p N -n 0` (prefill) and `llama-bench
# -p 0 -n GEN -d N` (decode at depth N), -r 1 each. Builds llama-bench first
# (scripts/peer-llama-cpp.sh). Prints one Markdown table: medians (min-max) and elastic / llama.cpp;
# raw JSON lines go to build-peers/cpu-RUN.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
rounds=${ROUNDS:-3}
lengths=${LENGTHS:-512,2048,8192}
threads=${THREADS:-2}
gen=${GEN:-32}
# llama.cpp's AMX buffer type (built by GGML_NATIVE on CPUs that list AMX) segfaults in its matmul on
# this VM (the CPU lists amx_tile but the first tile use crashes): --repack 0 keeps llama.cpp on its
# plain CPU path (AVX-512/VNNI dot products), as on any machine without AMX. LLAMA_ARGS overrides.
llama_args=${LLAMA_ARGS:---repack 0}
elastic=build/bin/elastic
[ -f "$model" ] || { echo "cpu.sh: $model missing (make model)" >&2; exit 1; }
[ -x "$elastic" ] || { echo "cpu.sh: $elastic missing (make build)" >&2; exit 1; }
llama=$(bash scripts/peer-llama-cpp.sh)
mkdir -p build-peers
raw=build-peers/cpu-$(date +%Y%m%d-%H%M%S).jsonl
echo "cpu.sh: $model, lengths $lengths, $rounds rounds, $threads threads, decode $gen tokens; raw: $raw" >&2
echo "cpu.sh: peer $(cat build-peers/llama.cpp/VERSION); kernels: ELASTIC_CPU_KERNELS=${ELASTIC_CPU_KERNELS:-auto}" >&2
IFS=, read -r -a ns <<< "$lengths"
for r in $(seq "$rounds"); do
  for n in "${ns[@]}"; do
    echo "cpu.sh: round $r/$rounds, N $n: elastic" >&2
    "$elastic" bench model -m "$model" -p "$n" -n "$gen" -r 1 -t "$threads" --attention full --json 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin)["results"][0]; print(json.dumps({"engine":"elastic","round":int(sys.argv[1]),"n":d["prompt_tokens"],"prefill":d["prefill_tok_s"]["median"],"decode":d["decode_tok_s"]["median"]}))' "$r" >> "$raw"
    echo "cpu.sh: round $r/$rounds, N $n: llama.cpp" >&2
    pp=$("$llama" -m "$model" -p "$n" -n 0 -t "$threads" -r 1 $llama_args -o json 2>/dev/null)
    tg=$("$llama" -m "$model" -p 0 -n "$gen" -d "$n" -t "$threads" -r 1 $llama_args -o json 2>/dev/null)
    python3 -c 'import json,sys
pp, tg = json.loads(sys.argv[2])[0], json.loads(sys.argv[3])[0]
print(json.dumps({"engine":"llama.cpp","round":int(sys.argv[1]),"n":pp["n_prompt"],"prefill":pp["avg_ts"],"decode":tg["avg_ts"],
                  "build":"%s %s" % (pp.get("build_number"), pp.get("build_commit"))}))' "$r" "$pp" "$tg" >> "$raw"
  done
done
python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ns = sorted({r["n"] for r in rows})
def cell(engine, n, key):
    v = [r[key] for r in rows if r["engine"] == engine and r["n"] == n]
    return statistics.median(v), min(v), max(v)
print("| | " + " | ".join(f"prefill {n}" for n in ns) + " | " + " | ".join(f"decode at {n}" for n in ns) + " |")
print("|---|" + "---:|" * (2 * len(ns)))
for e in ("elastic", "llama.cpp"):
    cells = [cell(e, n, k) for k in ("prefill", "decode") for n in ns]
    print(f"| {e} (tok/s) | " + " | ".join(f"{m:.1f} ({lo:.1f}-{hi:.1f})" for m, lo, hi in cells) + " |")
ratios = [cell("elastic", n, k)[0] / cell("llama.cpp", n, k)[0] for k in ("prefill", "decode") for n in ns]
print("| elastic / llama.cpp | " + " | ".join(f"{x:.2f}x" for x in ratios) + " |")
b = {r.get("build") for r in rows if r["engine"] == "llama.cpp"}
print(f"\nllama.cpp build (llama-bench): {', '.join(sorted(map(str, b)))}")
PY
