#!/bin/bash
# name, extra flags
name=$1; shift
OMP_WAIT_POLICY=PASSIVE build/bin/elastic train-router -m models/SmolLM2-135M-Instruct.Q4_1.gguf --data data.jsonl --config fa-ssa --steps 60 --batch 8 --max-seq 448 --sink 16 --local 64 --lr 1e-3 --seed 0 --gumbel --target-sensitive 0.5 -t 1 --log $name.jsonl -o $name.safetensors "$@" > $name.out 2>&1
