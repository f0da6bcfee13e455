// The router of one layer for training (DESIGN.md §1.1, §1.4): a forward that keeps its
// activations and the backward from the straight-through decision
//   z = hard + soft - stopgrad(soft),  soft = sigmoid((m + g) / tau),  hard = (m + g > 0)
// with m the margin (softmax variant: logit1 − logit0, so soft = softmax(logits)[1] without noise;
// sigmoid variant: the LayerNorm over the layer's heads of the one logit) and g optional Gumbel
// noise, to the 10 router tensors and, through the boundary pooling, to the pre-RoPE keys. The MLPs are
// tiny ([H_kv, d] rows, ~1 MFLOP), so plain loops in the order of RouterLayer's [out, in] layout.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "train/backward.h"

namespace elastic::train {

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// y [n, L.out] = x [n, L.in] @ L.w^T + L.b
void linear(const RouterLinear& L, const float* x, int n, float* y) {
    for (int r = 0; r < n; ++r)
        for (int o = 0; o < L.out; ++o) {
            const float* w = L.w.data() + size_t(o) * L.in;
            const float* xr = x + size_t(r) * L.in;
            double s = L.b[size_t(o)];  // double sums: the sigmoid variant's LayerNorm cancels the common part
            for (int i = 0; i < L.in; ++i) s += double(w[i]) * xr[i];
            y[size_t(r) * L.out + o] = float(s);
        }
}

// G.w += dy^T x, G.b += colsum(dy); dx [n, L.in] = dy [n, L.out] @ L.w (if dx).
void linear_backward(const RouterLinear& L, const float* x, const float* dy, int n, RouterLinear& G, float* dx) {
    for (int r = 0; r < n; ++r)
        for (int o = 0; o < L.out; ++o) {
            const float g = dy[size_t(r) * L.out + o];
            float* gw = G.w.data() + size_t(o) * L.in;
            const float* xr = x + size_t(r) * L.in;
            for (int i = 0; i < L.in; ++i) gw[i] += g * xr[i];
            G.b[size_t(o)] += g;
        }
    if (!dx) return;
    std::vector<double> acc(static_cast<size_t>(L.in));
    for (int r = 0; r < n; ++r) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int o = 0; o < L.out; ++o) {
            const double g = dy[size_t(r) * L.out + o];
            const float* w = L.w.data() + size_t(o) * L.in;
            for (int i = 0; i < L.in; ++i) acc[size_t(i)] += g * w[i];
        }
        float* dxr = dx + size_t(r) * L.in;
        for (int i = 0; i < L.in; ++i) dxr[i] = float(acc[size_t(i)]);
    }
}

void silu(const std::vector<float>& a, std::vector<float>& h) {
    h.resize(a.size());
    for (size_t i = 0; i < a.size(); ++i) h[i] = a[i] * sigmoid(a[i]);
}

// dh -> da in place: silu'(a) = s (1 + a (1 - s)), s = sigmoid(a).
void silu_backward(const std::vector<float>& a, std::vector<float>& g) {
    for (size_t i = 0; i < a.size(); ++i) {
        const float s = sigmoid(a[i]);
        g[i] *= s * (1.0f + a[i] * (1.0f - s));
    }
}

RouterLinear zeros_like(const RouterLinear& L) {
    RouterLinear z;
    z.in = L.in;
    z.out = L.out;
    z.w.assign(L.w.size(), 0.0f);
    z.b.assign(L.b.size(), 0.0f);
    return z;
}

}  // namespace

RouterActs router_forward(const RouterLayer& r, const float* k_prerope, int64_t T, int n_kv_head, int head_dim,
                          int window, const RouterNoise& noise) {
    r.validate("router_forward");
    ELASTIC_ASSERT(r.head_dim() == head_dim && T >= 1 && window >= 1 && noise.tau > 0);
    const int H = n_kv_head;
    ELASTIC_ASSERT(noise.logistic.empty() || int(noise.logistic.size()) == H);
    RouterActs a;
    a.T = T;
    a.n_kv_head = H;
    a.head_dim = head_dim;
    a.window = window;
    a.noise = noise;
    a.x.resize(size_t(H) * head_dim);
    router_pool(k_prerope, T, H, head_dim, window, a.x.data());
    a.a1.resize(size_t(H) * r.fe0.out);
    a.f.resize(size_t(H) * r.fe2.out);
    a.a2.resize(size_t(H) * r.rh0.out);
    a.a3.resize(size_t(H) * r.rh2.out);
    a.logits.resize(size_t(H) * r.rh4.out);
    linear(r.fe0, a.x.data(), H, a.a1.data());
    silu(a.a1, a.h1);
    linear(r.fe2, a.h1.data(), H, a.f.data());
    linear(r.rh0, a.f.data(), H, a.a2.data());
    silu(a.a2, a.h2);
    linear(r.rh2, a.h2.data(), H, a.a3.data());
    silu(a.a3, a.h3);
    linear(r.rh4, a.h3.data(), H, a.logits.data());
    a.margin.resize(size_t(H));
    if (r.use_softmax()) {
        for (int h = 0; h < H; ++h) a.margin[size_t(h)] = a.logits[size_t(h) * 2 + 1] - a.logits[size_t(h) * 2];
    } else {  // LayerNorm over the heads, no affine, biased variance (as Router::decide)
        double mean = 0, var = 0;
        for (int h = 0; h < H; ++h) mean += a.logits[size_t(h)];
        mean /= H;
        for (int h = 0; h < H; ++h) var += (a.logits[size_t(h)] - mean) * (a.logits[size_t(h)] - mean);
        var /= H;
        a.ln_inv = 1.0 / std::sqrt(var + 1e-5);
        for (int h = 0; h < H; ++h) a.margin[size_t(h)] = float((a.logits[size_t(h)] - mean) * a.ln_inv);
    }
    a.soft.resize(size_t(H));
    a.z.resize(size_t(H));
    for (int h = 0; h < H; ++h) {
        const float m = a.margin[size_t(h)] + (noise.logistic.empty() ? 0.0f : noise.logistic[size_t(h)]);
        a.soft[size_t(h)] = sigmoid(m / noise.tau);
        a.z[size_t(h)] = m > 0 ? 1.0f : 0.0f;
    }
    return a;
}

