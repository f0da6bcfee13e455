// The CPU backend: host buffers, ops from src/cpu/*.cpp, fp32 everywhere. Resident weights are the
// stored matrices themselves (usually inside the mapped file: nothing is copied). OpenBLAS runs
// single-threaded inside our OpenMP tasks (set once here), so the two thread pools never
// oversubscribe the cores. Also the reference backend (make_reference_backend), which differs
// only in its KV cache and decode.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "formats/quants.h"
#include "cpu/attention.h"
#include "cpu/ops.h"
#include "model/backend.h"
#include "train/backward.h"

extern "C" void openblas_set_num_threads(int);

namespace elastic {

float* Buf::f32() const {
    ELASTIC_ASSERT_MSG(type == DType::F32 || p == nullptr, "an fp32 buffer was expected");
    return static_cast<float*>(p);
}

namespace {

struct CpuMatrix final : Backend::Matrix {
    Weight w;
};
struct CpuVector final : Backend::Vector {
    std::vector<float> v;
};
const Weight& W_of(const Backend::Matrix& m) { return static_cast<const CpuMatrix&>(m).w; }
const float* V_of(const Backend::Vector& v) { return static_cast<const CpuVector&>(v).v.data(); }

class CpuBackend : public Backend {
public:
    // Up to kMatvecMaxT rows every product is one dot per (weight row, token), the same code for
    // any row count: stacked decode rows get their single-row results bit for bit.
    int max_stable_decode_rows() const override { return int(cpu::kMatvecMaxT); }
    explicit CpuBackend(int threads) {
        openblas_set_num_threads(1);
        // More threads than the machine has only oversubscribes it (and tens of thousands exhaust
        // the stacks of the OpenMP runtime): at most one per hardware thread.
        const int hw = std::max(1, int(std::thread::hardware_concurrency()));
        if (threads > hw) {
            std::fprintf(stderr, "elastic: %d threads requested, this machine has %d: using %d\n", threads, hw, hw);
            threads = hw;
        }
        if (threads > 0) omp_set_num_threads(threads);
    }
    const char* name() const override { return "cpu"; }

    Buf alloc(size_t n, DType t) override {
        ELASTIC_ASSERT_MSG(t == DType::F32, "the CPU backend's buffers are fp32");
        void* p = std::aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
        if (!p) throw std::bad_alloc();
        return {p, t};
    }
    void release(Buf b) override { std::free(b.p); }
    void upload(Buf dst, const float* host, size_t n) override { std::memcpy(dst.f32(), host, n * sizeof(float)); }
    void download(float* host, Buf src, size_t n) override { std::memcpy(host, src.f32(), n * sizeof(float)); }

    std::shared_ptr<const Matrix> upload_matrix(const Weight& W) override {
        auto m = std::make_shared<CpuMatrix>();
        m->rows = W.rows;
        m->cols = W.cols;
        m->w = W;
        return m;
    }
    std::shared_ptr<const Vector> upload_vector(const std::vector<float>& v) override {
        auto r = std::make_shared<CpuVector>();
        r->n = int64_t(v.size());
        r->v = v;
        return r;
    }
    std::unique_ptr<const RouterWeights> upload_router(const RouterLayer& r, int) override {
        auto w = std::make_unique<RouterWeights>();
        w->layer = &r;
        return w;
    }

    void embedding(const Matrix& E, const int32_t* ids, int64_t T, Buf out) override {
        cpu::embedding(W_of(E), ids, T, out.f32());
    }
    void rms_norm(Buf x, const Vector& w, Buf y, int64_t rows, int64_t dim, float eps) override {
        ELASTIC_ASSERT(w.n == dim);
        cpu::rms_norm(x.f32(), V_of(w), y.f32(), rows, dim, eps);
    }
    void matmul(const Matrix& W, Buf x, Buf y, int64_t T) override { cpu::matmul(W_of(W), x.f32(), y.f32(), T); }
    void rope(Buf x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const Vector& inv_freq) override {
        cpu::rope(x.f32(), T, n_heads, head_dim, pos, V_of(inv_freq));
    }
    void swiglu(Buf gate, Buf up, Buf out, int64_t n) override { cpu::swiglu(gate.f32(), up.f32(), out.f32(), n); }
    void add(Buf y, Buf x, int64_t n) override { cpu::add(y.f32(), x.f32(), n); }

