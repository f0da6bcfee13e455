// Finite-difference checks of the router backward (src/train/router-backward.cpp), softmax and
// sigmoid variants, with and without Gumbel noise and temperature: the forward agrees with
// Router::mlp / Router::decide, and the straight-through gradient (that of soft =
// sigmoid((margin + g) / tau)) of <R, z> reaches all 10 router tensors and the pre-RoPE keys
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
RouterLayer random_router(int d, std::mt19937_64& rng, int n_out = 2) {
    RouterLayer r;
    r.fe0 = random_linear(d, 4 * d, rng);
    r.fe2 = random_linear(4 * d, d, rng);
    r.rh0 = random_linear(d, 4 * d, rng);
    r.rh2 = random_linear(4 * d, d, rng);
    r.rh4 = random_linear(d, n_out, rng);
    r.validate("test router");
    return r;
}

std::array<const RouterLinear*, 5> linears(const RouterLayer& r) { return {&r.fe0, &r.fe2, &r.rh0, &r.rh2, &r.rh4}; }

// fp64 reference of sum_h R[h] * sigmoid((margin_h + g_h) / tau) with tensor `which` (0..9:
// fe0.w, fe0.b, fe2.w, ..., rh4.b; 10: the keys) replaced by x. margin: logit1 − logit0 (softmax
// variant) or the LayerNorm over the heads of the one logit (sigmoid variant).
double soft_loss(const RouterLayer& r, const std::vector<float>& keys, int64_t T, int H, int d, int window,
                 const std::vector<float>& R, int which, const std::vector<double>& x, const RouterNoise& nz) {
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
    std::vector<double> margin(static_cast<size_t>(H));
    if (r.rh4.out == 2) {
        for (int h = 0; h < H; ++h) margin[size_t(h)] = a[size_t(h) * 2 + 1] - a[size_t(h) * 2];
    } else {
        double mean = 0, var = 0;
        for (int h = 0; h < H; ++h) mean += a[size_t(h)] / H;
        for (int h = 0; h < H; ++h) var += (a[size_t(h)] - mean) * (a[size_t(h)] - mean) / H;
        for (int h = 0; h < H; ++h) margin[size_t(h)] = (a[size_t(h)] - mean) / std::sqrt(var + 1e-5);
    }
    double loss = 0;
    for (int h = 0; h < H; ++h) {
        const double g = nz.logistic.empty() ? 0.0 : nz.logistic[size_t(h)];
        loss += R[size_t(h)] / (1.0 + std::exp(-(margin[size_t(h)] + g) / nz.tau));
    }
    return loss;
}

class BackwardRouter : public BackwardTest {
protected:
    void check(int64_t T, int n_out = 2, float tau = 1.0f, bool noise = false);
};

}  // namespace

TEST_F(BackwardRouter, ShorterThanWindow) { check(37); }
TEST_F(BackwardRouter, OverlappingSlices) { check(150); }
TEST_F(BackwardRouter, LongerThanTwoWindows) { check(250); }
TEST_F(BackwardRouter, SigmoidVariant) { check(150, 1); }
TEST_F(BackwardRouter, SigmoidGumbel) { check(250, 1, 1.3f, true); }
TEST_F(BackwardRouter, SoftmaxGumbel) { check(37, 2, 0.8f, true); }

