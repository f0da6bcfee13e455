// Conversion of tokenizer data between GGUF metadata (tokenizer.ggml.*) and HF tokenizer.json,
// for `elastic convert`. Byte-level BPE ("gpt2" model) only, with the pre-tokenizers we support:
// smollm, gpt2, llama-bpe (Llama-3), qwen2 (Qwen2/3).
#pragma once
#include <string>

namespace elastic {

class GGUFFile;
class GGUFWriter;

// tokenizer.json text for the tokenizer stored in a GGUF file's metadata.
std::string tokenizer_json_from_gguf(const GGUFFile& f);

// Adds tokenizer.ggml.* keys (model, pre, tokens, token_type, merges, bos/eos ids, chat template)
// taken from an HF tokenizer.json (and, if present beside it, tokenizer_config.json).
void tokenizer_to_gguf(const std::string& tokenizer_json_path, GGUFWriter& w, int64_t vocab_size = 0);

}  // namespace elastic
