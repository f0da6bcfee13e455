#!/usr/bin/env python3
"""Writes the seed corpus of fuzz-gguf (fuzz/corpus-gguf/*.gguf) with the reference writer, the Python
`gguf` package (0.19), so the seeds also cross-check our reader (tests/test-gguf.cpp reads them).
Quantised tensors are written as raw blocks with hand-chosen bytes. Run from the repo root:
    python3 fuzz/make-gguf-corpus.py
"""
import os
import numpy as np
import gguf

OUT = os.path.join(os.path.dirname(__file__), "corpus-gguf")
Q = gguf.GGMLQuantizationType


def raw_blocks(n_blocks, block_bytes, seed):
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    return b


def with_d(blocks, offsets):
    # Put small, finite fp16 constants (0.5, 0.25, ...) at the given byte offsets of each block.
    for k, off in enumerate(offsets):
        blocks[:, off:off + 2] = np.frombuffer(np.float16(0.5 / (k + 1)).tobytes(), dtype=np.uint8)
    return blocks


def meta_file(path):
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("general.flag", True)
    w.add_int8("t.i8", -3)
    w.add_uint64("t.u64", 1 << 40)
    w.add_float64("t.f64", 0.125)
    w.add_string("general.name", "seed")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bc"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.0])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_tensor("f32", np.arange(8, dtype=np.float32).reshape(2, 4))
    w.add_tensor("f16", np.linspace(-1, 1, 16).astype(np.float16))
    w.add_tensor("q8_0", with_d(raw_blocks(2, 34, 1), [0]), raw_dtype=Q.Q8_0)
    w.add_tensor("q4_1", with_d(raw_blocks(1, 20, 2), [0, 2]), raw_dtype=Q.Q4_1)
    write(w)


def kquant_file(path):
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("general.alignment", 32)
    w.add_tensor("q4_0", with_d(raw_blocks(1, 18, 3), [0]), raw_dtype=Q.Q4_0)
    w.add_tensor("q4_k", with_d(raw_blocks(1, 144, 4), [0, 2]), raw_dtype=Q.Q4_K)
    w.add_tensor("q6_k", with_d(raw_blocks(1, 210, 5), [208]), raw_dtype=Q.Q6_K)
    w.add_tensor("bf16", np.array([0x3f80, 0xc0a0, 0, 0x4000], dtype=np.uint16), raw_shape=[4], raw_dtype=Q.BF16)
    w.add_tensor("i32", np.array([1, -2, 3], dtype=np.int32))
    write(w)


def write(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    meta_file(os.path.join(OUT, "meta.gguf"))
    kquant_file(os.path.join(OUT, "kquants.gguf"))
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)), "bytes")
