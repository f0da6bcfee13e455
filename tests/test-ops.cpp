// The op-test harness: every op of the Backend interface (model/backend.h), dense ops and the
// elastic attention ops (prefill, decode over the lean cache, XAttention estimation, router), runs
// on every backend of the build that can run here (CPU; CUDA when a GPU is present, in each of its
// precisions) against a naive fp64-accumulating reference on fresh random inputs, with outputs
// poisoned first. Tolerance rule (test-helpers.h close_enough): fp32 within rel·max|ref|;
// backends that round weights, GEMM inputs or attention tensors to 16 bits within 2x the error of
// a naive implementation that rounds the same tensors. ELASTIC_TEST_PERF=1 adds a timing line per
// op and backend (perf mode; OpsPerf.*).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>

#include "core/error.h"
#include "cpu/attention.h"
#include "cpu/ops.h"
#include "formats/quants.h"
#include "model/backend.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

struct TestBackend {
    std::unique_ptr<Backend> be;
    bool bf16;  // stores weights and GEMM inputs in bf16 (the residual stream stays fp32)
};

// Every backend of this build that can run here: CUDA joins when a GPU is present.
std::vector<TestBackend> backends() {
    std::vector<TestBackend> v;
    v.push_back({make_cpu_backend(0), false});
    if (cuda_device_count() > 0) v.push_back({make_cuda_backend(0), true});
    return v;
}

// A backend buffer mirrored from/to host vectors (any type; host side fp32).
struct HBuf {
    Backend& be;
    Buf b;
    size_t n;
    HBuf(Backend& be_, const std::vector<float>& h, DType t = DType::F32) : be(be_), b(be_.alloc(h.size(), t)), n(h.size()) {
        be.upload(b, h.data(), n);
    }
    ~HBuf() { be.release(b); }
    std::vector<float> get() const {
        std::vector<float> h(n);
        be.download(h.data(), b, n);
        return h;
    }
};

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
                // The CPU's decode path multiplies quantised weights with the activation quantised to
                // Q8 (formats/quants.h): its reference is the naive product with that activation.
                const bool q8 = std::string(be->name()) == "cpu" && T <= cpu::kMatvecMaxT && q8_dot_supported(t) &&
                                cpu_kernels() != CpuKernels::F32;
                std::vector<float> xr = x;
                if (q8)
                    for (int64_t r = 0; r < T; ++r) {
                        Q8Act a;
                        quantize_act_q8(x.data() + r * cols, cols, a);
                        for (int64_t c = 0; c < cols; ++c)
                            xr[size_t(r * cols + c)] = a.d[size_t(c / 32)] * float(a.q[size_t(c)]);
                    }
                cpu::matmul_naive(w, xr.data(), ref.data(), T);
                HBuf bx(*be, x), by(*be, poisoned(size_t(T * rows)));
                be->matmul(*be->upload_matrix(w), bx.b, by.b, T);
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
                HBuf out(*be, poisoned(size_t(T * cols)));
                be->embedding(*be->upload_matrix(E), ids.data(), T, out.b);
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
            HBuf bx(*be, x), by(*be, poisoned(x.size()));
            const auto wv = be->upload_vector(w);
            be->rms_norm(bx.b, *wv, by.b, rows, dim, 1e-5f);
            EXPECT_TRUE(close_enough(by.get(), ref)) << be->name() << " rms_norm dim=" << dim;
            be->rms_norm(bx.b, *wv, bx.b, rows, dim, 1e-5f);  // in place
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
            HBuf br(*be, xr);
            be->rope(br.b, T, heads, hd, pos.data(), *be->upload_vector(freq));
            EXPECT_TRUE(close_enough(br.get(), rref, nullptr, 2e-5)) << be->name() << " rope T=" << T;
        }

        std::vector<float> g = randn(100, rng, 3.0f), u = randn(100, rng), sref(100);
        for (size_t i = 0; i < 100; ++i) sref[i] = float(g[i] / (1.0 + std::exp(-double(g[i]))) * u[i]);
        HBuf bg(*be, g), bu(*be, u), bs(*be, poisoned(100));
        be->swiglu(bg.b, bu.b, bs.b, 100);
        EXPECT_TRUE(close_enough(bs.get(), sref)) << be->name() << " swiglu";

        std::vector<float> aref(100);
        for (size_t i = 0; i < 100; ++i) aref[i] = g[i] + u[i];
        HBuf ba(*be, g);
        be->add(ba.b, bu.b, 100);
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
                HBuf bk(*tb.be, k);
                std::vector<float> got(ref.size(), std::nanf(""));
                tb.be->router_logits(*tb.be->upload_router(r, H), bk.b, T, H, d, router.window(), got.data());
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
                HBuf bx(*tb.be, x);
                std::vector<std::pair<float, int32_t>> got;
                tb.be->top_candidates(bx.b, n, k, got);
                EXPECT_EQ(got, want) << tb.be->name() << " n " << n << " k " << k;
            }
}

