// The CUDA backend on a whole model (SmolLM2, or the tiny Qwen3 of tests/data; skipped without a
// GPU) against the CPU fp32 forward. Tolerance rule (CONVENTIONS.md #5) at model scale: the logits
// of every prompt position and of a few decode steps may be off the fp32 reference by at most 2x
// the error of a naive bf16 forward, that is the CPU backend with every tensor the CUDA backend holds in bf16
// rounded to bf16 (weights, GEMM inputs, attention inputs, cached K/V), plus 1e-3 of the largest
// logit. Runs full attention and streaming attention (small window, so the mask matters).
#include <gtest/gtest.h>

#ifdef ELASTIC_HAVE_CUDA

#include <unordered_map>

#include "model/model.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

// The naive bf16 forward: CPU ops on bf16-rounded copies of what the CUDA backend stores in bf16.
class Bf16Emulation final : public Backend {
public:
    const char* name() const override { return "cpu-bf16-emulation"; }
    float* alloc(size_t n) override { return cpu_->alloc(n); }
    void release(float* p) override { cpu_->release(p); }
    void upload(float* dst, const float* host, size_t n) override { cpu_->upload(dst, host, n); }
    void download(float* host, const float* src, size_t n) override { cpu_->download(host, src, n); }
    void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) override {
        cpu_->embedding(bf16(E), ids, T, out);
    }
    void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) override {
        cpu_->rms_norm(x, w, y, rows, dim, eps);
    }
    void matmul(const Weight& W, const float* x, float* y, int64_t T) override {
        cpu_->matmul(bf16(W), rounded(x, size_t(T * W.cols)), y, T);
    }
    void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) override {
        cpu_->rope(x, T, n_heads, head_dim, pos, inv_freq);
    }
    void swiglu(const float* gate, const float* up, float* out, int64_t n) override { cpu_->swiglu(gate, up, out, n); }
    void add(float* y, const float* x, int64_t n) override { cpu_->add(y, x, n); }
    void attn_hybrid_prefill(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                             int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                             int64_t xa_block, float scale) override {
        const size_t nq = size_t(T * n_head * head_dim), nk = size_t(T * n_kv_head * head_dim);
        std::vector<float> qb = round_bf16(std::vector<float>(q, q + nq)), kb = round_bf16(std::vector<float>(k, k + nk)),
                           vb = round_bf16(std::vector<float>(v, v + nk));
        cpu_->attn_hybrid_prefill(qb.data(), kb.data(), vb.data(), out, T, n_head, n_kv_head, head_dim, plan, win, xa_block,
                                  scale);
    }
    void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                      const XAParams& p, LayerPlan& plan) override {
        cpu_->xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan);
    }
    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        head_dim_ = head_dim;
        kv_dim_ = int64_t(n_kv_head) * head_dim;
        return cpu_->new_layer_cache(plan, win, capacity, n_kv_head, head_dim);
    }
    void cache_store_prefill(LayerCache& c, const float* k, const float* v, int64_t T) override {
        std::vector<float> kb = round_bf16(std::vector<float>(k, k + T * kv_dim_));
        std::vector<float> vb = round_bf16(std::vector<float>(v, v + T * kv_dim_));
        cpu_->cache_store_prefill(c, kb.data(), vb.data(), T);
    }
    void cache_append(LayerCache& c, const float* k_tok, const float* v_tok, int64_t pos) override {
        std::vector<float> kb = round_bf16(std::vector<float>(k_tok, k_tok + kv_dim_));
        std::vector<float> vb = round_bf16(std::vector<float>(v_tok, v_tok + kv_dim_));
        cpu_->cache_append(c, kb.data(), vb.data(), pos);
    }
    void attn_decode(const float* q, const LayerCache& c, int64_t pos, float* out, int n_head, float scale) override {
        std::vector<float> qb = round_bf16(std::vector<float>(q, q + n_head * head_dim_));
        cpu_->attn_decode(qb.data(), c, pos, out, n_head, scale);
    }

private:
    const Weight& bf16(const Weight& W) {
        auto it = weights_.find(W.data);
        if (it != weights_.end()) return it->second;
        std::vector<float> f = weight_to_f32(W);
        Weight b;
        b.type = DType::BF16;
        b.rows = W.rows;
        b.cols = W.cols;
        b.row_bytes = size_t(W.cols) * 2;
        b.owned = std::make_shared<std::vector<uint8_t>>(f.size() * 2);
        auto* h = reinterpret_cast<uint16_t*>(b.owned->data());
        for (size_t i = 0; i < f.size(); ++i) h[i] = f32_to_bf16(f[i]);
        b.data = b.owned->data();
        return weights_.emplace(W.data, b).first->second;
    }
    const float* rounded(const float* x, size_t n) {
        scratch_.assign(x, x + n);
        for (float& v : scratch_) v = round_bf16(v);
        return scratch_.data();
    }

    std::unique_ptr<Backend> cpu_ = make_cpu_backend(0);
    std::unordered_map<const uint8_t*, Weight> weights_;
    std::vector<float> scratch_;
    int64_t head_dim_ = 0, kv_dim_ = 0;  // of the layer caches (the same for every layer)
};

// Logits of every position of a prefill of `ids`, then of `n_decode` decode steps (teacher-forced
// with the same ids, so every backend sees the same tokens).
std::vector<float> all_logits(const Model& m, Backend& be, const AttentionSpec& spec, const std::vector<int32_t>& ids,
                              int64_t n_decode) {
    const int64_t T = int64_t(ids.size()) - n_decode;
    Session s(m, be, int64_t(ids.size()), spec);
    std::vector<float> out;
    auto keep = [&](int64_t, const float* l) { out.insert(out.end(), l, l + m.config.vocab); };
    s.forward(ids.data(), T, true, keep);
    for (int64_t i = T; i < int64_t(ids.size()); ++i) s.forward(&ids[size_t(i)], 1, true, keep);
    return out;
}

}  // namespace

TEST(CudaModel, LogitsWithin2xOfNaiveBf16) {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    // SmolLM2 when fetched, else the tiny Qwen3 of tests/data (qk-norm path, random weights).
    const std::string p = default_model_path();
    // The kernels take head_dim 64 or 128: SmolLM2 (64); the tiny test models (16, 32) do not fit.
    if (!file_exists(p)) GTEST_SKIP() << "default model not present (ELASTIC_MODEL)";
    auto model = Model::load(p);
    std::vector<int32_t> ids(260);
    std::mt19937_64 rng(5);
    for (auto& x : ids) x = int32_t(rng() % uint64_t(std::min(model->config.vocab, 20000)));
    auto cuda = make_cuda_backend(0);
    auto cpu = make_cpu_backend(0);
    Bf16Emulation naive;
    for (const char* mode : {"full", "ssa"}) {
        AttentionSpec spec = AttentionSpec::parse(mode);
        spec.win.sink = 4;
        spec.win.local = 64;
        const std::vector<float> ref = all_logits(*model, *cpu, spec, ids, 4);
        const std::vector<float> nb = all_logits(*model, naive, spec, ids, 4);
        const std::vector<float> got = all_logits(*model, *cuda, spec, ids, 4);
        EXPECT_TRUE(close_enough(got, ref, &nb, 1e-3)) << mode << ": element i is position i / " << model->config.vocab;
    }
}

#endif  // ELASTIC_HAVE_CUDA
