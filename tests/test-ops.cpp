// The op-test harness: each op runs on every backend against a naive fp64-accumulating reference
// on fresh random inputs, with outputs poisoned first. Tolerance rule (test-helpers.h close_enough):
// fp32 backends within 1e-5 of the largest reference magnitude; backends that round weights and
// GEMM inputs to bf16 (CUDA) within 2x the error of a naive bf16 implementation of the same op.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/error.h"
#include "cpu/ops.h"
#include "formats/quants.h"
#include "model/backend.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

struct TestBackend {
    std::unique_ptr<Backend> be;
    bool bf16;  // stores weights and GEMM inputs in bf16 (elementwise ops stay fp32)
};

// Every backend of this build that can run here: CUDA joins when a GPU is present.
std::vector<TestBackend> backends() {
    std::vector<TestBackend> v;
    v.push_back({make_cpu_backend(0), false});
#ifdef ELASTIC_HAVE_CUDA
    if (cuda_device_count() > 0) v.push_back({make_cuda_backend(0), true});
#endif
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

// The naive bf16 matmul: W (dequantised) and x rounded to bf16, products summed in fp32.
std::vector<float> matmul_naive_bf16(const Weight& W, const std::vector<float>& x, int64_t T) {
    std::vector<float> w = round_bf16(weight_to_f32(W)), xb = round_bf16(x), y(size_t(T * W.rows));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 0; r < W.rows; ++r) {
            float s = 0;
            for (int64_t c = 0; c < W.cols; ++c) s += w[size_t(r * W.cols + c)] * xb[size_t(t * W.cols + c)];
            y[size_t(t * W.rows + r)] = s;
        }
    return y;
}

}  // namespace

TEST(Ops, MatmulAllTypesAndShapes) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (auto& [be, bf16] : backends()) {
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
                const std::vector<float> naive = bf16 ? matmul_naive_bf16(w, x, T) : std::vector<float>{};
                EXPECT_TRUE(close_enough(by.get(), ref, bf16 ? &naive : nullptr))
                    << be->name() << " " << dtype_name(t) << " T=" << T;
            }
        }
    }
}

TEST(Ops, EmbeddingAllTypes) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (auto& [be, bf16] : backends()) {
        for (DType t : {DType::F32, DType::BF16, DType::Q8_0, DType::Q4_1, DType::Q6_K}) {
            const int64_t vocab = 50, cols = dtype_block_size(t) == 256 ? 512 : 96;
            std::vector<uint8_t> store;
            Weight E = make_weight(t, vocab, cols, rng, store);
            const std::vector<float> table = weight_to_f32(E);
            for (std::vector<int32_t> ids : {std::vector<int32_t>{7}, std::vector<int32_t>{0, 49, 3, 3, 17}}) {
                const int64_t T = int64_t(ids.size());
                std::vector<float> ref;
                for (int32_t id : ids) ref.insert(ref.end(), table.begin() + id * cols, table.begin() + (id + 1) * cols);
                Buf out(*be, poisoned(size_t(T * cols)));
                be->embedding(E, ids.data(), T, out.p);
                const std::vector<float> naive = round_bf16(ref);
                EXPECT_TRUE(close_enough(out.get(), ref, bf16 ? &naive : nullptr, 0.0))
                    << be->name() << " " << dtype_name(t) << " T=" << T;
            }
        }
    }
}

TEST(Ops, RmsNormRopeSwigluAddAgainstFormulas) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (auto& [be, bf16] : backends()) {
        for (int64_t dim : {96, 600}) {  // head-sized rows and model-sized rows
            const int64_t rows = 7;
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
            EXPECT_TRUE(close_enough(by.get(), ref)) << be->name() << " rms_norm dim=" << dim;
            be->rms_norm(bx.p, w.data(), bx.p, rows, dim, 1e-5f);  // in place
            EXPECT_TRUE(close_enough(bx.get(), ref)) << be->name() << " rms_norm in place dim=" << dim;
        }

        // RoPE (rotate_half): pairs (i, i + d/2) rotated by pos * inv_freq[i]. Scattered positions,
        // then consecutive ones (the forward's case, which a backend may pass without a copy).
        const int heads = 3, hd = 32;
        std::vector<float> freq(hd / 2);
        for (int i = 0; i < hd / 2; ++i) freq[size_t(i)] = float(std::pow(10000.0, -2.0 * i / hd));
        for (std::vector<int32_t> pos : {std::vector<int32_t>{0, 1, 17, 300, 4095}, std::vector<int32_t>{40, 41, 42},
                                         std::vector<int32_t>{9}}) {
            const int64_t T = int64_t(pos.size());
            std::vector<float> xr = randn(size_t(T * heads * hd), rng);
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
            EXPECT_TRUE(close_enough(br.get(), rref, nullptr, 2e-5)) << be->name() << " rope T=" << T;
        }

        std::vector<float> g = randn(100, rng, 3.0f), u = randn(100, rng), sref(100);
        for (size_t i = 0; i < 100; ++i) sref[i] = float(g[i] / (1.0 + std::exp(-double(g[i]))) * u[i]);
        Buf bg(*be, g), bu(*be, u), bs(*be, poisoned(100));
        be->swiglu(bg.p, bu.p, bs.p, 100);
        EXPECT_TRUE(close_enough(bs.get(), sref)) << be->name() << " swiglu";

        std::vector<float> aref(100);
        for (size_t i = 0; i < 100; ++i) aref[i] = g[i] + u[i];
        Buf ba(*be, g);
        be->add(ba.p, bu.p, 100);
        EXPECT_TRUE(close_enough(ba.get(), aref)) << be->name() << " add";
    }
}

