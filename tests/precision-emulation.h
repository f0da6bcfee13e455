// The naive reduced-precision forward the CUDA backend is held to (CONVENTIONS.md #5 at model
// scale): the CPU backend, with every value the CUDA backend stores in 16 bits rounded the same
// way (round to nearest even) at the same point. Its attn_type() stays F32: values are rounded in
// place in fp32 buffers. Per GPU precision (src/model/backend.h):
//   bf16 / f16, rounded to that type:
//     - weights (embedding table and LM head included) and every GEMM input;
//     - q, k, v as the projection GEMMs write them; the q/k norms (Qwen3) and RoPE compute in fp32
//       from those and round their results (the router reads the rounded pre-RoPE keys, XAttention
//       and the attention the rounded post-RoPE q, k);
//     - the attention output, prefill and decode;
//     not rounded (fp32): the residual stream and its norms, the outputs of the FFN's gate/up GEMMs
//     and SwiGLU (rounded only as the down GEMM's input), the logits;
//   f32: nothing but the cache;
//   all three: the KV cache holds bf16 (f16's k, v are rounded again, fp16 to bf16).
// Which GEMMs write q, k, v and which vectors are q/k norms is read from the model's weights, so
// one emulation serves the model it was made for. Needs no GPU: tests compare it with the CPU
// backend to measure what a precision costs, and use it as the naive bound for the CUDA backend.
#pragma once
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "model/backend.h"
#include "model/weights.h"
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
    Rounding attn;   // q, k, v, their norms and RoPE, the attention output (the attention type)
    Rounding cache;  // K/V as the cache stores them
    const char* name;
};
// precision: the CUDA backend's (DType::BF16, F16 or F32).
inline EmulatedPrecision emulated(DType precision) {
    if (precision == DType::F16) return {Rounding::F16, Rounding::F16, Rounding::BF16, "f16"};
    if (precision == DType::F32) return {Rounding::None, Rounding::None, Rounding::BF16, "f32"};
    return {Rounding::BF16, Rounding::BF16, Rounding::BF16, "bf16"};
}

class PrecisionEmulation final : public Backend {
public:
    // w: the weights of the model the Engine will upload (they name the q/k/v projections and the
    // q/k norms); must outlive the emulation's use.
    PrecisionEmulation(EmulatedPrecision p, const ModelWeights& w) : p_(p) {
        for (const LayerWeights& L : w.layers) {
            for (const Weight* m : {&L.wq, &L.wk, &L.wv}) qkv_.insert(m->data);
            for (const std::vector<float>* v : {&L.q_norm, &L.k_norm})
                if (!v->empty()) head_norms_.insert(v->data());
        }
    }
    const char* name() const override { return "cpu-precision-emulation"; }

    Buf alloc(size_t n, DType t) override { return cpu_->alloc(n, t); }
    void release(Buf b) override { cpu_->release(b); }
    void upload(Buf dst, const float* host, size_t n) override { cpu_->upload(dst, host, n); }
    void download(float* host, Buf src, size_t n) override { cpu_->download(host, src, n); }

    std::shared_ptr<const Matrix> upload_matrix(const Weight& W) override {
        auto m = std::make_shared<EmuMatrix>();
        m->rows = W.rows;
        m->cols = W.cols;
        m->cpu = cpu_->upload_matrix(rounded_weight(W));
        m->writes_qkv = qkv_.count(W.data) > 0;
        return m;
    }
    std::shared_ptr<const Vector> upload_vector(const std::vector<float>& v) override {
        auto r = std::make_shared<EmuVector>();
        r->n = int64_t(v.size());
        r->cpu = cpu_->upload_vector(v);
        r->head_norm = !v.empty() && head_norms_.count(v.data()) > 0;
        return r;
    }
    std::unique_ptr<const RouterWeights> upload_router(const RouterLayer& r, int n_kv_head) override {
        return cpu_->upload_router(r, n_kv_head);
    }

