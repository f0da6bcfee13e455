// Finite-difference checks of the router backward (src/train/router-backward.cpp), softmax
// variant: the forward agrees with Router::mlp / Router::decide, and the straight-through gradient
// (that of soft = softmax(logits)[1]) of <R, z> reaches all 10 router tensors and the pre-RoPE keys
// through the boundary pooling, at T < window, window < T < 2·window (overlapping slices: rows
// counted twice) and T > 2·window. Rule and harness: fd-check.h.
#include <gtest/gtest.h>

#include <array>

#include "fd-check.h"
#include "train/backward.h"

using namespace elastic;
using namespace elastic::test;
using namespace elastic::train;

namespace {

RouterLinear random_linear(int in, int out, std::mt19937_64& rng) {
    RouterLinear L;
    L.in = in;
    L.out = out;
    L.w = randn(size_t(in) * out, rng, 1.0f / std::sqrt(float(in)));
    L.b = randn(size_t(out), rng, 0.3f);
    return L;
}

// d -> 4d -> d (task MLP), d -> 4d -> d -> 2 (router MLP), as the released routers.
RouterLayer random_router(int d, std::mt19937_64& rng) {
    RouterLayer r;
    r.fe0 = random_linear(d, 4 * d, rng);
    r.fe2 = random_linear(4 * d, d, rng);
    r.rh0 = random_linear(d, 4 * d, rng);
    r.rh2 = random_linear(4 * d, d, rng);
    r.rh4 = random_linear(d, 2, rng);
    r.validate("test router");
    return r;
}

std::array<const RouterLinear*, 5> linears(const RouterLayer& r) { return {&r.fe0, &r.fe2, &r.rh0, &r.rh2, &r.rh4}; }

// fp64 reference of sum_h R[h] * softmax(logits_h)[1] with tensor `which` (0..9: fe0.w, fe0.b,
// fe2.w, ..., rh4.b; 10: the keys) replaced by x.
double soft_loss(const RouterLayer& r, const std::vector<float>& keys, int64_t T, int H, int d, int window,
                 const std::vector<float>& R, int which, const std::vector<double>& x) {
    const size_t row = size_t(H) * d;
    auto key = [&](int64_t t, size_t i) {
        return which == 10 ? x[size_t(t) * row + i] : double(keys[size_t(t) * row + i]);
    };
    const int64_t head_end = std::min<int64_t>(window, T), tail_begin = std::max<int64_t>(0, T - window);
    std::vector<double> a(row, 0.0);
    for (size_t i = 0; i < row; ++i) {
        for (int64_t t = 0; t < head_end; ++t) a[i] += key(t, i);
        for (int64_t t = tail_begin; t < T; ++t) a[i] += key(t, i);
        a[i] /= double(head_end + T - tail_begin);
    }
    const auto L = linears(r);
    for (int l = 0; l < 5; ++l) {
        const RouterLinear& Ln = *L[size_t(l)];
        auto w = [&](size_t e) { return which == 2 * l ? x[e] : double(Ln.w[e]); };
        auto b = [&](size_t e) { return which == 2 * l + 1 ? x[e] : double(Ln.b[e]); };
        std::vector<double> y(size_t(H) * Ln.out);
        for (int h = 0; h < H; ++h)
            for (int o = 0; o < Ln.out; ++o) {
                double s = b(size_t(o));
                for (int i = 0; i < Ln.in; ++i) s += w(size_t(o) * Ln.in + i) * a[size_t(h) * Ln.in + i];
                const bool act = l == 0 || l == 2 || l == 3;  // SiLU after fe0, rh0, rh2
                y[size_t(h) * Ln.out + o] = act ? s / (1.0 + std::exp(-s)) : s;
            }
        a = std::move(y);
    }
    double loss = 0;
    for (int h = 0; h < H; ++h) loss += R[size_t(h)] / (1.0 + std::exp(a[size_t(h) * 2] - a[size_t(h) * 2 + 1]));
    return loss;
}

class BackwardRouter : public BackwardTest {
protected:
    void check(int64_t T);
};

}  // namespace

