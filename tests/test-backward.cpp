// Finite-difference checks of the training backward passes (src/train/backward.h). Each backward
// runs in fp32 on fresh random inputs; its gradient of a random projection <R, output> is compared
// with central differences of the same loss computed by an fp64 reference forward written here, on
// every element of small tensors or a random sample of larger ones.
// Tolerance rule and harness: fd-check.h. Attention: test-backward-attention.cpp; router:
// test-backward-router.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <numeric>

#include "cpu/ops.h"
#include "fd-check.h"
#include "formats/quants.h"
#include "train/backward.h"

using namespace elastic;
using namespace elastic::test;
using namespace elastic::train;

namespace {

class BackwardOps : public BackwardTest {};

}  // namespace

TEST_F(BackwardOps, RmsNorm) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const double eps = 1e-5;
    for (const auto& shape : {std::pair<int64_t, int64_t>{7, 64}, {3, 576}}) {
        const int64_t rows = shape.first, dim = shape.second;  // not a structured binding: lambdas capture it (clang 14)
        const auto x = randn(size_t(rows * dim), rng), w = randn(size_t(dim), rng), R = randn(size_t(rows * dim), rng);
        auto dx = poisoned(x.size());
        rms_norm_backward(x.data(), w.data(), R.data(), dx.data(), rows, dim, float(eps));
        auto row_loss = [&](const std::vector<double>& xd, size_t i) {
            const int64_t t = int64_t(i) / dim;
            const double* xr = xd.data() + t * dim;
            double ss = 0, l = 0;
            for (int64_t c = 0; c < dim; ++c) ss += xr[c] * xr[c];
            const double r = 1.0 / std::sqrt(ss / double(dim) + eps);
            for (int64_t c = 0; c < dim; ++c) l += R[size_t(t * dim + c)] * xr[c] * r * w[size_t(c)];
            return l;
        };
        EXPECT_TRUE(fd_check("rms_norm dx dim " + std::to_string(dim), x, dx, row_loss, rng, 1000));
        std::vector<float> y(x.size()), y_ref(x.size());  // the reference above differentiates cpu::rms_norm
        cpu::rms_norm(x.data(), w.data(), y.data(), rows, dim, float(eps));
        for (int64_t t = 0; t < rows; ++t) {
            double ss = 0;
            for (int64_t c = 0; c < dim; ++c) ss += double(x[size_t(t * dim + c)]) * x[size_t(t * dim + c)];
            const double r = 1.0 / std::sqrt(ss / double(dim) + eps);
            for (int64_t c = 0; c < dim; ++c)
                y_ref[size_t(t * dim + c)] = float(x[size_t(t * dim + c)] * r * w[size_t(c)]);
        }
        EXPECT_TRUE(close_enough(y, y_ref, nullptr, 1e-5));
        auto acc = randn(x.size(), rng);
        const auto base = acc;
        rms_norm_backward(x.data(), w.data(), R.data(), acc.data(), rows, dim, float(eps), true);
        for (size_t i = 0; i < acc.size(); ++i) acc[i] -= base[i];
        EXPECT_TRUE(close_enough(acc, dx, nullptr, 1e-6)) << "accumulate";
    }
}

TEST_F(BackwardOps, Rope) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const int64_t T = 9;
    const int H = 3, d = 16;
    const std::vector<int32_t> pos = {0, 1, 2, 5, 17, 100, 1000, 4095, 8191};
    std::vector<float> inv_freq(size_t(d / 2));
    for (int i = 0; i < d / 2; ++i) inv_freq[size_t(i)] = float(std::pow(1e4, -2.0 * i / d));
    const auto x = randn(size_t(T * H * d), rng), R = randn(x.size(), rng);
    auto dx = R;
    rope_backward(dx.data(), T, H, d, pos.data(), inv_freq.data());
    auto loss = [&](const std::vector<double>& xd, size_t e) {
        const int64_t t = int64_t(e) / (H * d), base = int64_t(e) / d * d;
        double l = 0;
        for (int i = 0; i < d / 2; ++i) {
            const double ang = double(float(pos[size_t(t)]) * inv_freq[size_t(i)]), c = std::cos(ang),
                         s = std::sin(ang);
            const double a = xd[size_t(base + i)], b = xd[size_t(base + i + d / 2)];
            l += R[size_t(base + i)] * (a * c - b * s) + R[size_t(base + i + d / 2)] * (b * c + a * s);
        }
        return l;
    };
    EXPECT_TRUE(fd_check("rope dx", x, dx, loss, rng, 1000));
    auto y = x;  // the backward is the inverse rotation of cpu::rope
    cpu::rope(y.data(), T, H, d, pos.data(), inv_freq.data());
    rope_backward(y.data(), T, H, d, pos.data(), inv_freq.data());
    EXPECT_TRUE(close_enough(y, x, nullptr, 1e-6));
}

TEST_F(BackwardOps, Swiglu) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const int64_t n = 300;
    const auto gate = randn(size_t(n), rng, 2.0f), up = randn(size_t(n), rng), R = randn(size_t(n), rng);
    auto dg = poisoned(size_t(n)), du = poisoned(size_t(n));
    swiglu_backward(gate.data(), up.data(), R.data(), dg.data(), du.data(), n);
    auto silu = [](double g) { return g / (1.0 + std::exp(-g)); };
    EXPECT_TRUE(fd_check(
        "swiglu dgate", gate, dg, [&](const std::vector<double>& x, size_t i) { return R[i] * silu(x[i]) * up[i]; },
        rng, 1000));
    EXPECT_TRUE(fd_check(
        "swiglu dup", up, du, [&](const std::vector<double>& x, size_t i) { return R[i] * silu(gate[i]) * x[i]; }, rng,
        1000));
}