RouterLayer router_zero_grads(const RouterLayer& r) {
    RouterLayer g;
    g.fe0 = zeros_like(r.fe0);
    g.fe2 = zeros_like(r.fe2);
    g.rh0 = zeros_like(r.rh0);
    g.rh2 = zeros_like(r.rh2);
    g.rh4 = zeros_like(r.rh4);
    return g;
}

void router_backward(const RouterLayer& r, const RouterActs& a, const float* dz, RouterLayer& grads,
                     float* dk_prerope) {
    const int H = a.n_kv_head, d = a.head_dim;
    ELASTIC_ASSERT(grads.fe0.w.size() == r.fe0.w.size() && grads.rh4.b.size() == r.rh4.b.size());
    // dsoft/dmargin = soft (1 - soft) / tau
    std::vector<float> dm(static_cast<size_t>(H));
    for (int h = 0; h < H; ++h) {
        const float s = a.soft[size_t(h)];
        dm[size_t(h)] = dz[h] * s * (1.0f - s) / a.noise.tau;
    }
    std::vector<float> dl(a.logits.size());  // [H, rh4.out]
    if (r.use_softmax()) {  // margin = l1 - l0
        for (int h = 0; h < H; ++h) {
            dl[size_t(h) * 2] = -dm[size_t(h)];
            dl[size_t(h) * 2 + 1] = dm[size_t(h)];
        }
    } else {  // LayerNorm without affine: dl = inv (dm - mean(dm) - u mean(dm u))
        double mdm = 0, mdu = 0;
        for (int h = 0; h < H; ++h) {
            mdm += dm[size_t(h)];
            mdu += double(dm[size_t(h)]) * a.margin[size_t(h)];
        }
        mdm /= H;
        mdu /= H;
        for (int h = 0; h < H; ++h)
            dl[size_t(h)] = float(a.ln_inv * (dm[size_t(h)] - mdm - double(a.margin[size_t(h)]) * mdu));
    }
    std::vector<float> d3(a.a3.size()), d2(a.a2.size()), df(a.f.size()), d1(a.a1.size()), dx(a.x.size());
    linear_backward(r.rh4, a.h3.data(), dl.data(), H, grads.rh4, d3.data());
    silu_backward(a.a3, d3);
    linear_backward(r.rh2, a.h2.data(), d3.data(), H, grads.rh2, d2.data());
    silu_backward(a.a2, d2);
    linear_backward(r.rh0, a.f.data(), d2.data(), H, grads.rh0, df.data());
    linear_backward(r.fe2, a.h1.data(), df.data(), H, grads.fe2, d1.data());
    silu_backward(a.a1, d1);
    linear_backward(r.fe0, a.x.data(), d1.data(), H, grads.fe0, dk_prerope ? dx.data() : nullptr);
    if (!dk_prerope) return;

    // router_pool: mean over rows [0, head_end) then [tail_begin, T); a row in both gets both shares.
    const int64_t T = a.T, head_end = std::min<int64_t>(a.window, T), tail_begin = std::max<int64_t>(0, T - a.window);
    const float inv_n = 1.0f / float(head_end + (T - tail_begin));
    const size_t row = size_t(H) * d;
    for (size_t i = 0; i < row; ++i) dx[i] *= inv_n;
    auto add_rows = [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            float* dk = dk_prerope + size_t(t) * row;
            for (size_t i = 0; i < row; ++i) dk[i] += dx[i];
        }
    };
    add_rows(0, head_end);
    add_rows(tail_begin, T);
}

}  // namespace elastic::train