    void attn_hybrid_prefill(Buf q, Buf k, Buf v, Buf out, int64_t T, int n_head, int n_kv_head, int head_dim,
                             const LayerPlan& plan, const StreamingWindow& win, int64_t xa_block, float scale) override {
        cpu::attn_hybrid_prefill(q.f32(), k.f32(), v.f32(), out.f32(), T, n_head, n_kv_head, head_dim, plan, win, xa_block,
                                 scale);
    }
    void xa_fill_plan(Buf q, Buf k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                      LayerPlan& plan) override {
        cpu::xa_fill_plan(q.f32(), k.f32(), T, n_head, n_kv_head, head_dim, p, plan);
    }
    void router_logits(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                       float* logits_host) override {
        std::vector<float> x(size_t(n_kv_head) * size_t(head_dim));
        router_pool(k.f32(), T, n_kv_head, head_dim, window, x.data());
        Router::mlp(*r.layer, x.data(), n_kv_head, logits_host);
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
    void cache_store_prefill(LayerCache& c, Buf k, Buf v, int64_t T) override {
        static_cast<Cache&>(c).c.store_prefill(k.f32(), v.f32(), T);
    }
    void cache_append(LayerCache& c, Buf k_tok, Buf v_tok, int64_t pos) override {
        static_cast<Cache&>(c).c.append(k_tok.f32(), v_tok.f32(), pos);
    }
    void attn_decode(Buf q, const LayerCache& c, int64_t pos, Buf out, int n_head, float scale) override {
        cpu::attn_decode(q.f32(), static_cast<const Cache&>(c).c, pos, out.f32(), n_head, scale);
    }

    // Router training: the reference functions of src/train/backward.h.
    void copy(Buf dst, Buf src, size_t n) override { std::memcpy(dst.f32(), src.f32(), n * sizeof(float)); }
    void zero(Buf dst, size_t n) override { std::memset(dst.f32(), 0, n * sizeof(float)); }
    void rms_norm_backward(Buf x, const Vector& w, Buf dy, Buf dx, int64_t rows, int64_t dim, float eps,
                           bool accumulate) override {
        ELASTIC_ASSERT(w.n == dim);
        train::rms_norm_backward(x.f32(), V_of(w), dy.f32(), dx.f32(), rows, dim, eps, accumulate);
    }
    void swiglu_backward(Buf gate, Buf up, Buf dout, Buf dgate, Buf dup, int64_t n) override {
        train::swiglu_backward(gate.f32(), up.f32(), dout.f32(), dgate.f32(), dup.f32(), n);
    }
    void matmul_dx(const Matrix& W, Buf dy, Buf dx, int64_t T, bool accumulate) override {
        train::matmul_dx(W_of(W), dy.f32(), dx.f32(), T, accumulate);
    }
    CrossEntropy cross_entropy(const Matrix& W, Buf h, const int32_t* targets, int64_t T, Buf dh) override {
        return train::cross_entropy_chunked(W_of(W), h.f32(), targets, T, dh.f32());
    }
    void attn_forward_lse(const AttnShape& s, const LayerPlan& plan, Buf q, Buf k, Buf v, Buf out, Buf lse) override {
        train::attn_forward_lse(s, plan, q.f32(), k.f32(), v.f32(), out.f32(), lse.f32());
    }
    void attn_backward(const AttnShape& s, const LayerPlan& plan, Buf q, Buf k, Buf v, Buf o, Buf lse, Buf dout, Buf dq,
                       Buf dk, Buf dv, const float* coef) override {
        train::attn_backward(s, plan, q.f32(), k.f32(), v.f32(), o.f32(), lse.f32(), dout.f32(), dq.f32(), dk.f32(),
                             dv.f32(), coef);
    }
    void mix_heads(Buf a, Buf b, const float* w, Buf out, int64_t T, int n_head, int n_kv_head, int head_dim) override {
        const float *pa = a.f32(), *pb = b.f32();
        float* po = out.f32();
        const int group = n_head / n_kv_head;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < T; ++i)
            for (int h = 0; h < n_head; ++h) {
                const float wg = w[h / group];
                const int64_t base = (i * n_head + h) * head_dim;
                for (int e = 0; e < head_dim; ++e) po[base + e] = wg * pa[base + e] + (1.0f - wg) * pb[base + e];
            }
    }
    void mix_heads_dw(Buf dout, Buf a, Buf b, int64_t T, int n_head, int n_kv_head, int head_dim,
                      double* dw) override {
        const float *pd = dout.f32(), *pa = a.f32(), *pb = b.f32();
        const int group = n_head / n_kv_head;
        // Per-row sums added in row order: the result does not depend on the thread count.
        std::vector<double> rows(static_cast<size_t>(T) * size_t(n_kv_head));
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < T; ++i)
            for (int h = 0; h < n_head; ++h) {
                const int64_t base = (i * n_head + h) * head_dim;
                double acc = 0;
                for (int e = 0; e < head_dim; ++e) acc += double(pd[base + e]) * (double(pa[base + e]) - double(pb[base + e]));
                rows[size_t(i * n_kv_head + h / group)] += acc;
            }
        for (int g = 0; g < n_kv_head; ++g) {
            double acc = 0;
            for (int64_t i = 0; i < T; ++i) acc += rows[size_t(i * n_kv_head + g)];
            dw[g] = acc;
        }
    }

