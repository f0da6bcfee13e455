#!/usr/bin/env bash
# llama.cpp's llama-bench (CUDA) against `elastic bench model` on the GPU machine, both on the same
# GGUF file: a Qwen3-8B-shaped random model, bf16, a 32K-token prompt.
# From the repository root, after our own build (build-cuda/bin/elastic; e.g. scripts/device-check.sh
# or scripts/device-graph.sh ran first, so /tmp/deps and its LD_LIBRARY_PATH exist):
#   bash scripts/device-llama-peer.sh
# Needs .carry/llama-cuda/llama-bench.xz (built on the build machine by
# `CUDA=1 JOBS=2 nice -n 19 scripts/peer-llama-cpp.sh`; carry .carry/llama-cuda).
# Steps (each line of the summary says how it went, with seconds):
#   unpack  llama-bench to /tmp/llama-cuda; its version, devices, and any shared library not found
#   model   /tmp/qwen3-8b-random (random-model --arch qwen3-8b, as scripts/device-graph.sh; kept if
#           present) and /tmp/qwen3-8b-random.gguf (elastic convert --type bf16; kept if present and
#           loadable by llama.cpp). The 16.4 GB of weights are written twice (safetensors, then
#           GGUF): about 33 GB in /tmp, most of this script's time when neither exists. The
#           convert is one thread and holds ~3.5x the model in memory (11.4 GB peak RSS for a 3.3 GB
#           2-layer version on the build machine, 53 s there): expect ~55 GB and 1.5-3 minutes.
#   bench   llama-bench -ngl 99 -fa 1 -p 32768 -n 0 (prefill; ubatch 512 = llama.cpp's default, and
#           2048) and -p 0 -n 64 -d 32768 (decode 64 tokens at depth 32K; llama-bench computes the
#           depth once, untimed, and restores it for the later reps), then elastic bench model
#           --backend cuda -p 32768 -n 64 --attention full on the same GGUF; tok/s of both in the summary.
# The GGUF: `elastic convert` pads the token list to the embedding's rows (Qwen3: 151669 tokens,
# 151936 rows) with "[PAD<id>]" entries, as llama.cpp needs (it takes n_vocab from the list); a GGUF
# left from before that fix is converted again.
# Environment: OUT (logs and llama-summary.md; default build-cuda/llama-logs), REPS (2), UB (the
# prefill ubatch sizes, "512,2048"), CLEAN=1 (delete the GGUF at the end); for a smoke test
# elsewhere: ARCH (qwen3-8b; tiny-qwen3), PROMPT (32768), GEN (64), BACKEND (cuda), LLAMA_BENCH
# (a llama-bench to use instead of the carried one).
# About 2 minutes with the GGUF present, 4-6 minutes when the model and the GGUF must be written.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-build-cuda/llama-logs}
NAME=llama
. scripts/device-lib.sh
REPS=${REPS:-2}
UB=${UB:-512,2048}
ARCH=${ARCH:-qwen3-8b}
PROMPT=${PROMPT:-32768}
GEN=${GEN:-64}
BACKEND=${BACKEND:-cuda}
note "## device-llama-peer $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
[ -x "$E" ] || { note "no $E: build it first (scripts/device-check.sh)"; exit 1; }
[ -n "${LLAMA_BENCH:-}" ] || [ -f .carry/llama-cuda/llama-bench.xz ] || { note "no .carry/llama-cuda/llama-bench.xz: run CUDA=1 scripts/peer-llama-cpp.sh on the build machine and carry .carry/llama-cuda"; exit 1; }

# --- unpack -----------------------------------------------------------------------------------------
LB=${LLAMA_BENCH:-/tmp/llama-cuda/llama-bench}
mkdir -p /tmp/llama-cuda
if [ -z "${LLAMA_BENCH:-}" ] && { [ ! -x "$LB" ] || [ .carry/llama-cuda/llama-bench.xz -nt "$LB" ]; }; then
  xz -dc .carry/llama-cuda/llama-bench.xz > "$LB.tmp" && chmod +x "$LB.tmp" && mv "$LB.tmp" "$LB"
fi
# cudart/cuBLAS 13 from the toolkit (our elastic finds them through its RUNPATH /usr/local/cuda/lib;
# llama-bench has none), after device-lib.sh's paths (libgomp.so.1 fallback among them).
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
export LD_LIBRARY_PATH
note "- llama-bench: $LB: $(if [ -n "${LLAMA_BENCH:-}" ]; then "$LB" --version 2>&1 | tail -1; else head -1 .carry/llama-cuda/VERSION; fi)"
missing=$(ldd "$LB" 2>&1 | grep 'not found' | tr -s ' \t' ' ' | tr '\n' ';')
[ -n "$missing" ] && note "- MISSING shared libraries: $missing"
ldd "$LB" > "$LOGS/ldd.log" 2>&1
"$LB" --list-devices > "$LOGS/devices.log" 2>&1
note "- devices: $(grep -E 'CUDA|Available' "$LOGS/devices.log" | tr -s ' ' | tr '\n' ';')"

