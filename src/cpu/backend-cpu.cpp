// The CPU backend: host buffers, ops from src/cpu/*.cpp. OpenBLAS runs single-threaded inside our
// OpenMP tasks (set once here), so the two thread pools never oversubscribe the cores.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "attention/hybrid-attention.h"
#include "attention/kv-cache.h"
#include "attention/xattention.h"
#include "core/error.h"
#include "cpu/ops.h"
#include "model/backend.h"

extern "C" void openblas_set_num_threads(int);

namespace elastic {

namespace {
class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int threads) {
        openblas_set_num_threads(1);
        if (threads > 0) omp_set_num_threads(threads);
    }
    const char* name() const override { return "cpu"; }
    float* alloc(size_t n) override {
        void* p = std::aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
        if (!p) throw std::bad_alloc();
        return static_cast<float*>(p);
    }
    void release(float* p) override { std::free(p); }
    void upload(float* dst, const float* host, size_t n) override { std::memcpy(dst, host, n * sizeof(float)); }
    void download(float* host, const float* src, size_t n) override { std::memcpy(host, src, n * sizeof(float)); }
    void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) override { cpu::embedding(E, ids, T, out); }
    void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) override {
        cpu::rms_norm(x, w, y, rows, dim, eps);
    }
    void matmul(const Weight& W, const float* x, float* y, int64_t T) override { cpu::matmul(W, x, y, T); }
    void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) override {
        cpu::rope(x, T, n_heads, head_dim, pos, inv_freq);
    }
    void swiglu(const float* gate, const float* up, float* out, int64_t n) override { cpu::swiglu(gate, up, out, n); }
    void add(float* y, const float* x, int64_t n) override { cpu::add(y, x, n); }
    void attn_hybrid_prefill(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                             int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                             int64_t xa_block, float scale) override {
        cpu::attn_hybrid_prefill(q, k, v, out, T, n_head, n_kv_head, head_dim, plan, win, xa_block, scale);
    }
    void top_candidates(const float* logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) override {
        ELASTIC_ASSERT(k >= 1 && k <= kMaxCandidates && n >= 1);
        k = std::min(k, int(n));
        std::vector<std::pair<float, int32_t>> all(static_cast<size_t>(n));
        for (int32_t i = 0; i < n; ++i) all[size_t(i)] = {logits[i], i};
        std::partial_sort(all.begin(), all.begin() + k, all.end(), [](const auto& a, const auto& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
        out.assign(all.begin(), all.begin() + k);
    }
    void router_logits(const RouterLayer& r, const float* k, int64_t T, int n_kv_head, int head_dim, int window,
                       float* logits_host) override {
        std::vector<float> x(size_t(n_kv_head) * size_t(head_dim));
        router_pool(k, T, n_kv_head, head_dim, window, x.data());
        Router::mlp(r, x.data(), n_kv_head, logits_host);
    }
    void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                      const XAParams& p, LayerPlan& plan) override {
        cpu::xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan);
    }
    struct Cache final : LayerCache {
        cpu::LayerKVCache c;
        size_t bytes() const override { return c.bytes(); }
    };
    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        auto c = std::make_unique<Cache>();
        c->c.init(plan, win, capacity, n_kv_head, head_dim);
        return c;
    }
    void cache_store_prefill(LayerCache& c, const float* k, const float* v, int64_t T) override {
        static_cast<Cache&>(c).c.store_prefill(k, v, T);
    }
    void cache_append(LayerCache& c, const float* k_tok, const float* v_tok, int64_t pos) override {
        static_cast<Cache&>(c).c.append(k_tok, v_tok, pos);
    }
    void attn_decode(const float* q, const LayerCache& c, int64_t pos, float* out, int n_head, float scale) override {
        cpu::attn_decode(q, static_cast<const Cache&>(c).c, pos, out, n_head, scale);
    }
};
}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace elastic
