#!/usr/bin/env bash
# Which KV heads the routers keep on RULER prompts (CPU, 2K, 3 samples per task), with the plans in
# each prediction (`eval --predictions`). R6, R7: folders holding runs 6 and 7's fp32 routers
# (smollm2-fa-ssa.safetensors, smollm2-fit.safetensors from their device packs); OUT: where to write.
# Then: python3 an.py $OUT/*.json
set -eu
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
for r in run1:routers/smollm2-135m-fa-ssa.safetensors run6:$R6/smollm2-fa-ssa.safetensors run6fit:$R6/smollm2-fit.safetensors run7fit:$R7/smollm2-fit.safetensors; do
  n=${r%%:*}; f=${r#*:}
  build/bin/elastic eval ruler -m $M --tasks niah_single_2,niah_multikey_1,fwe --lengths 2048 --samples 3 --seed 0 \
    --attention fa-ssa --router "$f" --sink 64 --local 512 --predictions -o "$OUT/$n.json" > /dev/null
done
build/bin/elastic eval robust -m $M --tasks code-next-line --lengths 2048 --samples 3 --seed 0 --attention fa-ssa \
  --router "$R6/smollm2-fa-ssa.safetensors" --sink 64 --local 512 --predictions -o "$OUT/run6-code.json" > /dev/null
