// Router compute (DESIGN.md §1.1): boundary pooling, the two head-agnostic MLPs and the decision.
// The MLPs run all KV heads of a layer as one small sgemm per Linear ([H_kv, in] x [in, out]);
// at d = 128, H_kv = 8 that is ~1.3 MFLOP per layer, so the pooling's read of 200 key rows and
// the call overhead dominate. Loading and writing weights live in router-io.cpp.
#include "attention/router.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace elastic {

namespace {

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// y[n, L.out] = x[n, L.in] @ L.w^T + L.b, optionally followed by SiLU.
void linear_rows(const RouterLinear& L, const float* x, int n, float* y, bool act_silu) {
    for (int r = 0; r < n; ++r) std::copy(L.b.begin(), L.b.end(), y + size_t(r) * L.out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, L.out, L.in, 1.0f, x, L.in, L.w.data(), L.in, 1.0f, y,
                L.out);
    if (act_silu)
        for (size_t i = 0; i < size_t(n) * L.out; ++i) y[i] = silu(y[i]);
}

void check_linear(const RouterLinear& L, const char* name, int in, const std::string& what) {
    if (L.in != in || L.out <= 0 || L.w.size() != size_t(L.in) * L.out || L.b.size() != size_t(L.out))
        fail("%s: %s is [%d, %d] (w %zu, b %zu values) but its input has %d features", what.c_str(), name, L.out, L.in,
             L.w.size(), L.b.size(), in);
}

}  // namespace

void RouterLayer::validate(const std::string& what) const {
    if (fe0.in <= 0) fail("%s: empty router layer", what.c_str());
    check_linear(fe0, "cls_feat_extractor.0", fe0.in, what);
    check_linear(fe2, "cls_feat_extractor.2", fe0.out, what);
    check_linear(rh0, "cls_router_head_agnostic.0", fe2.out, what);
    check_linear(rh2, "cls_router_head_agnostic.2", rh0.out, what);
    check_linear(rh4, "cls_router_head_agnostic.4", rh2.out, what);
    if (rh4.out != 1 && rh4.out != 2)
        fail("%s: cls_router_head_agnostic.4 has %d outputs; expected 2 (softmax) or 1 (sigmoid)", what.c_str(),
             rh4.out);
}

void router_pool(const float* k, int64_t T, int n_kv_head, int head_dim, int window, float* out) {
    ELASTIC_ASSERT(T >= 1 && window >= 1);
    const size_t row = size_t(n_kv_head) * head_dim;
    const int64_t head_end = std::min<int64_t>(window, T);         // k[:window]
    const int64_t tail_begin = std::max<int64_t>(0, T - window);   // k[-window:]
    std::vector<double> acc(row, 0.0);
    auto add_rows = [&](int64_t a, int64_t b) {
        for (int64_t t = a; t < b; ++t) {
            const float* kr = k + size_t(t) * row;
            for (size_t i = 0; i < row; ++i) acc[i] += kr[i];
        }
    };
    add_rows(0, head_end);
    add_rows(tail_begin, T);
    const double n = double(head_end + (T - tail_begin));
    for (size_t i = 0; i < row; ++i) out[i] = float(acc[i] / n);
}

Router::Router(std::vector<RouterLayer> layers, int window) : layers_(std::move(layers)), window_(window) {
    if (window_ < 1) fail("router: pooling window must be >= 1 (got %d)", window_);
    for (size_t l = 0; l < layers_.size(); ++l)
        if (layers_[l].fe0.in > 0) layers_[l].validate(strprintf("router layer %zu", l));
}

bool Router::has_layer(int l) const { return l >= 0 && l < n_layer() && layers_[size_t(l)].fe0.in > 0; }

const RouterLayer& Router::layer(int l) const {
    ELASTIC_ASSERT_MSG(has_layer(l), "no router for this layer");
    return layers_[size_t(l)];
}

