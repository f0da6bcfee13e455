// The names of a model's tensors in the two layouts we read and write (GGUF and HF safetensors),
// one table shared by the loader and `elastic convert`.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace elastic {

enum class Layout { GGUF, HF };

struct MatrixSlot {
    Weight LayerWeights::*field;
    const char* gguf;
    const char* hf;
};
struct VectorSlot {
    std::vector<float> LayerWeights::*field;
    const char* gguf;
    const char* hf;
    bool qk_norm;  // present only in models with q/k norm (Qwen3)
};

extern const std::vector<MatrixSlot> kLayerMatrices;  // wq, wk, wv, wo, w_gate, w_up, w_down
extern const std::vector<VectorSlot> kLayerVectors;   // attn_norm, ffn_norm, q_norm, k_norm

inline const char* slot_name(Layout l, const MatrixSlot& s) { return l == Layout::GGUF ? s.gguf : s.hf; }
inline const char* slot_name(Layout l, const VectorSlot& s) { return l == Layout::GGUF ? s.gguf : s.hf; }
std::string layer_prefix(Layout l, int layer);  // "blk.3." or "model.layers.3."
const char* embedding_name(Layout l);           // token_embd.weight / model.embed_tokens.weight
const char* output_name(Layout l);              // output.weight / lm_head.weight
const char* output_norm_name(Layout l);         // output_norm.weight / model.norm.weight

std::pair<int64_t, int64_t> matrix_shape(const ModelConfig& c, Weight LayerWeights::*field);  // [rows, cols]
int64_t vector_length(const ModelConfig& c, std::vector<float> LayerWeights::*field);
// GGUF stores Q/K rows of llama models permuted (llama.cpp's convert): true for wq/wk of Arch::Llama.
bool gguf_permutes(const ModelConfig& c, Weight LayerWeights::*field);
int qk_heads(const ModelConfig& c, Weight LayerWeights::*field);  // n_head for wq, n_kv_head for wk

}  // namespace elastic