    void top_candidates(Buf logits_buf, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) override {
        ELASTIC_ASSERT(k >= 1 && k <= kMaxCandidates && n >= 1);
        const float* logits = logits_buf.f32();
        k = std::min(k, int(n));
        std::vector<std::pair<float, int32_t>> all(static_cast<size_t>(n));
        for (int32_t i = 0; i < n; ++i) all[size_t(i)] = {logits[i], i};
        std::partial_sort(all.begin(), all.begin() + k, all.end(), [](const auto& a, const auto& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
        out.assign(all.begin(), all.begin() + k);
    }
};

// The reference backend: full K/V per layer cache, the fp64 naive decode over it.
class ReferenceBackend final : public CpuBackend {
public:
    ReferenceBackend(int threads, DecodeObserver observer) : CpuBackend(threads), observer_(std::move(observer)) {}
    const char* name() const override { return "cpu-reference"; }

    struct FullCache final : LayerCache {
        LayerPlan plan;
        StreamingWindow win;
        int n_kv_head = 0, head_dim = 0, layer = 0;
        std::vector<float> k, v;  // [positions, n_kv_head, head_dim]
        size_t bytes() const override { return (k.size() + v.size()) * sizeof(float); }
    };
    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        auto c = std::make_unique<FullCache>();
        c->plan = plan;
        c->win = win;
        c->n_kv_head = n_kv_head;
        c->head_dim = head_dim;
        c->layer = next_layer_++;  // caches are made layer by layer, once per prefill
        return c;
    }
    void cache_store_prefill(LayerCache& lc, Buf k, Buf v, int64_t T) override {
        auto& c = static_cast<FullCache&>(lc);
        const size_t n = size_t(T) * size_t(c.n_kv_head) * size_t(c.head_dim);
        c.k.assign(k.f32(), k.f32() + n);
        c.v.assign(v.f32(), v.f32() + n);
    }
    void cache_append(LayerCache& lc, Buf k_tok, Buf v_tok, int64_t pos) override {
        auto& c = static_cast<FullCache&>(lc);
        const size_t row = size_t(c.n_kv_head) * size_t(c.head_dim);
        ELASTIC_ASSERT(c.k.size() == size_t(pos) * row);
        c.k.insert(c.k.end(), k_tok.f32(), k_tok.f32() + row);
        c.v.insert(c.v.end(), v_tok.f32(), v_tok.f32() + row);
    }
    void attn_decode(Buf q, const LayerCache& lc, int64_t pos, Buf out, int n_head, float scale) override {
        const auto& c = static_cast<const FullCache&>(lc);
        if (observer_) observer_(c.layer, q.f32(), c.k.data(), pos + 1);
        cpu::attn_decode_naive(q.f32(), c.k.data(), c.v.data(), pos, out.f32(), n_head, c.n_kv_head, c.head_dim, c.plan,
                               c.win, scale);
    }
    // A new prefill starts numbering layers from 0 again (called by the forward before layer 0).
    void embedding(const Matrix& E, const int32_t* ids, int64_t T, Buf out) override {
        next_layer_ = 0;
        CpuBackend::embedding(E, ids, T, out);
    }

private:
    DecodeObserver observer_;
    int next_layer_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) {
    (void)cpu_kernels();  // a bad ELASTIC_CPU_KERNELS is an error now, not at the first decoded token
    return std::make_unique<CpuBackend>(threads);
}

std::unique_ptr<Backend> make_reference_backend(int threads, DecodeObserver observer) {
    return std::make_unique<ReferenceBackend>(threads, std::move(observer));
}

#ifndef ELASTIC_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(int, DType) {
    fail("this build has no CUDA backend (build the cuda-release preset: make cuda)");
}
int cuda_device_count() { return 0; }
#endif

}  // namespace elastic
