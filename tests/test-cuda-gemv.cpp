// The decode products on the GPU (compiled only with ELASTIC_CUDA; skipped without a device): our
// GEMV (cuda::gemv) and matmul's paths through GemvTuning (forced ours, forced cuBLAS, auto) for
// T = 1..4, bf16 / fp16 weights, x in the weight type or fp32 (rounded to it as it is read), y in
// fp32 or the weight type, against an fp64 product of the same rounded inputs on the host.
// Tolerance: the rounded inputs make every product w·x exact in fp32 (8 + 8 or 11 + 11 significant
// bits), so the only errors are the fp32 sums, at most (terms per lane + 13 tree levels) · 2^-24 of
// Σ|w·x| (we allow 1e-5 of Σ|w·x|, ~170 ulps), and for a 16-bit y one rounding of the result
// (half an ulp: at most 2^-8 |y| for bf16, 2^-11 |y| for fp16). Fresh random inputs; outputs poisoned first.
#ifdef ELASTIC_HAVE_CUDA

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cuda/ops.h"
#include "model/backend.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

// A device tensor of type t filled from host fp32 values (converted on the device, round to
// nearest even), read back as fp32.
struct Dev {
    void* p = nullptr;
    size_t n;
    DType t;
    Dev(size_t n_, DType t_) : n(n_), t(t_) {
        if (cudaMalloc(&p, n * cuda::elem_bytes(t)) != cudaSuccess) std::abort();
    }
    Dev(const std::vector<float>& h, DType t_) : Dev(h.size(), t_) {
        float* f = nullptr;
        if (cudaMalloc(&f, n * sizeof(float)) != cudaSuccess) std::abort();
        if (cudaMemcpy(f, h.data(), n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) std::abort();
        cuda::convert(f, DType::F32, p, t, int64_t(n), nullptr);
        if (cudaDeviceSynchronize() != cudaSuccess) std::abort();
        cudaFree(f);
    }
    ~Dev() { cudaFree(p); }
    Dev(const Dev&) = delete;
    void poison() { cudaMemset(p, 0xff, n * cuda::elem_bytes(t)); }  // NaN in every type
    std::vector<float> get() const {
        float* f = nullptr;
        if (cudaMalloc(&f, n * sizeof(float)) != cudaSuccess) std::abort();
        cuda::convert(p, t, f, DType::F32, int64_t(n), nullptr);
        std::vector<float> h(n);
        if (cudaMemcpy(h.data(), f, n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) std::abort();
        cudaFree(f);
        return h;
    }
};

float round_to(float f, DType t) {
    if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(f));
    if (t == DType::F16) return fp16_to_f32(f32_to_fp16(f));
    return f;
}
const char* name(DType t) { return t == DType::BF16 ? "bf16" : t == DType::F16 ? "fp16" : "fp32"; }

class CudaGemv : public ::testing::Test {
protected:
    void SetUp() override {
        if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
        if (cublasCreate(&h_) != CUBLAS_STATUS_SUCCESS) std::abort();
    }
    void TearDown() override {
        if (h_) cublasDestroy(h_);
    }
    cublasHandle_t h_ = nullptr;
};

enum class Path { Kernel, Ours, Cublas, Auto };

void check(cublasHandle_t h, Path path, int64_t rows, int64_t cols, int64_t T, DType tw, DType tx, DType ty,
           std::mt19937_64& rng) {
    const std::vector<float> w = randn(size_t(rows * cols), rng), x = randn(size_t(T * cols), rng);
    const Dev dw(w, tw), dx(x, tx);
    Dev dy(size_t(T * rows), ty), xs(size_t(T * cols), tw);
    dy.poison();
    if (path == Path::Kernel) {
        ASSERT_TRUE(cuda::gemv_takes(tw, rows, cols, dw.p, tx, dx.p, ty, T));
        cuda::gemv(dw.p, tw, rows, cols, dx.p, tx, dy.p, ty, T, nullptr);
    } else {
        cuda::GemvTuning tune;
        tune.mode = path == Path::Ours ? cuda::GemvTuning::kOurs
                  : path == Path::Cublas ? cuda::GemvTuning::kCublas : cuda::GemvTuning::kAuto;
        cuda::matmul(h, dw.p, tw, rows, cols, dx.p, tx, xs.p, dy.p, ty, T, nullptr, &tune);
        if (path == Path::Auto) {
            ASSERT_EQ(tune.ours.size(), size_t(1));  // timed once, decision kept
        }
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got = dy.get();
    const double ulp_y = ty == DType::BF16 ? std::ldexp(1.0, -8) : ty == DType::F16 ? std::ldexp(1.0, -11) : 0.0;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 0; r < rows; ++r) {
            double ref = 0.0, mag = 0.0;
            for (int64_t c = 0; c < cols; ++c) {
                const double p = double(round_to(w[size_t(r * cols + c)], tw)) * double(round_to(x[size_t(t * cols + c)], tw));
                ref += p;
                mag += std::fabs(p);
            }
            const double g = got[size_t(t * rows + r)];
            ASSERT_LE(std::fabs(g - ref), 1e-5 * mag + ulp_y * std::fabs(ref) + 1e-30)
                << "path " << int(path) << " rows " << rows << " cols " << cols << " T " << T << " w " << name(tw) << " x "
                << name(tx) << " y " << name(ty) << ": row " << r << " token " << t << " got " << g << " want " << ref;
        }
}

}  // namespace