    void embedding(const Matrix& E, const int32_t* ids, int64_t T, Buf out) override {
        cpu_->embedding(*M(E).cpu, ids, T, out);
    }
    void rms_norm(Buf x, const Vector& w, Buf y, int64_t rows, int64_t dim, float eps) override {
        cpu_->rms_norm(x, *V(w).cpu, y, rows, dim, eps);
        if (V(w).head_norm) round_in_place(p_.attn, y, rows * dim);  // q/k norm: 16-bit in and out
    }
    void matmul(const Matrix& W, Buf x, Buf y, int64_t T) override {
        const EmuMatrix& m = M(W);
        Buf xr = x;
        if (p_.gemm != Rounding::None) {
            xs_.assign(x.f32(), x.f32() + T * m.cols);
            for (float& e : xs_) e = round_to(p_.gemm, e);
            xr = {xs_.data(), DType::F32};
        }
        cpu_->matmul(*m.cpu, xr, y, T);
        if (m.writes_qkv) round_in_place(p_.attn, y, T * m.rows);  // written in the attention type
    }
    void rope(Buf x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const Vector& inv_freq) override {
        cpu_->rope(x, T, n_heads, head_dim, pos, *V(inv_freq).cpu);
        round_in_place(p_.attn, x, T * n_heads * head_dim);
    }
    void swiglu(Buf gate, Buf up, Buf out, int64_t n) override { cpu_->swiglu(gate, up, out, n); }
    void add(Buf y, Buf x, int64_t n) override { cpu_->add(y, x, n); }

    // device_routing: the contract of a backend that routes on the device (Backend::route_prefill),
    // kept on the host: the modes are held back (plan.modes_on_device, plan.mode empty) until
    // route_result, and the prefill takes them from here, so a Session's device path runs on a CPU.
    bool device_routing = false;
    bool routes_on_device() const override { return device_routing; }
    void route_prefill(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                       const RouteRule& rule, LayerPlan& plan) override {
        if (!device_routing) return Backend::route_prefill(r, k, T, n_kv_head, head_dim, window, rule, plan);
        std::vector<float> logits(size_t(n_kv_head) * size_t(r.layer->rh4.out));
        cpu_->router_logits(r, k, T, n_kv_head, head_dim, window, logits.data());
        held_ = Router::decision(*r.layer, std::move(logits), n_kv_head);
        held_modes_.assign(size_t(n_kv_head), rule.full_mode);
        std::vector<size_t> order(static_cast<size_t>(n_kv_head), 0);
        for (size_t h = 0; h < order.size(); ++h) order[h] = h;
        if (rule.n_sparse < 0) {
            for (size_t h = 0; h < order.size(); ++h) held_modes_[h] = held_.full[h] ? rule.full_mode : rule.sparse_mode;
        } else {
            std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return held_.margin[a] < held_.margin[b]; });
            for (int i = 0; i < rule.n_sparse; ++i) held_modes_[order[size_t(i)]] = rule.sparse_mode;
        }
        plan = LayerPlan{};
        plan.modes_on_device = true;
    }
    double route_result(LayerPlan& plan, RouterDecision& d) override {
        if (!device_routing || !plan.modes_on_device) return Backend::route_result(plan, d);
        plan.mode = held_modes_;
        plan.modes_on_device = false;
        d = held_;
        return 1e-9;
    }

    void attn_hybrid_prefill(Buf q, Buf k, Buf v, Buf out, int64_t T, int n_head, int n_kv_head, int head_dim,
                             const LayerPlan& plan_in, const StreamingWindow& win, int64_t xa_block, float scale) override {
        LayerPlan held;
        if (plan_in.modes_on_device) {
            ELASTIC_ASSERT(device_routing && held_modes_.size() == size_t(n_kv_head));
            held.mode = held_modes_;
        }
        const LayerPlan& plan = plan_in.modes_on_device ? held : plan_in;
        cpu_->attn_hybrid_prefill(q, k, v, out, T, n_head, n_kv_head, head_dim, plan, win, xa_block, scale);
        round_in_place(p_.attn, out, T * n_head * head_dim);
    }
    void xa_fill_plan(Buf q, Buf k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                      LayerPlan& plan) override {
        cpu_->xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan);
    }
    void router_logits(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                       float* logits_host) override {
        cpu_->router_logits(r, k, T, n_kv_head, head_dim, window, logits_host);
    }

    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        auto c = std::make_unique<EmuCache>();
        c->cpu = cpu_->new_layer_cache(plan, win, capacity, n_kv_head, head_dim);
        c->kv_dim = int64_t(n_kv_head) * head_dim;
        c->head_dim = head_dim;
        return c;
    }
    // The cache rounds copies: k and v themselves keep the attention type.
    void cache_store_prefill(LayerCache& c, Buf k, Buf v, int64_t T) override {
        const int64_t n = T * C(c).kv_dim;
        cpu_->cache_store_prefill(*C(c).cpu, rounded(p_.cache, k, n, ks_), rounded(p_.cache, v, n, vs_), T);
    }
    void cache_append(LayerCache& c, Buf k_tok, Buf v_tok, int64_t pos) override {
        const int64_t n = C(c).kv_dim;
        cpu_->cache_append(*C(c).cpu, rounded(p_.cache, k_tok, n, ks_), rounded(p_.cache, v_tok, n, vs_), pos);
    }
    void attn_decode(Buf q, const LayerCache& c, int64_t pos, Buf out, int n_head, float scale) override {
        cpu_->attn_decode(q, *C(c).cpu, pos, out, n_head, scale);
        round_in_place(p_.attn, out, int64_t(n_head) * C(c).head_dim);
    }

    void top_candidates(Buf logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) override {
        cpu_->top_candidates(logits, n, k, out);
    }