// The router op on every backend against the CPU reference (Router::route: router_pool + the
// MLPs in fp32): fp32 rule. Sequences inside one pooling window, overlapping, and beyond; softmax
// and sigmoid heads.
TEST(Ops, RouterLogitsMatchReference) {
    std::mt19937_64 rng(fresh_seed());
    auto linear = [&](int in, int out) { return RouterLinear{in, out, randn(size_t(in) * out, rng, 0.3f), randn(size_t(out), rng, 0.1f)}; };
    for (auto& tb : backends())
        for (auto [d, H, n_out] : {std::tuple<int, int, int>{64, 3, 2}, {128, 8, 1}, {128, 8, 2}})
            for (int64_t T : {1, 57, 150, 1000}) {
                const RouterLayer r{linear(d, 4 * d), linear(4 * d, d), linear(d, 4 * d), linear(4 * d, d), linear(d, n_out)};
                const std::vector<float> k = randn(size_t(T) * H * d, rng);
                const Router router({r});
                std::vector<float> ref(size_t(H) * n_out), x(size_t(H) * d);
                router_pool(k.data(), T, H, d, router.window(), x.data());
                Router::mlp(r, x.data(), H, ref.data());
                Buf bk(*tb.be, k);
                std::vector<float> got(ref.size(), std::nanf(""));
                tb.be->router_logits(r, bk.p, T, H, d, router.window(), got.data());
                EXPECT_TRUE(close_enough(got, ref, nullptr, 1e-5)) << tb.be->name() << " d " << d << " H " << H << " T " << T;
                EXPECT_EQ(Router::decision(r, got, H).full, router.route(0, k.data(), T, H, d).full) << tb.be->name();
            }
}

// top_candidates on every backend against a full sort: vocabulary sizes around the device's
// block chunk (2048), ties, -inf entries, k from 1 to the maximum.
TEST(Ops, TopCandidatesMatchFullSort) {
    std::mt19937_64 rng(fresh_seed());
    for (auto& tb : backends())
        for (int32_t n : {1, 7, 2048, 2049, 49152, 151936})
            for (int k : {1, 2, 40, Backend::kMaxCandidates}) {
                std::vector<float> x = randn(size_t(n), rng, 4.0f);
                for (int32_t i = 0; i < n; i += 5) x[size_t(i)] = std::round(x[size_t(i)]);  // ties
                for (int32_t i = 3; i < n; i += 97) x[size_t(i)] = -INFINITY;
                std::vector<std::pair<float, int32_t>> want(static_cast<size_t>(n));
                for (int32_t i = 0; i < n; ++i) want[size_t(i)] = {x[size_t(i)], i};
                std::sort(want.begin(), want.end(),
                          [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
                want.resize(size_t(std::min<int32_t>(k, n)));
                Buf bx(*tb.be, x);
                std::vector<std::pair<float, int32_t>> got;
                tb.be->top_candidates(bx.p, n, k, got);
                EXPECT_EQ(got, want) << tb.be->name() << " n " << n << " k " << k;
            }
}

#ifdef ELASTIC_HAVE_CUDA
// Says in the test report whether the op tests above covered the CUDA backend.
TEST(Ops, CudaBackendCovered) {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: the op tests ran on the CPU backend only";
    SUCCEED();
}

// Device problems are user-facing errors, not crashes: a GPU that is not there, or no GPU at all.
TEST(Ops, CudaMissingDeviceIsAnError) {
    const int n = cuda_device_count();
    EXPECT_THROW(make_cuda_backend(n), Error);  // one past the last (device 0 when there is none)
    EXPECT_THROW(make_cuda_backend(-1), Error);
}
#endif
