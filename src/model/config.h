// Model hyper-parameters, read from GGUF metadata or an HF config.json.
// One struct for the whole Llama family (Llama-3.x, SmolLM2, Mistral) and Qwen3.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace elastic {

class GGUFFile;
struct HFConfig;

enum class Arch { Llama, Qwen3 };

struct RopeConfig {
    enum Type { None, Linear, Llama3 } type = None;
    float factor = 1.0f;
    float low_freq_factor = 1.0f;
    float high_freq_factor = 4.0f;
    int64_t original_max_pos = 8192;
};

struct ModelConfig {
    Arch arch = Arch::Llama;
    int n_layer = 0;
    int d_model = 0;     // hidden size
    int n_head = 0;      // query heads
    int n_kv_head = 0;   // key/value heads (GQA groups)
    int head_dim = 0;
    int d_ff = 0;        // SwiGLU inner size
    int vocab = 0;
    int max_ctx = 0;     // trained context length
    float rope_theta = 10000.0f;
    float rms_eps = 1e-5f;
    RopeConfig rope_scaling;
    bool tie_embeddings = false;
    bool qk_norm = false;  // Qwen3: RMSNorm over head_dim on q and k before RoPE
    std::string name;

    const char* arch_name() const { return arch == Arch::Qwen3 ? "qwen3" : "llama"; }
    // Checks internal consistency (heads divide, positive sizes); throws Error naming `what`.
    void validate(const std::string& what) const;
};

ModelConfig config_from_gguf(const GGUFFile& f);
ModelConfig config_from_hf(const HFConfig& c);
HFConfig config_to_hf(const ModelConfig& c);  // for `elastic convert` (GGUF -> HF)

// Recognises GGUF rope_freqs factors made by a known Llama-3 parameter set; on success sets
// c.rope_scaling to it (the factors are then redundant).
bool match_llama3_rope(ModelConfig& c, const std::vector<float>& freq_factors);

// Inverse frequencies of RoPE for each of head_dim/2 pairs, with rope scaling applied.
// `freq_factors` (GGUF rope_freqs.weight, may be empty) divide the frequencies.
std::vector<float> rope_inv_freq(const ModelConfig& c, const std::vector<float>& freq_factors = {});

}  // namespace elastic
