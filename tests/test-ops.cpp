// The op-test harness: each op runs on every backend against a naive fp64-accumulating reference
// on fresh random inputs, with outputs poisoned first. Tolerance rule: fp32 backends within
// 1e-5 relative to the largest reference magnitude (after accumulation over up to a few thousand
// terms, scaled by sqrt(K) where stated).
#include <gtest/gtest.h>

#include <cmath>

#include "cpu/ops.h"
#include "formats/quants.h"
#include "model/backend.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

std::vector<std::unique_ptr<Backend>> backends() {
    std::vector<std::unique_ptr<Backend>> v;
    v.push_back(make_cpu_backend(0));
    return v;
}

struct Buf {  // a backend buffer mirrored from/to host vectors
    Backend& be;
    float* p;
    size_t n;
    Buf(Backend& b, const std::vector<float>& h) : be(b), p(b.alloc(h.size())), n(h.size()) { b.upload(p, h.data(), n); }
    ~Buf() { be.release(p); }
    std::vector<float> get() const {
        std::vector<float> h(n);
        be.download(h.data(), p, n);
        return h;
    }
};

Weight make_weight(DType t, int64_t rows, int64_t cols, std::mt19937_64& rng, std::vector<uint8_t>& store) {
    std::vector<float> f = randn(size_t(rows * cols), rng, 0.5f);
    store.resize(dtype_nbytes(t, rows * cols));
    const size_t rb = dtype_nbytes(t, cols);
    for (int64_t r = 0; r < rows; ++r) quantize(t, f.data() + r * cols, store.data() + size_t(r) * rb, cols);
    Weight w;
    w.type = t;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = rb;
    w.data = store.data();
    return w;
}

}  // namespace

TEST(Ops, MatmulAllTypesAndShapes) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (auto& be : backends()) {
        for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
            for (int64_t T : {1, 3, 5, 300}) {
                const int64_t cols = dtype_block_size(t) == 256 ? 512 : 96, rows = 70;
                std::vector<uint8_t> store;
                Weight w = make_weight(t, rows, cols, rng, store);
                std::vector<float> x = randn(size_t(T * cols), rng);
                std::vector<float> ref(static_cast<size_t>(T * rows));
                cpu::matmul_naive(w, x.data(), ref.data(), T);
                Buf bx(*be, x), by(*be, poisoned(size_t(T * rows)));
                be->matmul(w, bx.p, by.p, T);
                size_t worst = 0;
                double err = max_rel_err(by.get(), ref, &worst);
                EXPECT_LT(err, 1e-5) << be->name() << " " << dtype_name(t) << " T=" << T << " worst index " << worst;
            }
        }
    }
}

TEST(Ops, RmsNormRopeSwigluAgainstFormulas) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (auto& be : backends()) {
        const int64_t rows = 7, dim = 96;
        std::vector<float> x = randn(size_t(rows * dim), rng), w = randn(size_t(dim), rng);
        std::vector<float> ref(x.size());
        for (int64_t r = 0; r < rows; ++r) {
            double ss = 0;
            for (int64_t i = 0; i < dim; ++i) ss += double(x[size_t(r * dim + i)]) * x[size_t(r * dim + i)];
            double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
            for (int64_t i = 0; i < dim; ++i) ref[size_t(r * dim + i)] = float(x[size_t(r * dim + i)] * inv * w[size_t(i)]);
        }
        Buf bx(*be, x), by(*be, poisoned(x.size()));
        be->rms_norm(bx.p, w.data(), by.p, rows, dim, 1e-5f);
        EXPECT_LT(max_rel_err(by.get(), ref), 1e-5) << "rms_norm";

        // RoPE (rotate_half): pairs (i, i + d/2) rotated by pos * inv_freq[i].
        const int heads = 3, hd = 32;
        const int64_t T = 5;
        std::vector<float> xr = randn(size_t(T * heads * hd), rng), freq(hd / 2);
        for (int i = 0; i < hd / 2; ++i) freq[size_t(i)] = float(std::pow(10000.0, -2.0 * i / hd));
        std::vector<int32_t> pos = {0, 1, 17, 300, 4095};
        std::vector<float> rref = xr;
        for (int64_t t = 0; t < T; ++t)
            for (int h = 0; h < heads; ++h)
                for (int i = 0; i < hd / 2; ++i) {
                    float* p = rref.data() + (t * heads + h) * hd;
                    const float* s = xr.data() + (t * heads + h) * hd;
                    // The angle is the fp32 product, as in HF (exact position times fp32 frequency).
                    const double a = double(float(pos[size_t(t)]) * freq[size_t(i)]);
                    p[i] = float(s[i] * std::cos(a) - s[i + hd / 2] * std::sin(a));
                    p[i + hd / 2] = float(s[i + hd / 2] * std::cos(a) + s[i] * std::sin(a));
                }
        Buf br(*be, xr);
        be->rope(br.p, T, heads, hd, pos.data(), freq.data());
        EXPECT_LT(max_rel_err(br.get(), rref), 2e-5) << "rope";

        std::vector<float> g = randn(100, rng, 3.0f), u = randn(100, rng), sref(100);
        for (size_t i = 0; i < 100; ++i) sref[i] = float(g[i] / (1.0 + std::exp(-double(g[i]))) * u[i]);
        Buf bg(*be, g), bu(*be, u), bs(*be, poisoned(100));
        be->swiglu(bg.p, bu.p, bs.p, 100);
        EXPECT_LT(max_rel_err(bs.get(), sref), 1e-5) << "swiglu";
    }
}