// Device problems are user-facing errors, not crashes: a GPU that is not there, or no GPU at all
// (or a build without CUDA).
TEST(Ops, CudaMissingDeviceIsAnError) {
    const int n = cuda_device_count();
    EXPECT_THROW(make_cuda_backend(n), Error);  // one past the last (device 0 when there is none)
    EXPECT_THROW(make_cuda_backend(-1), Error);
}


namespace {

// Rounds like the backend's attention type stores (fp32: unchanged).
float round_attn(DType t, float x) {
    if (t == DType::BF16) return round_bf16(x);
    if (t == DType::F16) return fp16_to_f32(f32_to_fp16(x));
    return x;
}

// Every backend the attention ops run on: the CPU, and CUDA in each precision when a GPU is here.
std::vector<std::unique_ptr<Backend>> attention_backends() {
    std::vector<std::unique_ptr<Backend>> v;
    v.push_back(make_cpu_backend(0));
    if (cuda_device_count() > 0)
        for (DType p : {DType::BF16, DType::F16, DType::F32}) v.push_back(make_cuda_backend(0, p));
    return v;
}

// The naive low-precision attention of the tolerance rule: fp64 scores on the (already rounded)
// inputs, probabilities rounded to t before P·V (what a tensor-core kernel multiplies), output
// rounded to t.
std::vector<float> attn_naive_lowp(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                   int64_t T, int Hq, int Hkv, int d, const LayerPlan& plan, const StreamingWindow& win,
                                   int64_t block, float scale, DType t) {
    std::vector<float> out(q.size());
    const int G = Hq / Hkv;
    std::vector<double> s(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i)
        for (int h = 0; h < Hq; ++h) {
            const int g = h / G;
            const BlockList* xa = plan.mode[size_t(g)] == HeadMode::XA ? &plan.xa[size_t(g)] : nullptr;
            double m = -INFINITY;
            for (int64_t j = 0; j <= i; ++j) {
                s[size_t(j)] = -INFINITY;
                if (!plan_allows(plan.mode[size_t(g)], win, xa, block, i, j)) continue;
                double a = 0;
                for (int x = 0; x < d; ++x) a += double(q[size_t((i * Hq + h) * d + x)]) * k[size_t((j * Hkv + g) * d + x)];
                s[size_t(j)] = a * scale;
                m = std::max(m, s[size_t(j)]);
            }
            double l = 0;
            std::vector<double> o(static_cast<size_t>(d), 0.0);
            for (int64_t j = 0; j <= i; ++j) {
                if (s[size_t(j)] == -INFINITY) continue;
                const double p = std::exp(s[size_t(j)] - m);
                l += p;
                const double pr = round_attn(t, float(p));
                for (int x = 0; x < d; ++x) o[size_t(x)] += pr * v[size_t((j * Hkv + g) * d + x)];
            }
            for (int x = 0; x < d; ++x) out[size_t((i * Hq + h) * d + x)] = round_attn(t, float(o[size_t(x)] / l));
        }
    return out;
}

LayerPlan mixed_plan(int Hkv, int64_t T, int64_t block, std::mt19937_64& rng) {
    LayerPlan plan;
    plan.xa.resize(size_t(Hkv));
    for (int g = 0; g < Hkv; ++g) {
        const HeadMode m = HeadMode(g % 3);  // FA, SSA, XA, FA, ...
        plan.mode.push_back(m);
        if (m == HeadMode::XA) plan.xa[size_t(g)] = random_blocks(T, block, 0.4, rng);
    }
    return plan;
}

}  // namespace

