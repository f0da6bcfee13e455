// tests/data/tiny-qwen3 widened to head_dim 64 (the CUDA attention kernels take 64 or 128; the
// file's is 32), for CUDA tests that need a whole model on a GPU machine without downloads.
#pragma once
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "model/model.h"
#include "test-helpers.h"

namespace elastic::test {

inline Weight f32_weight(const std::vector<float>& x, int64_t rows, int64_t cols) {
    Weight w;
    w.type = DType::F32;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = size_t(cols) * 4;
    w.owned = std::make_shared<std::vector<uint8_t>>(x.size() * 4);
    std::memcpy(w.owned->data(), x.data(), x.size() * 4);
    w.data = w.owned->data();
    return w;
}

// tests/data/tiny-qwen3 at head_dim 64: new random wq, wk, wv, wo (std 1/sqrt(fan-in)), the q/k
// norm weights repeated to the new width, RoPE frequencies for it; embeddings, norms and FFN as stored.
inline std::unique_ptr<Model> tiny_qwen3_head_dim_64() {
    auto m = Model::load(source_path("tests/data/tiny-qwen3"));
    ModelConfig& c = m->config;
    const int old_hd = c.head_dim;
    c.head_dim = 64;
    const int64_t D = c.d_model, qd = int64_t(c.n_head) * c.head_dim, kvd = int64_t(c.n_kv_head) * c.head_dim;
    std::mt19937_64 rng(11);
    auto widened = [&](const std::vector<float>& v) {
        std::vector<float> r(size_t(c.head_dim));
        for (size_t i = 0; i < r.size(); ++i) r[i] = v[i % size_t(old_hd)];
        return r;
    };
    for (LayerWeights& L : m->weights.layers) {
        L.wq = f32_weight(randn(size_t(qd * D), rng, 1.0f / std::sqrt(float(D))), qd, D);
        L.wk = f32_weight(randn(size_t(kvd * D), rng, 1.0f / std::sqrt(float(D))), kvd, D);
        L.wv = f32_weight(randn(size_t(kvd * D), rng, 1.0f / std::sqrt(float(D))), kvd, D);
        L.wo = f32_weight(randn(size_t(D * qd), rng, 1.0f / std::sqrt(float(qd))), D, qd);
        L.q_norm = widened(L.q_norm);
        L.k_norm = widened(L.k_norm);
    }
    m->inv_freq = rope_inv_freq(c);
    return m;
}

}  // namespace elastic::test