void Router::mlp(const RouterLayer& r, const float* x, int n_kv_head, float* logits, std::vector<float>* pooled) {
    const int H = n_kv_head;
    std::vector<float> h1(size_t(H) * r.fe0.out), f(size_t(H) * r.fe2.out), h2(size_t(H) * r.rh0.out),
        h3(size_t(H) * r.rh2.out);
    linear_rows(r.fe0, x, H, h1.data(), true);
    linear_rows(r.fe2, h1.data(), H, f.data(), false);  // f [H, fe2.out]: the "pooled" task feature
    linear_rows(r.rh0, f.data(), H, h2.data(), true);
    linear_rows(r.rh2, h2.data(), H, h3.data(), true);
    linear_rows(r.rh4, h3.data(), H, logits, false);
    if (pooled) *pooled = f;
}

RouterDecision Router::decide(const RouterLayer& r, const float* x, int n_kv_head, std::vector<float>* pooled) {
    std::vector<float> logits(size_t(n_kv_head) * r.rh4.out);
    mlp(r, x, n_kv_head, logits.data(), pooled);
    return decision(r, std::move(logits), n_kv_head);
}

RouterDecision Router::decision(const RouterLayer& r, std::vector<float> logits, int n_kv_head) {
    const int H = n_kv_head;
    ELASTIC_ASSERT(logits.size() == size_t(H) * size_t(r.rh4.out));
    RouterDecision d;
    d.logits = std::move(logits);

    d.prob_fa.resize(size_t(H));
    d.full.resize(size_t(H));
    d.margin.resize(size_t(H));
    if (r.use_softmax()) {
        for (int h = 0; h < H; ++h) {
            const float l0 = d.logits[size_t(h) * 2], l1 = d.logits[size_t(h) * 2 + 1];
            d.margin[size_t(h)] = l1 - l0;
            d.prob_fa[size_t(h)] = sigmoid(l1 - l0);  // softmax([l0, l1])[1]
            d.full[size_t(h)] = l1 > l0;              // argmax: channel 0 wins ties
        }
    } else {
        // LayerNorm([H, 1], elementwise_affine=False): biased variance over the layer's heads.
        double mean = 0, var = 0;
        for (int h = 0; h < H; ++h) mean += d.logits[size_t(h)];
        mean /= H;
        for (int h = 0; h < H; ++h) var += (d.logits[size_t(h)] - mean) * (d.logits[size_t(h)] - mean);
        var /= H;
        const double inv = 1.0 / std::sqrt(var + 1e-5);
        for (int h = 0; h < H; ++h) {
            d.logits[size_t(h)] = float((d.logits[size_t(h)] - mean) * inv);
            const float p = sigmoid(d.logits[size_t(h)]);
            d.prob_fa[size_t(h)] = p;
            d.full[size_t(h)] = p > 0.5f;
            d.margin[size_t(h)] = p - 0.5f;
        }
    }
    return d;
}

const RouterLayer& Router::checked_layer(int layer, int64_t T, int n_kv_head, int head_dim) const {
    if (!has_layer(layer)) fail("router: no router for layer %d (router has %d layers)", layer, n_layer());
    const RouterLayer& r = layers_[size_t(layer)];
    if (head_dim != r.head_dim())
        fail("router: layer %d expects head_dim %d, keys have %d", layer, r.head_dim(), head_dim);
    if (T < 1 || n_kv_head < 1) fail("router: cannot route %lld tokens of %d KV heads", (long long)T, n_kv_head);
    return r;
}

RouterDecision Router::route(int layer, const float* k_prerope, int64_t T, int n_kv_head, int head_dim,
                             std::vector<float>* pooled) const {
    const RouterLayer& r = checked_layer(layer, T, n_kv_head, head_dim);
    std::vector<float> x(size_t(n_kv_head) * head_dim);  // [H_kv, d]
    router_pool(k_prerope, T, n_kv_head, head_dim, window_, x.data());
    return decide(r, x.data(), n_kv_head, pooled);
}

}  // namespace elastic