TEST_F(CudaGemv, KernelMatchesFp64) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    // Rows not a multiple of the CTA's 4; columns from one 16-byte piece to several steps of the
    // CTA's 256 lanes, not multiples of them.
    const int64_t shapes[][2] = {{1, 8}, {3, 64}, {37, 520}, {130, 2056}, {1024, 4096}, {9, 12288}};
    for (const DType tw : {DType::BF16, DType::F16})
        for (const DType tx : {tw, DType::F32})
            for (const DType ty : {DType::F32, tw})
                for (int64_t T = 1; T <= cuda::kGemvMaxT; ++T)
                    for (const auto& s : shapes) check(h_, Path::Kernel, s[0], s[1], T, tw, tx, ty, rng);
}

TEST_F(CudaGemv, MatmulPathsAgree) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    for (const Path p : {Path::Ours, Path::Cublas, Path::Auto})
        for (const DType tx : {DType::BF16, DType::F32}) {
            check(h_, p, 1024, 4096, 1, DType::BF16, tx, DType::BF16, rng);
            check(h_, p, 515, 1000, 3, DType::BF16, tx, DType::F32, rng);
        }
}

TEST_F(CudaGemv, TakesOnlyWhatItCan) {
    alignas(16) static char buf[64];
    EXPECT_TRUE(cuda::gemv_takes(DType::BF16, 4, 8, buf, DType::F32, buf, DType::BF16, 1));
    EXPECT_FALSE(cuda::gemv_takes(DType::F32, 4, 8, buf, DType::F32, buf, DType::F32, 1));    // fp32 weights
    EXPECT_FALSE(cuda::gemv_takes(DType::BF16, 4, 12, buf, DType::BF16, buf, DType::BF16, 1));  // cols % 8
    EXPECT_FALSE(cuda::gemv_takes(DType::BF16, 4, 8, buf, DType::BF16, buf, DType::BF16, 5));   // T > 4
    EXPECT_FALSE(cuda::gemv_takes(DType::BF16, 4, 8, buf + 2, DType::BF16, buf, DType::BF16, 1));  // unaligned W
    EXPECT_FALSE(cuda::gemv_takes(DType::BF16, 4, 8, buf, DType::F16, buf, DType::BF16, 1));    // x of a third type
}

