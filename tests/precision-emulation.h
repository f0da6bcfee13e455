// The naive reduced-precision forward the CUDA backend is held to (CONVENTIONS.md #5 at model
// scale): the CPU ops in fp32 on copies of exactly the tensors the CUDA backend rounds, rounded
// the same way (round to nearest even). Which tensors, per GPU precision (src/model/backend.h):
//   bf16: weights, GEMM inputs, attention inputs q/k/v and the cached K/V in bf16;
//   f16:  weights, GEMM inputs, attention inputs in fp16; cached K/V in bf16;
//   f32:  nothing rounded but the cached K/V (bf16).
// Needs no GPU: tests compare it with the CPU backend to measure what a precision costs.
#pragma once
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "model/backend.h"
#include "test-helpers.h"

namespace elastic::test {

enum class Rounding { None, BF16, F16 };

inline float round_to(Rounding r, float x) {
    switch (r) {
    case Rounding::BF16: return round_bf16(x);
    case Rounding::F16: return fp16_to_f32(f32_to_fp16(x));
    case Rounding::None: break;
    }
    return x;
}

struct EmulatedPrecision {
    Rounding gemm;   // weights (and the embedding table) and GEMM inputs
    Rounding attn;   // prefill attention inputs q, k, v and the decode query
    Rounding cache;  // K/V as the cache stores them
    const char* name;
};
inline EmulatedPrecision emulated(const std::string& precision) {
    if (precision == "f16") return {Rounding::F16, Rounding::F16, Rounding::BF16, "f16"};
    if (precision == "f32") return {Rounding::None, Rounding::None, Rounding::BF16, "f32"};
    return {Rounding::BF16, Rounding::BF16, Rounding::BF16, "bf16"};
}

class PrecisionEmulation final : public Backend {
public:
    explicit PrecisionEmulation(EmulatedPrecision p) : p_(p) {}
    const char* name() const override { return "cpu-precision-emulation"; }
    float* alloc(size_t n) override { return cpu_->alloc(n); }
    void release(float* p) override { cpu_->release(p); }
    void upload(float* dst, const float* host, size_t n) override { cpu_->upload(dst, host, n); }
    void download(float* host, const float* src, size_t n) override { cpu_->download(host, src, n); }
    void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) override {
        cpu_->embedding(weight(E), ids, T, out);
    }
    void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) override {
        cpu_->rms_norm(x, w, y, rows, dim, eps);
    }
    void matmul(const Weight& W, const float* x, float* y, int64_t T) override {
        cpu_->matmul(weight(W), rounded(p_.gemm, x, size_t(T * W.cols)).data(), y, T);
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
        const std::vector<float> qr = rounded(p_.attn, q, nq), kr = rounded(p_.attn, k, nk), vr = rounded(p_.attn, v, nk);
        cpu_->attn_hybrid_prefill(qr.data(), kr.data(), vr.data(), out, T, n_head, n_kv_head, head_dim, plan, win,
                                  xa_block, scale);
    }
    void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                      const XAParams& p, LayerPlan& plan) override {
        cpu_->xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan);
    }
    void top_candidates(const float* logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) override {
        cpu_->top_candidates(logits, n, k, out);
    }
    void router_logits(const RouterLayer& r, const float* k, int64_t T, int n_kv_head, int head_dim, int window,
                       float* logits_host) override {
        cpu_->router_logits(r, k, T, n_kv_head, head_dim, window, logits_host);
    }
    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        head_dim_ = head_dim;
        kv_dim_ = int64_t(n_kv_head) * head_dim;
        return cpu_->new_layer_cache(plan, win, capacity, n_kv_head, head_dim);
    }
    void cache_store_prefill(LayerCache& c, const float* k, const float* v, int64_t T) override {
        const size_t n = size_t(T * kv_dim_);
        cpu_->cache_store_prefill(c, rounded(p_.cache, k, n).data(), rounded(p_.cache, v, n).data(), T);
    }
    void cache_append(LayerCache& c, const float* k_tok, const float* v_tok, int64_t pos) override {
        const size_t n = size_t(kv_dim_);
        cpu_->cache_append(c, rounded(p_.cache, k_tok, n).data(), rounded(p_.cache, v_tok, n).data(), pos);
    }
    void attn_decode(const float* q, const LayerCache& c, int64_t pos, float* out, int n_head, float scale) override {
        cpu_->attn_decode(rounded(p_.attn, q, size_t(n_head * head_dim_)).data(), c, pos, out, n_head, scale);
    }

private:
    // W with its values rounded, stored as fp32 (exact for bf16 and fp16 values); W itself when
    // nothing is rounded.
    const Weight& weight(const Weight& W) {
        if (p_.gemm == Rounding::None) return W;
        auto it = weights_.find(W.data);
        if (it != weights_.end()) return it->second;
        std::vector<float> f = weight_to_f32(W);
        for (float& x : f) x = round_to(p_.gemm, x);
        Weight r;
        r.type = DType::F32;
        r.rows = W.rows;
        r.cols = W.cols;
        r.row_bytes = size_t(W.cols) * 4;
        r.owned = std::make_shared<std::vector<uint8_t>>(f.size() * 4);
        std::memcpy(r.owned->data(), f.data(), f.size() * 4);
        r.data = r.owned->data();
        return weights_.emplace(W.data, r).first->second;
    }
    static std::vector<float> rounded(Rounding r, const float* x, size_t n) {
        std::vector<float> v(n);
        std::memcpy(v.data(), x, n * sizeof(float));
        if (r != Rounding::None)
            for (float& e : v) e = round_to(r, e);
        return v;
    }

    EmulatedPrecision p_;
    std::unique_ptr<Backend> cpu_ = make_cpu_backend(0);
    std::unordered_map<const uint8_t*, Weight> weights_;
    int64_t head_dim_ = 0, kv_dim_ = 0;  // of the layer caches (the same for every layer)
};

}  // namespace elastic::test