TEST_F(BackwardRouter, ShorterThanWindow) { check(37); }
TEST_F(BackwardRouter, OverlappingSlices) { check(150); }
TEST_F(BackwardRouter, LongerThanTwoWindows) { check(250); }

void BackwardRouter::check(int64_t T) {
    SCOPED_TRACE("seed " + std::to_string(seed) + ", T " + std::to_string(T));
    const int d = 8, H = 3, window = 100;
    const RouterLayer r = random_router(d, rng);
    const std::vector<float> keys = randn(size_t(T) * H * d, rng);
    // dz > 0: the backward is linear in dz, so one generic positive dz tests it as well as any, and
    // the bias gradients (sums over heads) do not cancel to a few ulps of their terms.
    std::vector<float> R(static_cast<size_t>(H));
    std::uniform_real_distribution<float> pos(0.5f, 1.5f);
    for (float& x : R) x = pos(rng);

    const RouterActs a = router_forward(r, keys.data(), T, H, d, window);
    std::vector<float> x(size_t(H) * d), logits(size_t(H) * 2);
    router_pool(keys.data(), T, H, d, window, x.data());
    Router::mlp(r, x.data(), H, logits.data());
    EXPECT_TRUE(close_enough(a.x, x, nullptr, 1e-6));
    EXPECT_TRUE(close_enough(a.logits, logits, nullptr, 1e-5));
    const RouterDecision dec = Router::decide(r, x.data(), H);
    for (int h = 0; h < H; ++h) {
        EXPECT_EQ(a.z[size_t(h)], float(dec.full[size_t(h)])) << "head " << h;
        EXPECT_NEAR(a.soft[size_t(h)], dec.prob_fa[size_t(h)], 1e-6) << "head " << h;
    }

    RouterLayer grads = router_zero_grads(r);
    std::vector<float> dk(keys.size(), 0.0f);
    router_backward(r, a, R.data(), grads, dk.data());
    const char* names[10] = {"fe0.w", "fe0.b", "fe2.w", "fe2.b", "rh0.w", "rh0.b", "rh2.w", "rh2.b", "rh4.w", "rh4.b"};
    const auto P = linears(r), G = linears(grads);
    for (int m = 0; m < 10; ++m) {
        const RouterLinear &p = *P[size_t(m / 2)], &g = *G[size_t(m / 2)];
        auto loss = [&](const std::vector<double>& xd, size_t) {
            return soft_loss(r, keys, T, H, d, window, R, m, xd);
        };
        EXPECT_TRUE(fd_check("router T " + std::to_string(T) + " " + names[m], m % 2 ? p.b : p.w, m % 2 ? g.b : g.w,
                             loss, rng, 1000));
    }
    auto kloss = [&](const std::vector<double>& xd, size_t) { return soft_loss(r, keys, T, H, d, window, R, 10, xd); };
    EXPECT_TRUE(fd_check("router T " + std::to_string(T) + " dk_prerope", keys, dk, kloss, rng, 1000));

    // dk_prerope accumulates (base of the gradient's magnitude, so that fp32 keeps its digits) ...
    float mx = 0;
    for (float g : dk) mx = std::max(mx, std::fabs(g));
    const std::vector<float> base = randn(dk.size(), rng, mx);
    std::vector<float> acc = base;
    RouterLayer twice = grads;  // ... and so do the weights' gradients: a second sequence of a batch adds its own
    router_backward(r, a, R.data(), twice, acc.data());
    for (size_t i = 0; i < acc.size(); ++i) acc[i] -= base[i];
    EXPECT_TRUE(close_enough(acc, dk, nullptr, 1e-5)) << "dk_prerope accumulates";
    const auto G2 = linears(twice);
    for (int l = 0; l < 5; ++l) {
        std::vector<float> w2 = G[size_t(l)]->w;
        for (float& w : w2) w *= 2.0f;
        EXPECT_TRUE(close_enough(G2[size_t(l)]->w, w2, nullptr, 1e-6)) << names[2 * l] << " accumulates";
    }
}