// The fused decode steps of the CUDA backend (Backend::norm_matmuls, norm_swiglu, matmul_add,
// qk_norm_rope: one launch each) against the backend's own unfused steps (Backend's defaults:
// rms_norm, matmul, swiglu, add, rope), with our GEMV forced for both (ELASTIC_GEMV=ours): the
// fused kernels repeat the unfused reductions and roundings, so the outputs must be equal bit for
// bit. Shapes with partial 4-row CTAs (66 rows) and a model width that is not a multiple of 256.
TEST(CudaFused, LayerStepsGiveTheBitsOfTheUnfusedSteps) {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    setenv("ELASTIC_GEMV", "ours", 1);
    struct Unset {
        ~Unset() { unsetenv("ELASTIC_GEMV"); }
    } unset;
    for (const DType prec : {DType::BF16, DType::F16}) {
        auto be = make_cuda_backend(0, prec);
        const DType at = be->attn_type();
        const int64_t D = 1000, nq = 304, nkv = 66, F = 1512;
        std::vector<uint8_t> st[7];
        const auto wq = be->upload_matrix(make_weight(DType::F32, nq, D, rng, st[0]));
        const auto wk = be->upload_matrix(make_weight(DType::F32, nkv, D, rng, st[1]));
        const auto wv = be->upload_matrix(make_weight(DType::F32, nkv, D, rng, st[2]));
        const auto wo = be->upload_matrix(make_weight(DType::F32, D, nq, rng, st[3]));
        const auto wg = be->upload_matrix(make_weight(DType::F32, F, D, rng, st[4]));
        const auto wu = be->upload_matrix(make_weight(DType::F32, F, D, rng, st[5]));
        const auto wd = be->upload_matrix(make_weight(DType::F32, D, F, rng, st[6]));
        std::vector<float> nw = randn(size_t(D), rng, 0.3f);
        for (float& v : nw) v += 1.0f;
        const auto norm = be->upload_vector(nw);
        for (int64_t T : {int64_t(1), int64_t(2), cuda::kGemvMaxT}) {
            SCOPED_TRACE(std::string(prec == DType::BF16 ? "bf16" : "fp16") + " T=" + std::to_string(T));
            const std::vector<float> xh = randn(size_t(T * D), rng, 2.0f);
            auto buf = [&](int64_t n, DType t) { return be->alloc(size_t(n), t); };
            auto get = [&](Buf b, int64_t n) {
                std::vector<float> h(static_cast<size_t>(n));
                be->download(h.data(), b, size_t(n));
                return h;
            };
            Buf x = buf(T * D, DType::F32), h = buf(T * D, DType::F32);
            be->upload(x, xh.data(), xh.size());
            // q, k, v: fused vs unfused.
            Buf q[2], k[2], v[2];
            for (int i = 0; i < 2; ++i) {
                q[i] = buf(T * nq, at);
                k[i] = buf(T * nkv, at);
                v[i] = buf(T * nkv, at);
                const Backend::MatmulOut outs[3] = {{wq.get(), q[i]}, {wk.get(), k[i]}, {wv.get(), v[i]}};
                if (i == 0) be->norm_matmuls(x, *norm, 1e-6f, h, T, D, outs, 3);
                else be->Backend::norm_matmuls(x, *norm, 1e-6f, h, T, D, outs, 3);
            }
            EXPECT_EQ(get(q[0], T * nq), get(q[1], T * nq));
            EXPECT_EQ(get(k[0], T * nkv), get(k[1], T * nkv));
            EXPECT_EQ(get(v[0], T * nkv), get(v[1], T * nkv));
            // x += att @ wo^T with a 16-bit input, both ways.
            Buf x2[2] = {buf(T * D, DType::F32), buf(T * D, DType::F32)};
            for (int i = 0; i < 2; ++i) {
                be->upload(x2[i], xh.data(), xh.size());
                if (i == 0) be->matmul_add(*wo, q[0], x2[i], h, T);
                else be->Backend::matmul_add(*wo, q[0], x2[i], h, T);
            }
            EXPECT_EQ(get(x2[0], T * D), get(x2[1], T * D));
            // The FFN: silu(gate) · up, then x += that @ wd^T (fp32 input).
            Buf gate[2] = {buf(T * F, DType::F32), buf(T * F, DType::F32)}, up = buf(T * F, DType::F32);
            be->norm_swiglu(x, *norm, 1e-6f, h, *wg, *wu, gate[0], up, T, D);
            be->Backend::norm_swiglu(x, *norm, 1e-6f, h, *wg, *wu, gate[1], up, T, D);
            EXPECT_EQ(get(gate[0], T * F), get(gate[1], T * F));
            for (int i = 0; i < 2; ++i) {
                be->upload(x2[i], xh.data(), xh.size());
                if (i == 0) be->matmul_add(*wd, gate[0], x2[i], h, T);
                else be->Backend::matmul_add(*wd, gate[0], x2[i], h, T);
            }
            EXPECT_EQ(get(x2[0], T * D), get(x2[1], T * D));
            for (Buf b : {x, h, q[0], q[1], k[0], k[1], v[0], v[1], x2[0], x2[1], gate[0], gate[1], up}) be->release(b);
        }
        // Per-head norms + RoPE, head_dim 64 and 128, with and without norms, consecutive and
        // scattered positions.
        for (int hd : {64, 128}) {
            std::vector<float> freq(size_t(hd / 2));
            for (int i = 0; i < hd / 2; ++i) freq[size_t(i)] = std::pow(1e6f, -2.0f * float(i) / float(hd));
            const auto inv_freq = be->upload_vector(freq);
            std::vector<float> qnw = randn(size_t(hd), rng, 0.2f), knw = randn(size_t(hd), rng, 0.2f);
            const auto qn = be->upload_vector(qnw), kn = be->upload_vector(knw);
            const int H = 6, KV = 2;
            for (const std::vector<int32_t>& pos : {std::vector<int32_t>{12345}, std::vector<int32_t>{7, 99},
                                                   std::vector<int32_t>{40000, 40001, 40002}})
                for (bool norms : {true, false}) {
                    const int64_t T = int64_t(pos.size());
                    SCOPED_TRACE("hd " + std::to_string(hd) + " T " + std::to_string(T) + (norms ? " norms" : ""));
                    const std::vector<float> qh = randn(size_t(T * H * hd), rng, 3.0f), kh = randn(size_t(T * KV * hd), rng, 3.0f);
                    std::vector<float> out[2][2];
                    for (int i = 0; i < 2; ++i) {
                        Buf qb = be->alloc(qh.size(), at), kb = be->alloc(kh.size(), at);
                        be->upload(qb, qh.data(), qh.size());
                        be->upload(kb, kh.data(), kh.size());
                        const Backend::Vector* a = norms ? qn.get() : nullptr;
                        const Backend::Vector* b = norms ? kn.get() : nullptr;
                        if (i == 0) be->qk_norm_rope(qb, kb, a, b, 1e-6f, T, H, KV, hd, pos.data(), *inv_freq);
                        else be->Backend::qk_norm_rope(qb, kb, a, b, 1e-6f, T, H, KV, hd, pos.data(), *inv_freq);
                        out[i][0].resize(qh.size());
                        out[i][1].resize(kh.size());
                        be->download(out[i][0].data(), qb, qh.size());
                        be->download(out[i][1].data(), kb, kh.size());
                        be->release(qb);
                        be->release(kb);
                    }
                    EXPECT_EQ(out[0][0], out[1][0]);
                    EXPECT_EQ(out[0][1], out[1][1]);
                }
        }
    }
}

#endif  // ELASTIC_HAVE_CUDA
