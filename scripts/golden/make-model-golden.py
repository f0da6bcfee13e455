#!/usr/bin/env python3
"""Golden log-probs from Hugging Face transformers, for the C++ model tests.

  tiny     Writes two tiny random checkpoints with HF's own save_pretrained (a Qwen3 and a Llama
           with llama3 rope scaling) into tests/data/, and their log-probs on random ids into
           tests/golden/logprobs-tiny-{qwen3,llama3}.json.
  smollm2  HF_DIR: the SmolLM2 directory written by `elastic convert` from the GGUF. Writes
           tests/golden/logprobs-smollm2.json: per-token log-probs of a few prompts, one of more
           than 2000 tokens, tokenised by HF `tokenizers` from HF_DIR/tokenizer.json.

HF runs in float32, on the CPU by default (TF32 does not apply there), or on the GPU with
ELASTIC_GOLDEN_DEVICE=cuda (TF32 switched off). `compare A.json B.json` prints the largest
difference between two golden files' log-probs (e.g. a GPU-made file against the committed one).
Each file records the library versions that produced it. Run from the repository root, e.g.
  build/bin/elastic convert models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-hf
  python3 scripts/golden/make-model-golden.py smollm2 /tmp/smollm2-hf
  python3 scripts/golden/make-model-golden.py tiny
"""
import json
import sys

import torch
import transformers

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_default_dtype(torch.float32)


def versions():
    import tokenizers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


DEVICE = __import__("os").environ.get("ELASTIC_GOLDEN_DEVICE", "cpu")


@torch.no_grad()
def logprobs(model, ids):
    x = torch.tensor([ids], dtype=torch.long, device=DEVICE)
    logits = model(x).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1).cpu()
    tgt = torch.tensor(ids[1:])
    return lp[:-1].gather(1, tgt[:, None])[:, 0].tolist(), lp[-1].topk(5)


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norm weights around 1
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:  # larger than HF's init so that the distributions are far from uniform
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1] ** 0.5) * 2.0)


def tiny():
    cases = {
        "qwen3": transformers.Qwen3Config(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, rope_theta=1e6, rms_norm_eps=1e-6,
            tie_word_embeddings=False),
        "llama3": transformers.LlamaConfig(
            vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64}),
    }
    for i, (name, cfg) in enumerate(cases.items()):
        torch.manual_seed(100 + i)
        cls = transformers.Qwen3ForCausalLM if name == "qwen3" else transformers.LlamaForCausalLM
        model = cls(cfg).float().eval()
        randomise(model, 1000 + i)
        model.save_pretrained(f"tests/data/tiny-{name}", safe_serialization=True)
        g = torch.Generator().manual_seed(7 + i)
        ids = torch.randint(0, cfg.vocab_size, (300,), generator=g).tolist()
        lp, top = logprobs(model, ids)
        out = {"versions": versions(), "model": f"tests/data/tiny-{name}", "cases": [
            {"name": "random-300", "ids": ids, "logprobs": lp,
             "last_top5_ids": top.indices.tolist(), "last_top5_logprobs": top.values.tolist()}]}
        with open(f"tests/golden/logprobs-tiny-{name}.json", "w") as f:
            json.dump(out, f)
        print(name, "ok", len(lp))


def compare(a, b):
    ca, cb = json.load(open(a))["cases"], json.load(open(b))["cases"]
    for x, y in zip(ca, cb):
        assert x["ids"] == y["ids"], x["name"]
        d = max(abs(p - q) for p, q in zip(x["logprobs"], y["logprobs"]))
        print(f"{x['name']}: {len(x['ids'])} tokens, max |Δ log-prob| = {d:.2e}")


def smollm2(hf_dir, out="tests/golden/logprobs-smollm2.json"):
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(f"{hf_dir}/tokenizer.json")
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval().to(DEVICE)
    gpl = open("/usr/share/common-licenses/GPL-3").read()
    texts = {
        "short": "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is",
        "chat": "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
        "long-gpl3": gpl,
    }
    cases = []
    for name, text in texts.items():
        ids = tok.encode(text, add_special_tokens=False).ids
        if name == "long-gpl3":
            ids = ids[:2100]
        lp, top = logprobs(model, ids)
        cases.append({"name": name, "ids": ids, "logprobs": lp,
                      "last_top5_ids": top.indices.tolist(), "last_top5_logprobs": top.values.tolist()})
        print(name, len(ids), "tokens")
    doc = {"versions": versions(), "device": DEVICE,
           "model": "SmolLM2-135M-Instruct.Q4_1.gguf via elastic convert (f32)", "cases": cases}
    with open(out, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "tiny":
        tiny()
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "smollm2":
        smollm2(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
