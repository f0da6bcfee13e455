// Hugging Face `config.json` for the two architectures the engine runs: LlamaForCausalLM (Llama-2/3.x,
// SmolLM2, ...) and Qwen3ForCausalLM. Reads both the classic keys (rope_theta, rope_scaling,
// torch_dtype) and the transformers-5 ones (rope_parameters, dtype); writes the classic keys, which
// every transformers version accepts. Anything the engine cannot run (other architectures, yarn /
// dynamic rope, attention or MLP biases, sliding windows) is refused with one clear error.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace elastic {

struct RopeScaling {
    std::string type = "default";  // "default" (none), "linear" or "llama3"
    double factor = 1.0;           // linear, llama3
    double low_freq_factor = 1.0;  // llama3
    double high_freq_factor = 4.0;  // llama3
    int64_t original_max_position_embeddings = 0;  // llama3
};

struct HFConfig {
    std::string architecture;  // "LlamaForCausalLM" or "Qwen3ForCausalLM"
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;
    int64_t num_hidden_layers = 0;
    int64_t num_attention_heads = 0;
    int64_t num_key_value_heads = 0;  // default: num_attention_heads
    int64_t head_dim = 0;             // default: hidden_size / num_attention_heads
    int64_t vocab_size = 0;
    int64_t max_position_embeddings = 0;
    double rms_norm_eps = 0.0;
    double rope_theta = 10000.0;
    RopeScaling rope_scaling;  // type "default" when config.json has none
    bool tie_word_embeddings = false;
    std::optional<int64_t> bos_token_id;
    std::vector<int64_t> eos_token_ids;  // config.json may hold one id or a list
    std::string torch_dtype;             // "bfloat16", "float32", ... ("" if absent)

    bool is_qwen3() const { return architecture == "Qwen3ForCausalLM"; }
    const char* model_type() const { return is_qwen3() ? "qwen3" : "llama"; }
};

// `path` is a config.json or a directory holding one. Throws elastic::Error naming the file.
HFConfig parse_hf_config(const std::string& path);
// Same, from JSON text; `what` names the source in errors.
HFConfig parse_hf_config_text(const std::string& text, const std::string& what);
// config.json text that transformers' LlamaConfig / Qwen3Config loads back to the same values.
std::string write_hf_config(const HFConfig& c);

}  // namespace elastic
