// Hugging Face model directories with random weights, shaped like a real model (Qwen3-8B,
// Llama-3.1-8B) or tiny: for end-to-end benchmarks on a machine that cannot download the real
// weights (`elastic random-model`). The output is what Model::load reads: config.json,
// generation_config.json, tokenizer.json (+ tokenizer_config.json), sharded safetensors with
// model.safetensors.index.json.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "formats/hf-config.h"

namespace elastic {

struct RandomModelSpec {
    std::string arch = "qwen3-8b";  // a preset: random_model_archs()
    int64_t layers = 0;             // > 0 overrides the preset's num_hidden_layers
    int64_t vocab = 0;              // > 0 overrides the preset's vocab_size
    int64_t heads = 0;              // > 0 overrides num_attention_heads (query heads)
    int64_t kv_heads = 0;           // > 0 overrides num_key_value_heads (e.g. many unequal KV heads for tensor-parallel tests)
    std::string dtype = "bf16";     // bf16 or f32
    uint64_t seed = 1;
    std::string tokenizer;  // a tokenizer.json or a directory holding one; required
    std::string out;        // the directory to write; must be missing or empty unless force
    bool force = false;     // write into a non-empty directory (its config.json, model*.safetensors* go first)
    uint64_t max_shard_bytes = 5000000000;  // transformers' default max_shard_size ("5GB")
};

const std::vector<std::string>& random_model_archs();  // qwen3-8b, llama-3.1-8b, tiny-qwen3
// The config.json a spec writes (preset plus overrides; bos/eos are not set). Throws on an
// unknown arch or a bad override.
HFConfig random_model_config(const RandomModelSpec& s);

// Writes the directory. Matrices are near-normal (sum of four uniforms) with std 0.02,
// transformers' initializer_range; norm weights are 1. Each value is a hash of (seed, tensor,
// element), so the files do not depend on thread count or chunking. Weights are generated chunk by
// chunk while they are written: memory stays at a few chunk buffers. `log` gets progress lines
// (one per shard, then a summary). Returns the bytes of weights written.
uint64_t write_random_model(const RandomModelSpec& s, const std::function<void(const std::string&)>& log = nullptr);

}  // namespace elastic