TEST_F(BackwardOps, MatmulDxAllTypes) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const int64_t rows = 300, cols = 512, T = 300;  // 2 token chunks x 2 column blocks x 2 row panels
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_K}) {
        std::vector<uint8_t> store;
        const Weight W = make_weight(t, rows, cols, rng, store);
        const std::vector<float> wf = weight_to_f32(W), x = randn(size_t(T * cols), rng),
                                 R = randn(size_t(T * rows), rng);
        auto dx = poisoned(x.size());
        matmul_dx(W, R.data(), dx.data(), T);
        auto loss = [&](const std::vector<double>& xd, size_t i) {
            const int64_t r0 = int64_t(i) / cols;
            double l = 0;
            for (int64_t r = 0; r < rows; ++r) {
                double y = 0;
                for (int64_t c = 0; c < cols; ++c) y += double(wf[size_t(r * cols + c)]) * xd[size_t(r0 * cols + c)];
                l += R[size_t(r0 * rows + r)] * y;
            }
            return l;
        };
        EXPECT_TRUE(fd_check(std::string("matmul_dx ") + dtype_name(t), x, dx, loss, rng, 48));
        std::vector<float> ref(x.size());  // the exact dy @ W, every element
        for (int64_t tk = 0; tk < T; ++tk)
            for (int64_t c = 0; c < cols; ++c) {
                double s = 0;
                for (int64_t r = 0; r < rows; ++r) s += double(R[size_t(tk * rows + r)]) * wf[size_t(r * cols + c)];
                ref[size_t(tk * cols + c)] = float(s);
            }
        EXPECT_TRUE(close_enough(dx, ref, nullptr, 1e-5)) << dtype_name(t);
        auto acc = randn(x.size(), rng);
        const auto base = acc;
        matmul_dx(W, R.data(), acc.data(), T, true);
        for (size_t i = 0; i < acc.size(); ++i) acc[i] -= base[i];
        EXPECT_TRUE(close_enough(acc, dx, nullptr, 1e-5)) << "accumulate " << dtype_name(t);
    }
}

TEST_F(BackwardOps, CrossEntropyChunked) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const int64_t T = 13, D = 64, V = 96;
    for (DType t : {DType::F32, DType::Q8_0}) {
        std::vector<uint8_t> store;
        const Weight W = make_weight(t, V, D, rng, store);
        const std::vector<float> wf = weight_to_f32(W), h = randn(size_t(T * D), rng);
        std::vector<int32_t> tg(static_cast<size_t>(T));
        std::uniform_int_distribution<int32_t> tok(0, int32_t(V - 1));
        for (auto& y : tg) y = tok(rng);
        for (int64_t i : {0, 4, 5, 9}) tg[size_t(i)] = -1;
        const double n = double(T - 4);
        auto row_loss = [&](const double* hr, int32_t y) {  // fp64 CE of one counted row
            std::vector<double> lg(static_cast<size_t>(V));
            double mx = -1e300, s = 0;
            for (int64_t v = 0; v < V; ++v) {
                double a = 0;
                for (int64_t c = 0; c < D; ++c) a += double(wf[size_t(v * D + c)]) * hr[c];
                mx = std::max(mx, lg[size_t(v)] = a);
            }
            for (double a : lg) s += std::exp(a - mx);
            return (mx + std::log(s) - lg[size_t(y)]) / n;
        };
        auto loss = [&](const std::vector<double>& hd, size_t i) {
            const int64_t r = int64_t(i) / D;
            return tg[size_t(r)] < 0 ? 0.0 : row_loss(hd.data() + r * D, tg[size_t(r)]);
        };
        auto dh = poisoned(h.size());
        const CrossEntropy ce = cross_entropy_chunked(W, h.data(), tg.data(), T, dh.data(), 4);
        const std::vector<double> hd(h.begin(), h.end());
        double ref = 0;
        for (int64_t r = 0; r < T; ++r) ref += loss(hd, size_t(r * D));
        EXPECT_EQ(ce.count, T - 4);
        EXPECT_NEAR(ce.loss, ref, 1e-6 * ref) << dtype_name(t);
        EXPECT_TRUE(fd_check(std::string("cross_entropy dh ") + dtype_name(t), h, dh, loss, rng, 1000));
        for (int64_t chunk : {1, 5, 13, 1000}) {
            auto dh2 = poisoned(h.size());
            const CrossEntropy ce2 = cross_entropy_chunked(W, h.data(), tg.data(), T, dh2.data(), chunk);
            EXPECT_NEAR(ce2.loss, ce.loss, 1e-6 * ce.loss) << "chunk " << chunk;
            EXPECT_TRUE(close_enough(dh2, dh, nullptr, 1e-5)) << "chunk " << chunk;  // sgemm shapes differ
        }
    }
    std::vector<uint8_t> store;
    const Weight W = make_weight(DType::F32, V, D, rng, store);
    const auto h = randn(size_t(T * D), rng);
    const std::vector<int32_t> none(size_t(T), -1);
    auto dh = poisoned(h.size());
    const CrossEntropy ce = cross_entropy_chunked(W, h.data(), none.data(), T, dh.data(), 4);
    EXPECT_EQ(ce.count, 0);
    EXPECT_EQ(ce.loss, 0.0);
    for (float g : dh) ASSERT_EQ(g, 0.0f);
}