// Prefill through Backend::attn_hybrid_prefill on every backend and precision: sequences shorter
// than the sink, not a multiple of the tile, GQA groups 1 and 3, head_dim 64 and 128, every mode in
// one launch. The reference reads the inputs as the backend holds them (rounded to its type).
TEST(Ops, AttentionPrefillEveryMode) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const StreamingWindow win{16, 64};
    const int64_t block = 64;
    for (auto& be : attention_backends())
        for (auto [Hq, Hkv, d] : {std::tuple<int, int, int>{3, 3, 64}, {9, 3, 64}, {6, 2, 128}})
            for (int64_t T : {1, 13, 200, 333}) {
                const DType t = be->attn_type();
                const LayerPlan plan = mixed_plan(Hkv, T, block, rng);
                const float scale = 1.0f / std::sqrt(float(d));
                HBuf q(*be, randn(size_t(T * Hq * d), rng), t), k(*be, randn(size_t(T * Hkv * d), rng), t),
                    v(*be, randn(size_t(T * Hkv * d), rng), t), out(*be, poisoned(size_t(T * Hq * d)), t);
                be->attn_hybrid_prefill(q.b, k.b, v.b, out.b, T, Hq, Hkv, d, plan, win, block, scale);
                const std::vector<float> hq = q.get(), hk = k.get(), hv = v.get();
                std::vector<float> ref(hq.size());
                cpu::attn_hybrid_naive(hq.data(), hk.data(), hv.data(), ref.data(), T, Hq, Hkv, d, plan, win, block, scale);
                const std::vector<float> lowp =
                    t == DType::F32 ? std::vector<float>{} : attn_naive_lowp(hq, hk, hv, T, Hq, Hkv, d, plan, win, block, scale, t);
                EXPECT_TRUE(close_enough(out.get(), ref, t == DType::F32 ? nullptr : &lowp, t == DType::F32 ? 1e-5 : 1e-3))
                    << be->name() << " T " << T << " heads " << Hq << "/" << Hkv << " d " << d;
            }
}

// Decode through the backend's lean cache: prefill a prompt into the cache, then append tokens one
// by one and decode each, against the fp64 naive decode over the full K/V with the same masks. The
// SSA ring wraps (positions well past sink + local).
TEST(Ops, AttentionDecodeOverLeanCache) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const StreamingWindow win{8, 32};
    for (auto& be : attention_backends())
        for (auto [Hq, Hkv, d] : {std::tuple<int, int, int>{9, 3, 64}, {4, 1, 128}}) {
            const DType t = be->attn_type();
            const int64_t T0 = 50, steps = 30, cap = T0 + steps, kvd = int64_t(Hkv) * d, qd = int64_t(Hq) * d;
            LayerPlan plan;
            for (int g = 0; g < Hkv; ++g) plan.mode.push_back(g % 2 ? HeadMode::SSA : HeadMode::FA);
            if (Hkv == 1) plan.mode[0] = HeadMode::SSA;
            HBuf k(*be, randn(size_t(cap * kvd), rng), t), v(*be, randn(size_t(cap * kvd), rng), t),
                q(*be, randn(size_t(steps * qd), rng), t), out(*be, poisoned(size_t(steps * qd)), t);
            auto cache = be->new_layer_cache(plan, win, cap, Hkv, d);
            be->cache_store_prefill(*cache, k.b, v.b, T0);
            const float scale = 1.0f / std::sqrt(float(d));
            for (int64_t s = 0; s < steps; ++s) {
                const int64_t pos = T0 + s;
                be->cache_append(*cache, k.b.at(pos * kvd), v.b.at(pos * kvd), pos);
                be->attn_decode(q.b.at(s * qd), *cache, pos, out.b.at(s * qd), Hq, scale);
            }
            // The reference sees K/V as the cache stores them (bf16 in every CUDA precision).
            std::vector<float> hk = k.get(), hv = v.get(), hq = q.get(), got = out.get();
            if (std::string(be->name()) != "cpu")
                for (std::vector<float>* x : {&hk, &hv})
                    for (float& e : *x) e = round_bf16(e);
            std::vector<float> ref(got.size()), lowp(got.size());
            for (int64_t s = 0; s < steps; ++s) {
                cpu::attn_decode_naive(hq.data() + s * qd, hk.data(), hv.data(), T0 + s, ref.data() + s * qd, Hq, Hkv, d, plan,
                                       win, scale);
                for (int64_t x = 0; x < qd; ++x) lowp[size_t(s * qd + x)] = round_attn(t, ref[size_t(s * qd + x)]);
            }
            EXPECT_TRUE(close_enough(got, ref, t == DType::F32 ? nullptr : &lowp, t == DType::F32 ? 1e-5 : 1e-3))
                << be->name() << " heads " << Hq << "/" << Hkv << " d " << d;
            const size_t full_bytes = size_t(cap) * size_t(kvd) * 2 * (std::string(be->name()) == "cpu" ? 4 : 2);
            EXPECT_LT(cache->bytes(), full_bytes) << be->name() << ": SSA heads keep only sink + window";
        }
}

