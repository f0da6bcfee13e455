#!/usr/bin/env bash
# The committed fa-ssa router (bf16) against the fp32 file it was exported from (run 9's
# smollm2-fit.safetensors, in DIR as f32.safetensors), on the CPU: the plan of every prompt
# (`eval --predictions`), 3 samples per task at 2K and 4K, and code-next-line / ppl-prose at 2K.
# Writes OUT/{ruler,robust}-{f32,bf16}.json; ~20 min on 2 cores. Run from anywhere.
set -eu
cd "$(dirname "$0")/../../../.."
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
for n in f32 bf16; do
  r=$DIR/f32.safetensors; [ $n = bf16 ] && r=routers/smollm2-135m-fa-ssa.safetensors
  (
    build/bin/elastic eval ruler -m $M --tasks niah_single_1,niah_single_2,niah_multikey_1,fwe --lengths 2048,4096 \
      --samples 3 --seed 0 -t 1 --attention fa-ssa --router "$r" --sink 64 --local 512 --predictions -o "$OUT/ruler-$n.json" > /dev/null
    build/bin/elastic eval robust -m $M --tasks code-next-line,ppl-prose --lengths 2048 --samples 3 --seed 0 -t 1 \
      --attention fa-ssa --router "$r" --sink 64 --local 512 --predictions -o "$OUT/robust-$n.json" > /dev/null
  ) &
done
wait
python3 - "$OUT" <<'PY'
import json, sys
for kind in ("ruler", "robust"):
    a, b = (json.load(open(f"{sys.argv[1]}/{kind}-{n}.json"))["predictions"] for n in ("f32", "bf16"))
    diff = [(x["task"], x["length"], x["index"], sum(c != d for c, d in zip(x["plan"], y["plan"])))
            for x, y in zip(a, b) if x["plan"] != y["plan"]]
    same = sum(x["prediction"] == y["prediction"] for x, y in zip(a, b))
    print(f"{kind}: {len(a)} prompts, {len(a) - len(diff)} with the same plan, {same} with the same answer; differing: {diff}")
PY
