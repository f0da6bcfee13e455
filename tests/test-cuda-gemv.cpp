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

#endif  // ELASTIC_HAVE_CUDA