// XAttention estimation through the backend: on fp32 backends the block lists equal the naive
// fp64 estimate's; on 16-bit backends (the same rounded inputs, fp32 dot products instead of fp64)
// only blocks at the threshold's edge may differ: at least 95 % of the kept blocks agree, and every
// list keeps block 0 and its diagonal.
TEST(Ops, XAttentionEstimation) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (auto& be : attention_backends())
        for (int64_t T : {100, 700}) {
            const DType t = be->attn_type();
            const int Hq = 6, Hkv = 2, d = 64;
            XAParams xp;
            xp.block = 64;
            xp.threshold = 0.9;
            HBuf q(*be, randn(size_t(T * Hq * d), rng), t), k(*be, randn(size_t(T * Hkv * d), rng), t);
            const std::vector<float> hq = q.get(), hk = k.get();
            const BlockList want = cpu::xa_estimate_head_naive(hq.data(), hk.data(), T, Hq, Hkv, d, 0, xp);
            // Both ways to the lists: xa_fill_plan (host lists), and the forward's xa_prefill_plan
            // (on CUDA the selection stays on the device; the lists are copied back for the check,
            // and the backend's pair count must be what the lists give).
            for (bool forward : {false, true}) {
                SCOPED_TRACE(forward ? "xa_prefill_plan" : "xa_fill_plan");
                LayerPlan plan;
                plan.mode = {HeadMode::XA, HeadMode::FA};
                if (forward) {
                    be->xa_prefill_plan(q.b, k.b, T, Hq, Hkv, d, xp, plan);
                    be->sync();
                    be->xa_finish_plan(plan);
                    const std::vector<int64_t> pairs = plan.xa_pairs;
                    const bool on_device = plan.xa_on_device;
                    be->xa_download(plan);
                    EXPECT_FALSE(plan.xa_on_device);
                    if (on_device) {
                        ASSERT_EQ(pairs.size(), size_t(Hkv));
                        EXPECT_EQ(pairs[0], attended_pairs(HeadMode::XA, {}, &plan.xa[0], xp.block, T)) << be->name();
                        EXPECT_EQ(pairs[1], 0) << be->name();
                    }
                } else {
                    be->xa_fill_plan(q.b, k.b, T, Hq, Hkv, d, xp, plan);
                    EXPECT_FALSE(plan.xa_on_device);
                }
                ASSERT_EQ(plan.xa.size(), size_t(Hkv));
                const BlockList& got = plan.xa[0];
                ASSERT_EQ(got.n_query_blocks(), want.n_query_blocks()) << be->name();
                if (t == DType::F32) {
                    EXPECT_EQ(got.offsets, want.offsets) << be->name() << " T " << T;
                    EXPECT_EQ(got.blocks, want.blocks) << be->name() << " T " << T;
                } else {
                    size_t agree = 0;
                    for (int64_t qb = 0; qb < got.n_query_blocks(); ++qb) {
                        const auto b = got.blocks.begin() + got.offsets[size_t(qb)], e = got.blocks.begin() + got.offsets[size_t(qb) + 1];
                        EXPECT_TRUE(std::find(b, e, 0) != e && std::find(b, e, int32_t(qb)) != e) << be->name() << " qb " << qb;
                        for (int64_t x = want.offsets[size_t(qb)]; x < want.offsets[size_t(qb) + 1]; ++x)
                            agree += std::find(b, e, want.blocks[size_t(x)]) != e;
                    }
                    EXPECT_GE(double(agree), 0.95 * double(want.blocks.size())) << be->name() << " T " << T;
                    EXPECT_LE(got.blocks.size(), want.blocks.size() + want.blocks.size() / 20 + 1) << be->name() << " T " << T;
                }
            }
        }
}

