// Weights of a Llama-family / Qwen3 model in HF's canonical layout, kept compact:
// matrices stay in their stored type (quantised, bf16, f16, f32) and, where possible, inside the
// mapped file; only GGUF's permuted Q/K rows and the small norm vectors are copied.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/config.h"

namespace elastic {

struct TensorRef;

// A matrix W[rows, cols] stored row by row (a Linear weight: rows = out, cols = in).
struct Weight {
    DType type = DType::F32;
    int64_t rows = 0, cols = 0;
    size_t row_bytes = 0;
    const uint8_t* data = nullptr;
    std::shared_ptr<std::vector<uint8_t>> owned;  // set when data is a private copy
    // Decode multiplies this weight with fp32 activations, never Q8-quantised ones (cpu::matmul):
    // set for the output projection and the FFN down projection, whose inputs (the final hidden
    // state, the SwiGLU product) have outlier channels that one int8 scale per 32 elements
    // flattens enough to change SmolLM2's greedy answers.
    bool f32_activations = false;

    const uint8_t* row(int64_t r) const { return data + size_t(r) * row_bytes; }
    size_t nbytes() const { return size_t(rows) * row_bytes; }
    bool empty() const { return data == nullptr; }
};

struct LayerWeights {
    std::vector<float> attn_norm;   // [d_model]
    std::vector<float> ffn_norm;    // [d_model]
    std::vector<float> q_norm;      // [head_dim], Qwen3 only
    std::vector<float> k_norm;      // [head_dim], Qwen3 only
    Weight wq;                      // [n_head*head_dim, d_model]
    Weight wk;                      // [n_kv_head*head_dim, d_model]
    Weight wv;                      // [n_kv_head*head_dim, d_model]
    Weight wo;                      // [d_model, n_head*head_dim]
    Weight w_gate;                  // [d_ff, d_model]
    Weight w_up;                    // [d_ff, d_model]
    Weight w_down;                  // [d_model, d_ff]
};

struct ModelWeights {
    Weight tok_embd;                // [vocab, d_model]
    Weight output;                  // [vocab, d_model] (= tok_embd when tied)
    std::vector<float> out_norm;    // [d_model]
    std::vector<float> rope_freqs;  // [head_dim/2] GGUF llama3 frequency factors, or empty
    std::vector<LayerWeights> layers;
    std::vector<std::shared_ptr<void>> keep_alive;  // the mapped files the weights point into
    size_t bytes() const;           // bytes of all matrices as stored
};

// Builds a Weight over a stored tensor, checking its shape is [rows, cols].
Weight weight_from_tensor(const TensorRef& t, int64_t rows, int64_t cols, const std::string& what);
// Reads a vector of n elements (any plain or quantised type) into float.
std::vector<float> vector_from_tensor(const TensorRef& t, int64_t n, const std::string& what);
// Undoes llama.cpp's Q/K row permutation (GGUF stores rotary pairs interleaved per head).
Weight unpermute_qk_rows(const Weight& w, int n_heads, int head_dim);
// The inverse: HF layout to GGUF's (used when writing GGUF).
Weight permute_qk_rows(const Weight& w, int n_heads, int head_dim);
// All elements of w as float32, row-major [rows, cols].
std::vector<float> weight_to_f32(const Weight& w);
// Rows [r0, r0 + n) of w: a view into the same storage (no copy; it keeps w's owned copy alive).
Weight weight_rows(const Weight& w, int64_t r0, int64_t n);
// Columns [c0, c0 + n) of w as a compact matrix [rows, n] (a copy: rows of a Weight are contiguous).
// The stored type is kept when c0 and n fall on its block boundaries, so products give the same
// per-block terms as the whole matrix; otherwise the copy is fp32.
Weight weight_cols(const Weight& w, int64_t c0, int64_t n);

}  // namespace elastic