private:
    RouterDecision held_;              // device_routing: the last route_prefill's decision
    std::vector<HeadMode> held_modes_; // and its modes
    struct EmuMatrix final : Matrix {
        std::shared_ptr<const Matrix> cpu;
        bool writes_qkv = false;  // a q, k or v projection: its output is in the attention type
    };
    struct EmuVector final : Vector {
        std::shared_ptr<const Vector> cpu;
        bool head_norm = false;  // a q or k norm
    };
    struct EmuCache final : LayerCache {
        std::unique_ptr<LayerCache> cpu;
        int64_t kv_dim = 0;
        int head_dim = 0;
        size_t bytes() const override { return cpu->bytes(); }
    };
    static const EmuMatrix& M(const Matrix& m) { return static_cast<const EmuMatrix&>(m); }
    static const EmuVector& V(const Vector& v) { return static_cast<const EmuVector&>(v); }
    static EmuCache& C(LayerCache& c) { return static_cast<EmuCache&>(c); }
    static const EmuCache& C(const LayerCache& c) { return static_cast<const EmuCache&>(c); }

    static void round_in_place(Rounding r, Buf x, int64_t n) {
        if (r == Rounding::None) return;
        float* p = x.f32();
        for (int64_t i = 0; i < n; ++i) p[i] = round_to(r, p[i]);
    }
    // x[0, n) rounded into scratch, as a buffer of the CPU backend (host memory).
    static Buf rounded(Rounding r, Buf x, int64_t n, std::vector<float>& scratch) {
        scratch.assign(x.f32(), x.f32() + n);
        if (r != Rounding::None)
            for (float& e : scratch) e = round_to(r, e);
        return {scratch.data(), DType::F32};
    }
    // W with its values rounded, stored as fp32 (exact for bf16 and fp16 values); W itself when
    // nothing is rounded.
    Weight rounded_weight(const Weight& W) const {
        if (p_.gemm == Rounding::None) return W;
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
        return r;
    }

    EmulatedPrecision p_;
    std::unique_ptr<Backend> cpu_ = make_cpu_backend(0);
    std::unordered_set<const void*> qkv_, head_norms_;  // data of the model's wq/wk/wv and q/k norms
    std::vector<float> xs_, ks_, vs_;                    // rounded GEMM input, cached k / v
};

}  // namespace elastic::test