// Perf mode (ELASTIC_TEST_PERF=1): one timing line per op and backend on model-sized shapes, with
// the achieved rate; skipped otherwise (CONVENTIONS.md #4: the harness's perf mode).
TEST(OpsPerf, TimesEveryOp) {
    if (!std::getenv("ELASTIC_TEST_PERF")) GTEST_SKIP() << "set ELASTIC_TEST_PERF=1 for timings";
    std::mt19937_64 rng(1);
    for (auto& be : attention_backends()) {
        const DType t = be->attn_type();
        auto time = [&](const char* what, double units, const char* unit, const std::function<void()>& f) {
            f();
            be->sync();
            const int reps = 5;
            const auto t0 = std::chrono::steady_clock::now();
            for (int r = 0; r < reps; ++r) f();
            be->sync();
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
            std::printf("[perf] %-14s %-12s %9.3f ms  %8.2f %s\n", be->name(), what, s * 1e3, units / s, unit);
        };
        const int64_t T = 2048, D = 576, F = 1536;
        std::vector<uint8_t> store;
        const auto W = be->upload_matrix(make_weight(DType::BF16, F, D, rng, store));
        HBuf x(*be, randn(size_t(T * D), rng)), y(*be, poisoned(size_t(T * F)));
        time("matmul", 2.0 * T * D * F * 1e-9, "GFLOP/s", [&] { be->matmul(*W, x.b, y.b, T); });
        const auto nv = be->upload_vector(randn(size_t(D), rng));
        time("rms_norm", 2.0 * T * D * 4 * 1e-9, "GB/s", [&] { be->rms_norm(x.b, *nv, x.b, T, D, 1e-5f); });
        const int Hq = 9, Hkv = 3, d = 64;
        HBuf q(*be, randn(size_t(T * Hq * d), rng), t), k(*be, randn(size_t(T * Hkv * d), rng), t),
            v(*be, randn(size_t(T * Hkv * d), rng), t), o(*be, poisoned(size_t(T * Hq * d)), t);
        LayerPlan plan;
        plan.mode.assign(size_t(Hkv), HeadMode::FA);
        const double pairs = double(T) * double(T + 1) / 2 * Hq;
        time("prefill FA", pairs * 4 * d * 1e-9, "GFLOP/s",
             [&] { be->attn_hybrid_prefill(q.b, k.b, v.b, o.b, T, Hq, Hkv, d, plan, StreamingWindow{}, 128, 0.125f); });
        // The router of one layer (pooling + both MLPs; the released routers' 4d widths).
        auto lin = [&](int in, int out) { return RouterLinear{in, out, randn(size_t(in) * out, rng, 0.1f), randn(size_t(out), rng, 0.1f)}; };
        const RouterLayer rl{lin(d, 4 * d), lin(4 * d, d), lin(d, 4 * d), lin(4 * d, d), lin(d, 2)};
        const auto rw = be->upload_router(rl, Hkv);
        std::vector<float> logits(size_t(Hkv) * 2);
        const double flops = 2.0 * Hkv * (4.0 * d * 4 * d + 2.0 * d);
        time("router", flops * 1e-9, "GFLOP/s", [&] { be->router_logits(*rw, k.b, T, Hkv, d, 100, logits.data()); });
    }
}
