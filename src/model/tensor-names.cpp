#include "model/tensor-names.h"

namespace elastic {

const std::vector<MatrixSlot> kLayerMatrices = {
    {&LayerWeights::wq, "attn_q.weight", "self_attn.q_proj.weight"},
    {&LayerWeights::wk, "attn_k.weight", "self_attn.k_proj.weight"},
    {&LayerWeights::wv, "attn_v.weight", "self_attn.v_proj.weight"},
    {&LayerWeights::wo, "attn_output.weight", "self_attn.o_proj.weight"},
    {&LayerWeights::w_gate, "ffn_gate.weight", "mlp.gate_proj.weight"},
    {&LayerWeights::w_up, "ffn_up.weight", "mlp.up_proj.weight"},
    {&LayerWeights::w_down, "ffn_down.weight", "mlp.down_proj.weight"},
};

const std::vector<VectorSlot> kLayerVectors = {
    {&LayerWeights::attn_norm, "attn_norm.weight", "input_layernorm.weight", false},
    {&LayerWeights::ffn_norm, "ffn_norm.weight", "post_attention_layernorm.weight", false},
    {&LayerWeights::q_norm, "attn_q_norm.weight", "self_attn.q_norm.weight", true},
    {&LayerWeights::k_norm, "attn_k_norm.weight", "self_attn.k_norm.weight", true},
};

std::string layer_prefix(Layout l, int layer) {
    return (l == Layout::GGUF ? "blk." : "model.layers.") + std::to_string(layer) + ".";
}
const char* embedding_name(Layout l) { return l == Layout::GGUF ? "token_embd.weight" : "model.embed_tokens.weight"; }
const char* output_name(Layout l) { return l == Layout::GGUF ? "output.weight" : "lm_head.weight"; }
const char* output_norm_name(Layout l) { return l == Layout::GGUF ? "output_norm.weight" : "model.norm.weight"; }

std::pair<int64_t, int64_t> matrix_shape(const ModelConfig& c, Weight LayerWeights::*f) {
    const int64_t D = c.d_model, q = int64_t(c.n_head) * c.head_dim, kv = int64_t(c.n_kv_head) * c.head_dim;
    if (f == &LayerWeights::wq) return {q, D};
    if (f == &LayerWeights::wk || f == &LayerWeights::wv) return {kv, D};
    if (f == &LayerWeights::wo) return {D, q};
    if (f == &LayerWeights::w_down) return {D, c.d_ff};
    return {c.d_ff, D};  // gate, up
}

int64_t vector_length(const ModelConfig& c, std::vector<float> LayerWeights::*f) {
    return f == &LayerWeights::q_norm || f == &LayerWeights::k_norm ? c.head_dim : c.d_model;
}

bool gguf_permutes(const ModelConfig& c, Weight LayerWeights::*f) {
    return c.arch == Arch::Llama && (f == &LayerWeights::wq || f == &LayerWeights::wk);
}

int qk_heads(const ModelConfig& c, Weight LayerWeights::*f) { return f == &LayerWeights::wq ? c.n_head : c.n_kv_head; }

}  // namespace elastic