# --- model -------------------------------------------------------------------------------------------
qwen3_tokenizer
dir=/tmp/$ARCH-random
GGUF=/tmp/$ARCH-random.gguf
t0=$SECONDS
if [ ! -f "$dir/config.json" ]; then
  run model "$E" random-model --arch "$ARCH" --tokenizer /tmp/qwen3-tok -o "$dir" --force || exit 1
fi
# Whether the token list of GGUF $1 is as long as config.json's vocab_size (prints both counts).
gguf_ok() {
  python3 - "$dir/config.json" "$1" <<'PY'
import json, struct, sys
n_vocab = json.load(open(sys.argv[1]))["vocab_size"]
f = open(sys.argv[2], "rb")
def rd(fmt):
    return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
def skip(t):
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    if t in sizes: f.seek(sizes[t], 1)
    elif t == 8: f.seek(rd("Q"), 1)
    elif t == 9:
        et, n = rd("I"), rd("Q")
        for _ in range(n): skip(et)
if f.read(4) != b"GGUF": sys.exit(1)
rd("I"); rd("Q"); nkv = rd("Q")
for _ in range(nkv):
    key = f.read(rd("Q")).decode(); t = rd("I")
    if key == "tokenizer.ggml.tokens":
        rd("I"); n = rd("Q")
        print(f"{n} tokens, vocab_size {n_vocab}")
        sys.exit(0 if n == n_vocab else 1)
    skip(t)
sys.exit(1)
PY
}
if [ -f "$GGUF" ] && ! gguf_ok "$GGUF" > /dev/null; then
  note "- $GGUF exists but its token list does not match vocab_size (unpadded conversion): converting again"
  rm -f "$GGUF"
fi
if [ ! -f "$GGUF" ]; then
  run convert "$E" convert "$dir" "${GGUF%.gguf}.partial.gguf" --type bf16 --force &&
    mv "${GGUF%.gguf}.partial.gguf" "$GGUF" || exit 1
fi
note "- model ready in $((SECONDS - t0)) s: $GGUF ($(du -h "$GGUF" | cut -f1); $(gguf_ok "$GGUF")); /tmp: $(df -h /tmp | awk 'NR==2 {print $4 " free"}')"

# --- bench -------------------------------------------------------------------------------------------
llama() {  # llama NAME SECONDS ARGS...: JSON to $LOGS/NAME.json, stderr to $LOGS/NAME.log (through run)
  local name=$1 t=$2; shift 2
  timeout "$t" "$LB" -m "$GGUF" "$@" -o json > "$LOGS/$name.json"
}
run llama-prefill llama llama-prefill 300 -ngl 99 -fa 1 -p "$PROMPT" -n 0 -ub "$UB" -r "$REPS" --progress
run llama-decode llama llama-decode 240 -ngl 99 -fa 1 -p 0 -n "$GEN" -d "$PROMPT" -r "$REPS" --progress
run elastic timeout 300 "$E" bench model -m "$GGUF" --backend "$BACKEND" -p "$PROMPT" -n "$GEN" -r "$REPS" --json --attention full

note ""
note "### $ARCH shape, random bf16 weights, same GGUF; tok/s (llama.cpp: mean ± sd of $REPS reps; elastic: median (range))"
note "| engine | test | tok/s | settings |"
note "|---|---|---|---|"
python3 - "$LOGS" <<'PY' | tee -a "$SUM"
import json, os, sys
logs = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(logs, name + ".json")))
    except Exception as e:
        print(f"| llama.cpp | {name} | FAILED ({type(e).__name__}; see {name}.log) | |")
        return []
for name in ("llama-prefill", "llama-decode"):
    for r in load(name):
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']} @ d{r['n_depth']}"
        print(f"| llama.cpp | {test} | {r['avg_ts']:.1f} ± {r['stddev_ts']:.1f} | fa {r['flash_attn']}, ngl {r['n_gpu_layers']}, "
              f"batch {r['n_batch']}, ubatch {r['n_ubatch']}, KV {r['type_k']}/{r['type_v']}, {r['gpu_info']} |")
row = None
try:
    for line in open(os.path.join(logs, "elastic.log")):
        if line.startswith("{"):
            row = json.loads(line)
except OSError:
    pass
if row is None:
    print("| elastic | prefill / decode | FAILED (see elastic.log) | |")
else:
    r = row["results"][0]
    p, d = r["prefill_tok_s"], r["decode_tok_s"]
    extra = ", ".join(f"{k} {row[k]}" for k in ("precision", "device") if k in row)
    print(f"| elastic | pp{r['prompt_tokens']} | {p['median']:.1f} ({p['min']:.1f}-{p['max']:.1f}) | attention {r['attention']}{', ' + extra if extra else ''} |")
    print(f"| elastic | tg{r['gen_tokens']} @ d{r['prompt_tokens']} | {d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f}) | attention {r['attention']}, KV {r.get('kv_bytes', 0) / 2**30:.2f} GiB |")
PY
[ "${CLEAN:-0}" = 1 ] && rm -f "$GGUF" && note "- removed $GGUF"
echo
echo "summary: $SUM"