void BackwardRouter::check(int64_t T, int n_out, float tau, bool noise) {
    SCOPED_TRACE("seed " + std::to_string(seed) + ", T " + std::to_string(T) + ", outputs " + std::to_string(n_out) +
                 ", tau " + std::to_string(tau) + (noise ? ", noise" : ""));
    const int d = 8, H = n_out == 1 ? 5 : 3, window = 100;  // the LayerNorm needs a few heads
    const RouterLayer r = random_router(d, rng, n_out);
    RouterNoise nz;
    nz.tau = tau;
    if (noise) nz.logistic = randn(size_t(H), rng, 1.5f);
    const std::vector<float> keys = randn(size_t(T) * H * d, rng);
    // dz > 0: the backward is linear in dz, so one generic positive dz tests it as well as any, and
    // the bias gradients (sums over heads) do not cancel to a few ulps of their terms.
    std::vector<float> R(static_cast<size_t>(H));
    std::uniform_real_distribution<float> pos(0.5f, 1.5f);
    for (float& x : R) x = pos(rng);

    const RouterActs a = router_forward(r, keys.data(), T, H, d, window, nz);
    std::vector<float> x(size_t(H) * d), logits(size_t(H) * size_t(n_out));
    router_pool(keys.data(), T, H, d, window, x.data());
    Router::mlp(r, x.data(), H, logits.data());
    EXPECT_TRUE(close_enough(a.x, x, nullptr, 1e-6));
    EXPECT_TRUE(close_enough(a.logits, logits, nullptr, 1e-5));
    const RouterDecision dec = Router::decide(r, x.data(), H);
    // The sigmoid variant's LayerNorm subtracts the heads' mean logit: fp32 rounding of the logits,
    // relative to their size, grows by kappa = max |logit| / their standard deviation in the
    // margins and in every gradient through them. The fp32 rule scales with it (1 for softmax).
    double kappa = 1;
    if (n_out == 1) {
        double mean = 0, var = 0, mx = 0;
        for (float l : a.logits) mean += double(l) / H;
        for (float l : a.logits) {
            var += (l - mean) * (l - mean) / H;
            mx = std::max(mx, double(std::fabs(l)));
        }
        // Its backward (dm − mean(dm) − u·mean(dm·u)) cancels as well, which kappa does not measure:
        // at least 10.
        kappa = std::max(10.0, mx / std::sqrt(var));
    }
    for (int h = 0; h < H; ++h) {
        if (!noise) {  // the inference decision and probability (at tau 1)
            EXPECT_EQ(a.z[size_t(h)], float(dec.full[size_t(h)])) << "head " << h;
            if (tau == 1.0f) {
                EXPECT_NEAR(a.soft[size_t(h)], dec.prob_fa[size_t(h)], 1e-6 * kappa) << "head " << h;
            }
        } else {  // hard = (margin + g > 0)
            EXPECT_EQ(a.z[size_t(h)], a.margin[size_t(h)] + nz.logistic[size_t(h)] > 0 ? 1.0f : 0.0f) << "head " << h;
        }
    }

    RouterLayer grads = router_zero_grads(r);
    std::vector<float> dk(keys.size(), 0.0f);
    router_backward(r, a, R.data(), grads, dk.data());
    const char* names[10] = {"fe0.w", "fe0.b", "fe2.w", "fe2.b", "rh0.w", "rh0.b", "rh2.w", "rh2.b", "rh4.w", "rh4.b"};
    const auto P = linears(r), G = linears(grads);
    for (int m = 0; m < 10; ++m) {
        const RouterLinear &p = *P[size_t(m / 2)], &g = *G[size_t(m / 2)];
        if (n_out == 1 && m == 9) {  // the LayerNorm removes any shift common to all heads: rh4.b's gradient is 0
            float mw = 0;
            for (float x : G[4]->w) mw = std::max(mw, std::fabs(x));
            EXPECT_LE(std::fabs(g.b[0]), kTol * kappa * mw) << "rh4.b of the sigmoid variant";
            continue;
        }
        auto loss = [&](const std::vector<double>& xd, size_t) {
            return soft_loss(r, keys, T, H, d, window, R, m, xd, nz);
        };
        EXPECT_TRUE(fd_check("router T " + std::to_string(T) + " " + names[m], m % 2 ? p.b : p.w, m % 2 ? g.b : g.w,
                             loss, rng, 1000, kTol * kappa));
    }
    auto kloss = [&](const std::vector<double>& xd, size_t) { return soft_loss(r, keys, T, H, d, window, R, 10, xd, nz); };
    EXPECT_TRUE(fd_check("router T " + std::to_string(T) + " dk_prerope", keys, dk, kloss, rng, 1000, kTol * kappa));
    if (n_out == 1) std::printf("sigmoid variant: kappa %.1f\n", kappa);

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
        EXPECT_TRUE(close_enough(G2[size_t(l)]->w, w2, nullptr, 1e-5)) << names[2 * l] << " accumulates";  // the fp32 rule
    }
}
