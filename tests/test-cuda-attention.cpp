// CUDA elastic attention against the CPU specification (src/cpu/attention.h; compiled only with
// ELASTIC_CUDA; skipped without a device):
//   - fused hybrid prefill (the backend's op cuda::attn_hybrid_prefill in bf16 / fp16 / fp32, inputs
//     converted on the device from fp32 as a backend's GEMMs would write them; varlen batches and
//     strided views via the native entry) vs cpu::attn_hybrid_naive over modes FA / SSA / XA /
//     mixed, T = 1, T < sink, T not a multiple of the tile, GQA 1 / 4 / 8, head_dim 64 / 128;
//   - decode over the bf16 lean cache (SSA ring wrapping included), q / k / v / out in each
//     attention type, vs cpu::attn_decode_naive; GQA 1-16, every config, pos 0 to a few thousand;
//   - XA estimation, q / k in each attention type: block scores vs an fp64 evaluation of the
//     definition on the same (rounded) inputs, lists vs cpu::xa_fill_plan.
// Tolerance (FlashAttention's rule): max |gpu − ref| ≤ 2 · max |naive_lowp − ref| + floor, where
// naive_lowp rounds inputs to bf16/fp16, accumulates in fp32, rounds P before P·V and the output
// at the end; floor = 1e-3 · max |ref| (below one bf16 ulp of the largest output). Outputs are
// poisoned with NaN first, so an unwritten element fails. Fresh random inputs; the seed is traced.
#ifdef ELASTIC_HAVE_CUDA

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "cpu/attention.h"
#include "cuda/attention.h"
#include "cuda/kv-cache.cuh"
#include "cuda/ops.h"
#include "model/backend.h"
#include "test-helpers.h"

extern "C" void openblas_set_num_threads(int);

using namespace elastic;
using namespace elastic::test;

namespace {

#define TCUDA(x) ASSERT_EQ((x), cudaSuccess) << cudaGetErrorString(x)

template <typename T>
struct DevBuf {
    T* p = nullptr;
    size_t n = 0;
    explicit DevBuf(size_t n_) : n(n_) {
        if (cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T)) != cudaSuccess) std::abort();
    }
    DevBuf(const std::vector<T>& h) : DevBuf(h.size()) {
        if (cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess) std::abort();
    }
    ~DevBuf() { cudaFree(p); }
    DevBuf(const DevBuf&) = delete;
    std::vector<T> get() const {
        std::vector<T> h(n);
        if (cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) std::abort();
        return h;
    }
    void poison() { cudaMemset(p, 0xff, n * sizeof(T)); }  // all-ones bytes: NaN for float and bf16/fp16
};

// A device tensor of n elements of type t (F32, BF16, F16). From host fp32 values it is filled as
// a backend's GEMM would write it: copied in fp32 and converted on the device (cuda::convert,
// round to nearest even); get() converts back to fp32 on the device.
struct DevTensor {
    DevBuf<uint8_t> mem;
    size_t n;
    DType t;
    DevTensor(size_t n_, DType t_) : mem(n_ * cuda::elem_bytes(t_)), n(n_), t(t_) {}
    DevTensor(const std::vector<float>& h, DType t_) : DevTensor(h.size(), t_) {
        DevBuf<float> f(h);
        cuda::convert(f.p, DType::F32, mem.p, t, int64_t(n), nullptr);
        if (cudaDeviceSynchronize() != cudaSuccess) std::abort();
    }
    void* p() const { return mem.p; }
    // Element offset i (for per-token slices).
    void* at(int64_t i) const { return mem.p + size_t(i) * cuda::elem_bytes(t); }
    std::vector<float> get() const {
        DevBuf<float> f(n);
        cuda::convert(mem.p, t, f.p, DType::F32, int64_t(n), nullptr);
        if (cudaDeviceSynchronize() != cudaSuccess) std::abort();
        return f.get();
    }
    void poison() { mem.poison(); }
};

const char* type_name(DType t) { return t == DType::BF16 ? "bf16" : t == DType::F16 ? "fp16" : "fp32"; }

// ---- low-precision rounding on the host (round to nearest even; inputs finite) ----
float round_lp(float f, DType t) {
    if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(f));
    if (t == DType::F16) return fp16_to_f32(f32_to_fp16(f));
    return f;
}
std::vector<float> rounded(std::vector<float> x, DType t) {
    for (float& e : x) e = round_lp(e, t);
    return x;
}
std::vector<uint16_t> encode(const std::vector<float>& x, DType t) {
    std::vector<uint16_t> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = t == DType::BF16 ? f32_to_bf16(x[i]) : f32_to_fp16(x[i]);
    return y;
}
std::vector<float> decode(const std::vector<uint16_t>& x, DType t) {
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = t == DType::BF16 ? bf16_to_f32(x[i]) : fp16_to_f32(x[i]);
    return y;
}

// Naive low-precision attention: inputs rounded, fp32 scores and softmax, P rounded before P·V,
// fp32 accumulation, output rounded. Same arguments as cpu::attn_hybrid_naive.
// rows: the query positions to compute (empty: all); other rows of out stay 0.
void naive_lowp(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                std::vector<float>& out, int64_t T, int Hq, int Hkv, int d, const LayerPlan& plan,
                const StreamingWindow& win, int64_t block, float scale, DType t,
                const std::vector<int64_t>& rows = {}) {
    std::vector<float> qr(q.size()), kr(k.size()), vr(v.size());
    for (size_t i = 0; i < q.size(); ++i) qr[i] = round_lp(q[i], t);
    for (size_t i = 0; i < k.size(); ++i) kr[i] = round_lp(k[i], t), vr[i] = round_lp(v[i], t);
    out.assign(q.size(), 0.0f);
    const int G = Hq / Hkv;
    const int64_t n_rows = rows.empty() ? T : int64_t(rows.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t x = 0; x < n_rows; ++x) {
        const int64_t i = rows.empty() ? x : rows[size_t(x)];
        std::vector<float> s(static_cast<size_t>(i + 1)), acc(static_cast<size_t>(d));
        for (int h = 0; h < Hq; ++h) {
            const int g = h / G;
            const HeadMode m = plan.mode[size_t(g)];
            const BlockList* xa = m == HeadMode::XA ? &plan.xa[size_t(g)] : nullptr;
            float mx = -INFINITY;
            for (int64_t j = 0; j <= i; ++j) {
                if (!plan_allows(m, win, xa, block, i, j)) {
                    s[size_t(j)] = -INFINITY;
                    continue;
                }
                float dot = 0.0f;
                for (int c = 0; c < d; ++c) dot += qr[size_t((i * Hq + h) * d + c)] * kr[size_t((j * Hkv + g) * d + c)];
                s[size_t(j)] = dot * scale;
                mx = std::max(mx, s[size_t(j)]);
            }
            float l = 0.0f;
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int64_t j = 0; j <= i; ++j) {
                if (s[size_t(j)] == -INFINITY) continue;
                const float p = std::exp(s[size_t(j)] - mx);
                l += p;
                const float pl = round_lp(p, t);
                for (int c = 0; c < d; ++c) acc[size_t(c)] += pl * vr[size_t((j * Hkv + g) * d + c)];
            }
            for (int c = 0; c < d; ++c) out[size_t((i * Hq + h) * d + c)] = round_lp(acc[size_t(c)] / l, t);
        }
    }
}

double max_abs(const std::vector<float>& x) {
    double m = 0;
    for (float f : x) m = std::max(m, double(std::fabs(f)));
    return m;
}
double max_abs_err(const std::vector<float>& a, const std::vector<float>& b, size_t* worst) {
    double e = 0;
    *worst = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        double x = std::fabs(double(a[i]) - double(b[i]));
        if (!std::isfinite(a[i])) x = INFINITY;
        if (x > e) e = x, *worst = i;
    }
    return e;
}

enum Kind { AllFA, AllSSA, AllXARandom, AllXAEstimated, Mixed };
const char* kind_name(Kind k) {
    const char* n[] = {"all-FA", "all-SSA", "all-XA(random)", "all-XA(estimated)", "mixed"};
    return n[k];
}

LayerPlan make_plan(Kind kind, int64_t T, int Hq, int Hkv, int d, int64_t block, const std::vector<float>& q,
                    const std::vector<float>& k, std::mt19937_64& rng) {
    LayerPlan plan;
    plan.mode.resize(size_t(Hkv));
    for (int g = 0; g < Hkv; ++g) {
        switch (kind) {
            case AllFA: plan.mode[size_t(g)] = HeadMode::FA; break;
            case AllSSA: plan.mode[size_t(g)] = HeadMode::SSA; break;
            case AllXARandom:
            case AllXAEstimated: plan.mode[size_t(g)] = HeadMode::XA; break;
            case Mixed: plan.mode[size_t(g)] = HeadMode(g % 3); break;
        }
    }
    if (kind == AllXAEstimated) {
        XAParams xp;
        xp.block = block;
        cpu::xa_fill_plan(q.data(), k.data(), T, Hq, Hkv, d, xp, plan);
    } else {
        plan.xa.resize(size_t(Hkv));
        for (int g = 0; g < Hkv; ++g)
            if (plan.mode[size_t(g)] == HeadMode::XA) plan.xa[size_t(g)] = random_blocks(T, block, 0.4, rng);
    }
    return plan;
}

struct Case {
    Kind kind;
    int64_t T;
    int Hq, Hkv, d;
    int64_t block;
    StreamingWindow win;
};

class CudaAttention : public ::testing::Test {
protected:
    void SetUp() override {
        if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
        openblas_set_num_threads(1);
    }
};

// Runs one single-sequence case through cuda::attn_hybrid_prefill in type dtype (fp32 inputs
// converted on the device) and checks it: bf16 / fp16 by the 2x-naive-low-precision rule, fp32 by
// the fp32 rule (1e-5 of the largest output).
// Hopper-kernel cases that ran (a device that has the kernel must run some: see HopperRan).
int g_hopper_cases = 0;

// The kernels a 16-bit case runs through: the mma.sync kernel always, the Hopper one where it
// takes the launch.
std::vector<cuda::PrefillKernel> kernels_for(DType t, int d, const cuda::DevicePlan& dp) {
    std::vector<cuda::PrefillKernel> ks = {cuda::PrefillKernel::Sm80};
    if (t != DType::F32 && cuda::hopper_prefill_available(t, d, dp)) ks.push_back(cuda::PrefillKernel::Sm90);
    return ks;
}
const char* kernel_name(cuda::PrefillKernel k) { return k == cuda::PrefillKernel::Sm90 ? "sm90" : "sm80"; }

void check_prefill_case(const Case& c, std::mt19937_64& rng, DType dtype = DType::BF16) {
    const int64_t T = c.T;
    const std::vector<float> q = randn(size_t(T * c.Hq * c.d), rng), k = randn(size_t(T * c.Hkv * c.d), rng),
                             v = randn(size_t(T * c.Hkv * c.d), rng);
    const LayerPlan plan = make_plan(c.kind, T, c.Hq, c.Hkv, c.d, c.block, q, k, rng);
    const float scale = 1.0f / std::sqrt(float(c.d));
    std::vector<float> ref(q.size()), lowp;
    cpu::attn_hybrid_naive(q.data(), k.data(), v.data(), ref.data(), T, c.Hq, c.Hkv, c.d, plan, c.win, c.block, scale);
    const bool f32 = dtype == DType::F32;
    if (!f32) naive_lowp(q, k, v, lowp, T, c.Hq, c.Hkv, c.d, plan, c.win, c.block, scale, dtype);

    const DevTensor dq(q, dtype), dk(k, dtype), dv(v, dtype);
    auto dp = cuda::upload_plan(plan, T, c.block, nullptr);
    for (cuda::PrefillKernel kernel : kernels_for(dtype, c.d, *dp)) {
        DevTensor dout(q.size(), dtype);
        dout.poison();
        cuda::attn_hybrid_prefill(dq.p(), dk.p(), dv.p(), dout.p(), dtype, T, c.Hq, c.Hkv, c.d, *dp, c.win, c.block,
                                  scale, nullptr, kernel);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const std::vector<float> got = dout.get();
        g_hopper_cases += kernel == cuda::PrefillKernel::Sm90;

        size_t wg = 0, wl = 0;
        const double eg = max_abs_err(got, ref, &wg), el = f32 ? 0.0 : max_abs_err(lowp, ref, &wl);
        const double tol = f32 ? 1e-5 * max_abs(ref) : 2.0 * el + 1e-3 * max_abs(ref);
        const size_t row = wg / size_t(c.Hq * c.d), head = wg / size_t(c.d) % size_t(c.Hq);
        EXPECT_LE(eg, tol) << kernel_name(kernel) << " " << kind_name(c.kind) << " T " << T << " heads " << c.Hq << "/"
                           << c.Hkv << " d " << c.d << " block " << c.block << " window " << c.win.sink << "/"
                           << c.win.local << " " << type_name(dtype) << ": err " << eg << " (naive "
                           << type_name(dtype) << " " << el << ") worst element " << wg << " (row " << row
                           << ", head " << head << "): got " << got[wg] << " want " << ref[wg];
    }
}

}  // namespace

TEST_F(CudaAttention, PrefillMatchesNaiveOnGrid) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    struct Shape {
        int Hq, Hkv, d;
    };
    const Shape shapes[] = {{4, 4, 64}, {8, 2, 128}, {16, 2, 64}, {8, 1, 128}, {3, 3, 128}, {8, 2, 64}};
    const StreamingWindow windows[] = {{16, 48}, {20, 100}, {0, 70}, {128, 64}};
    std::vector<int64_t> Ts = {1, 7, 15, 64, 100, 129, 300, 517};
    std::uniform_int_distribution<int64_t> rand_T(1, 700);
    Ts.push_back(rand_T(rng));
    int n = 0;
    for (Kind kind : {AllFA, AllSSA, AllXARandom, AllXAEstimated, Mixed})
        for (int64_t T : Ts) {
            const Shape s = shapes[size_t(n) % std::size(shapes)];
            const Case c{kind, T, s.Hq, s.Hkv, s.d, (n / 2) % 2 ? 128 : 64, windows[size_t(n) % std::size(windows)]};
            ++n;
            for (DType t : {DType::BF16, DType::F16, DType::F32}) {
                check_prefill_case(c, rng, t);
                if (HasFatalFailure()) return;
            }
        }
    // Where the Hopper kernel exists, the grid ran through it too (not only the sm80 kernel).
    LayerPlan fa;
    fa.mode = {HeadMode::FA};
    auto dp = cuda::upload_plan(fa, 64, 128, nullptr);
    if (cuda::hopper_prefill_available(DType::BF16, 128, *dp)) {
        EXPECT_GT(g_hopper_cases, 0);
    }
}

// The paper's window (sink 128, local 2048) past the end of the first window, FA-SSA.
TEST_F(CudaAttention, PrefillPaperWindow) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    check_prefill_case({Mixed, 2300, 8, 2, 128, 128, {128, 2048}}, rng);
    check_prefill_case({AllSSA, 2211, 4, 1, 64, 64, {128, 2048}}, rng);
    check_prefill_case({Mixed, 2300, 8, 2, 128, 128, {128, 2048}}, rng, DType::F32);
    check_prefill_case({Mixed, 2211, 9, 3, 64, 64, {128, 2048}}, rng, DType::F32);
}

// A long sequence (many key tiles and work items, SSA windows far from the sink, XA lists over
// 128 blocks) checked on a sample of rows: the first and last tiles, tile edges, random rows.
TEST_F(CudaAttention, PrefillLongSampledRows) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const int Hq = 8, Hkv = 4, d = 128;
    const int64_t T = 16411, block = 128;
    const StreamingWindow win{128, 2048};
    const std::vector<float> q = randn(size_t(T * Hq * d), rng), k = randn(size_t(T * Hkv * d), rng),
                             v = randn(size_t(T * Hkv * d), rng);
    LayerPlan plan;
    plan.mode = {HeadMode::FA, HeadMode::SSA, HeadMode::XA, HeadMode::SSA};
    plan.xa.resize(size_t(Hkv));
    plan.xa[2] = random_blocks(T, block, 0.2, rng);
    std::vector<int64_t> rows = {0, 1, 63, 64, 127, 128, 2047, 2048, 2175, 2176, 2177, T - 65, T - 64, T - 2, T - 1};
    std::uniform_int_distribution<int64_t> any(0, T - 1);
    for (int x = 0; x < 49; ++x) rows.push_back(any(rng));
    const float scale = 1.0f / std::sqrt(float(d));
    std::vector<float> ref(q.size(), 0.0f), lowp;
    cpu::attn_hybrid_naive_rows(q.data(), k.data(), v.data(), ref.data(), T, Hq, Hkv, d, plan, win, block, scale, rows);
    naive_lowp(q, k, v, lowp, T, Hq, Hkv, d, plan, win, block, scale, DType::BF16, rows);
    const DevTensor dq(q, DType::BF16), dk(k, DType::BF16), dv(v, DType::BF16);
    auto dp = cuda::upload_plan(plan, T, block, nullptr);
    for (cuda::PrefillKernel kernel : kernels_for(DType::BF16, d, *dp)) {
    SCOPED_TRACE(kernel_name(kernel));
    DevTensor dout(q.size(), DType::BF16);
    dout.poison();
    cuda::attn_hybrid_prefill(dq.p(), dk.p(), dv.p(), dout.p(), DType::BF16, T, Hq, Hkv, d, *dp, win, block, scale,
                              nullptr, kernel);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    g_hopper_cases += kernel == cuda::PrefillKernel::Sm90;
    const std::vector<float> all = dout.get();
    for (float x : all) ASSERT_TRUE(std::isfinite(x)) << "unwritten or non-finite output";
    std::vector<float> got, r, l;
    for (int64_t i : rows) {
        got.insert(got.end(), all.begin() + i * Hq * d, all.begin() + (i + 1) * Hq * d);
        r.insert(r.end(), ref.begin() + i * Hq * d, ref.begin() + (i + 1) * Hq * d);
        l.insert(l.end(), lowp.begin() + i * Hq * d, lowp.begin() + (i + 1) * Hq * d);
    }
    size_t wg = 0, wl = 0;
    const double eg = max_abs_err(got, r, &wg), el = max_abs_err(l, r, &wl);
    EXPECT_LE(eg, 2.0 * el + 1e-3 * max_abs(r)) << "err " << eg << " naive " << el << " worst sampled row "
                                                << rows[wg / size_t(Hq * d)] << " head " << wg / size_t(d) % size_t(Hq);
    }
}

// Native entry: a varlen batch of 3 sequences, each with its own plan, bf16 and fp16, both tile
// heights; outputs of each sequence vs the naive reference of that sequence alone.
TEST_F(CudaAttention, PrefillVarlenBatchNative) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const StreamingWindow win{16, 80};
    for (DType dt : {DType::BF16, DType::F16})
        for (int d : {64, 128})
            for (int bm : {64, 128, 0})  // 0: the Hopper kernel (its own 128 × 128 tiles)
            for (int bn : {64, 32}) {
                if (bn == 32 && !(d == 128 && bm == 128)) continue;  // the one 32-key configuration
                if (bm == 0 && bn != 64) continue;
                const int Hq = 8, Hkv = 2;
                const int64_t block = 128;
                const std::vector<int64_t> lens = {300, 1, 190};
                const Kind kinds[] = {Mixed, AllFA, AllXARandom};
                int64_t total = 0;
                for (int64_t L : lens) total += L;
                std::vector<float> q = randn(size_t(total * Hq * d), rng), k = randn(size_t(total * Hkv * d), rng),
                                   v = randn(size_t(total * Hkv * d), rng);
                // Round once so the reference sees exactly the device inputs.
                for (float& x : q) x = round_lp(x, dt);
                for (float& x : k) x = round_lp(x, dt);
                for (float& x : v) x = round_lp(x, dt);
                std::vector<LayerPlan> plans;
                int64_t off = 0;
                for (size_t b = 0; b < lens.size(); ++b) {
                    const std::vector<float> qs(q.begin() + off * Hq * d, q.begin() + (off + lens[b]) * Hq * d);
                    const std::vector<float> ks(k.begin() + off * Hkv * d, k.begin() + (off + lens[b]) * Hkv * d);
                    plans.push_back(make_plan(kinds[b], lens[b], Hq, Hkv, d, block, qs, ks, rng));
                    off += lens[b];
                }
                DevBuf<uint16_t> dq(encode(q, dt)), dk(encode(k, dt)), dv(encode(v, dt)), dout(q.size());
                dout.poison();
                auto dp = cuda::upload_batch_plan(plans, lens, block, nullptr);
                cuda::HybridParams p;
                p.dtype = dt;
                p.q = dq.p;
                p.k = dk.p;
                p.v = dv.p;
                p.out = dout.p;
                p.n_head = Hq;
                p.n_kv_head = Hkv;
                p.head_dim = d;
                p.scale = 1.0f / std::sqrt(float(d));
                p.win = win;
                p.plan = dp.get();
                if (bm == 0) {
                    if (!cuda::hopper_prefill_available(dt, d, *dp)) continue;
                    p.kernel = cuda::PrefillKernel::Sm90;
                    ++g_hopper_cases;
                } else {
                    p.kernel = cuda::PrefillKernel::Sm80;
                    p.force_block_m = bm;
                    p.force_block_n = bn;
                }
                cuda::hybrid_prefill(p, nullptr);
                ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
                const std::vector<float> got = decode(dout.get(), dt);
                off = 0;
                for (size_t b = 0; b < lens.size(); ++b) {
                    const int64_t L = lens[b];
                    const std::vector<float> qs(q.begin() + off * Hq * d, q.begin() + (off + L) * Hq * d);
                    const std::vector<float> ks(k.begin() + off * Hkv * d, k.begin() + (off + L) * Hkv * d);
                    const std::vector<float> vs(v.begin() + off * Hkv * d, v.begin() + (off + L) * Hkv * d);
                    const std::vector<float> gs(got.begin() + off * Hq * d, got.begin() + (off + L) * Hq * d);
                    std::vector<float> ref(qs.size()), lowp;
                    cpu::attn_hybrid_naive(qs.data(), ks.data(), vs.data(), ref.data(), L, Hq, Hkv, d, plans[b], win,
                                           block, p.scale);
                    naive_lowp(qs, ks, vs, lowp, L, Hq, Hkv, d, plans[b], win, block, p.scale, dt);
                    size_t wg = 0, wl = 0;
                    const double eg = max_abs_err(gs, ref, &wg), el = max_abs_err(lowp, ref, &wl);
                    EXPECT_LE(eg, 2.0 * el + 1e-3 * max_abs(ref))
                        << type_name(dt) << " d " << d << " block_m " << bm << " block_n " << bn << " seq " << b
                        << " (" << kind_name(kinds[b]) << ", T " << L << "): err " << eg << " naive " << el
                        << " worst " << wg << " got " << gs[wg] << " want " << ref[wg];
                    off += L;
                }
            }
}

// Strided views: q, k, v as slices of one fused QKV projection [T, (Hq + 2 Hkv) · d] (what a
// backend gets from one GEMM), output with a padded row stride.
TEST_F(CudaAttention, PrefillStridedQKV) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const int Hq = 8, Hkv = 2, d = 128;
    const int64_t T = 333, block = 64, W = int64_t(Hq + 2 * Hkv) * d, OW = int64_t(Hq) * d + 64;
    const StreamingWindow win{16, 100};
    std::vector<float> qkv = randn(size_t(T * W), rng);
    for (float& x : qkv) x = round_lp(x, DType::BF16);
    std::vector<float> q(size_t(T * Hq * d)), k(size_t(T * Hkv * d)), v(size_t(T * Hkv * d));
    for (int64_t i = 0; i < T; ++i) {
        std::copy_n(qkv.begin() + i * W, Hq * d, q.begin() + i * Hq * d);
        std::copy_n(qkv.begin() + i * W + Hq * d, Hkv * d, k.begin() + i * Hkv * d);
        std::copy_n(qkv.begin() + i * W + (Hq + Hkv) * d, Hkv * d, v.begin() + i * Hkv * d);
    }
    const LayerPlan plan = make_plan(Mixed, T, Hq, Hkv, d, block, q, k, rng);
    DevBuf<uint16_t> dqkv(encode(qkv, DType::BF16)), dout(size_t(T * OW));
    dout.poison();
    auto dp = cuda::upload_plan(plan, T, block, nullptr);
    cuda::HybridParams p;
    p.q = dqkv.p;
    p.k = dqkv.p + Hq * d;
    p.v = dqkv.p + (Hq + Hkv) * d;
    p.out = dout.p;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = W;
    p.o_row_stride = OW;
    p.n_head = Hq;
    p.n_kv_head = Hkv;
    p.head_dim = d;
    p.scale = 1.0f / std::sqrt(float(d));
    p.win = win;
    p.plan = dp.get();
    for (cuda::PrefillKernel kernel : kernels_for(DType::BF16, d, *dp)) {
    SCOPED_TRACE(kernel_name(kernel));
    dout.poison();
    p.kernel = kernel;
    cuda::hybrid_prefill(p, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    g_hopper_cases += kernel == cuda::PrefillKernel::Sm90;
    const std::vector<float> all = decode(dout.get(), DType::BF16);
    std::vector<float> got(q.size());
    for (int64_t i = 0; i < T; ++i) {
        std::copy_n(all.begin() + i * OW, Hq * d, got.begin() + i * Hq * d);
        for (int64_t x = Hq * d; x < OW; ++x) ASSERT_TRUE(std::isnan(all[size_t(i * OW + x)])) << "write past the row";
    }
    std::vector<float> ref(q.size()), lowp;
    cpu::attn_hybrid_naive(q.data(), k.data(), v.data(), ref.data(), T, Hq, Hkv, d, plan, win, block, p.scale);
    naive_lowp(q, k, v, lowp, T, Hq, Hkv, d, plan, win, block, p.scale, DType::BF16);
    size_t wg = 0, wl = 0;
    const double eg = max_abs_err(got, ref, &wg), el = max_abs_err(lowp, ref, &wl);
    EXPECT_LE(eg, 2.0 * el + 1e-3 * max_abs(ref)) << "err " << eg << " naive " << el << " worst " << wg;
    }
}

// Decode with q, k, v and the output in each attention type (the cache is bf16 in all). The naive
// low-precision reference reads what the kernel reads (q rounded to the type; k, v rounded to the
// type, then to bf16) and rounds its output to the type; the floor is 1e-4 of the largest output
// for an fp32 output, the prefill rule's 1e-3 for a 16-bit one (below one ulp of the largest).
TEST_F(CudaAttention, DecodeMatchesNaive) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    struct DCase {
        int Hq, Hkv, d;
        int64_t T0, n_gen;
        StreamingWindow win;
    };
    const DCase cases[] = {{8, 2, 128, 300, 40, {8, 40}},    {4, 4, 64, 5, 60, {8, 40}},
                           {16, 2, 64, 2000, 20, {16, 256}}, {8, 1, 128, 1500, 8, {128, 512}},
                           {6, 3, 64, 90, 70, {0, 33}}};
    for (DType t : {DType::F32, DType::BF16, DType::F16})
        for (const DCase& c : cases) {
            const int64_t cap = c.T0 + c.n_gen, kvd = int64_t(c.Hkv) * c.d;
            const std::vector<float> kall = randn(size_t(cap * kvd), rng), vall = randn(size_t(cap * kvd), rng);
            LayerPlan plan;
            for (int g = 0; g < c.Hkv; ++g) plan.mode.push_back(HeadMode(g % 3));
            plan.xa.resize(size_t(c.Hkv));
            auto cache = cuda::new_layer_cache(plan, c.win, cap, c.Hkv, c.d);
            cpu::LayerKVCache cpu_cache;
            cpu_cache.init(plan, c.win, cap, c.Hkv, c.d);
            EXPECT_EQ(cuda::cache_bytes(*cache) * 2, cpu_cache.bytes());  // bf16 vs fp32
            const DevTensor dk(kall, t), dv(vall, t);
            cuda::cache_store_prefill(*cache, dk.p(), dv.p(), t, c.T0, nullptr);
            const std::vector<float> kb = rounded(rounded(kall, t), DType::BF16), vb = rounded(rounded(vall, t), DType::BF16);
            const float scale = 1.0f / std::sqrt(float(c.d));
            const double floor = t == DType::F32 ? 1e-4 : 1e-3;
            for (int64_t pos = c.T0 - 1; pos < cap; ++pos) {
                if (pos >= c.T0) cuda::cache_append(*cache, dk.at(pos * kvd), dv.at(pos * kvd), t, pos, nullptr);
                if (pos < 0) continue;
                const std::vector<float> q = randn(size_t(c.Hq * c.d), rng);
                const DevTensor dq(q, t);
                DevTensor dout(q.size(), t);
                dout.poison();
                cuda::attn_decode(dq.p(), *cache, pos, dout.p(), t, c.Hq, scale, nullptr);
                ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
                const std::vector<float> got = dout.get();
                std::vector<float> ref(q.size()), lowp(q.size());
                cpu::attn_decode_naive(q.data(), kall.data(), vall.data(), pos, ref.data(), c.Hq, c.Hkv, c.d, plan, c.win,
                                       scale);
                cpu::attn_decode_naive(rounded(q, t).data(), kb.data(), vb.data(), pos, lowp.data(), c.Hq, c.Hkv, c.d, plan,
                                       c.win, scale);
                lowp = rounded(lowp, t);
                size_t wg = 0, wl = 0;
                const double eg = max_abs_err(got, ref, &wg), el = max_abs_err(lowp, ref, &wl);
                ASSERT_LE(eg, 2.0 * el + floor * max_abs(ref))
                    << type_name(t) << " heads " << c.Hq << "/" << c.Hkv << " d " << c.d << " pos " << pos << " window "
                    << c.win.sink << "/" << c.win.local << " splits " << cuda::decode_splits(*cache) << ": err " << eg
                    << " (naive " << el << ") worst " << wg << " got " << got[wg] << " want " << ref[wg];
            }
        }
}

// The stream-K decode kernel's corners, bf16 (the types are covered above): every GQA group size
// it specialises (1, 2, 3 → 4, 4, 8 and 16 as two chunks of 8), every config's head mix (fa-ssa,
// fa-xa, xa-ssa: dense and sparse heads alternate), head_dim 64 and 128, every position from 0
// (context below the sink, not a multiple of any tile, SSA rings wrapping twice), then a context
// of a few thousand keys, where pieces of ≥ 128 keys cut heads across CTAs (one pair per CTA;
// the cut heads' pieces merged by the whole grid after its barrier).
TEST_F(CudaAttention, DecodeGroupsConfigsRings) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    struct Config {
        const char* name;
        HeadMode dense, sparse;
    };
    const Config configs[] = {{"fa-ssa", HeadMode::FA, HeadMode::SSA},
                              {"fa-xa", HeadMode::FA, HeadMode::XA},
                              {"xa-ssa", HeadMode::XA, HeadMode::SSA}};
    const DType t = DType::BF16;
    const StreamingWindow win{16, 64};
    int n_case = 0;
    for (const int G : {1, 2, 3, 4, 8, 16})
        for (const Config& cf : configs) {
            const int Hkv = G == 16 ? 2 : 4, Hq = G * Hkv, d = n_case++ % 2 ? 64 : 128;
            LayerPlan plan;
            for (int g = 0; g < Hkv; ++g) plan.mode.push_back(g % 2 ? cf.dense : cf.sparse);
            plan.xa.resize(size_t(Hkv));
            for (const int64_t long_ctx : {int64_t(0), int64_t(3001)}) {
                // Positions 0..n_short−1 by appends from an empty prefill; or a 3001-token prefill
                // and three appends.
                const int64_t T0 = long_ctx ? long_ctx : 1, cap = long_ctx ? long_ctx + 3 : 170, kvd = int64_t(Hkv) * d;
                const std::vector<float> kall = randn(size_t(cap * kvd), rng), vall = randn(size_t(cap * kvd), rng);
                auto cache = cuda::new_layer_cache(plan, win, cap, Hkv, d);
                const DevTensor dk(kall, t), dv(vall, t);
                cuda::cache_store_prefill(*cache, dk.p(), dv.p(), t, T0, nullptr);
                const std::vector<float> kb = rounded(kall, t), vb = rounded(vall, t);
                const float scale = 1.0f / std::sqrt(float(d));
                for (int64_t pos = T0 - 1; pos < cap; ++pos) {
                    if (pos >= T0) cuda::cache_append(*cache, dk.at(pos * kvd), dv.at(pos * kvd), t, pos, nullptr);
                    const std::vector<float> q = randn(size_t(Hq * d), rng);
                    const DevTensor dq(q, t);
                    DevTensor dout(q.size(), t);
                    dout.poison();
                    cuda::attn_decode(dq.p(), *cache, pos, dout.p(), t, Hq, scale, nullptr);
                    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
                    const std::vector<float> got = dout.get();
                    std::vector<float> ref(q.size()), lowp(q.size());
                    cpu::attn_decode_naive(q.data(), kall.data(), vall.data(), pos, ref.data(), Hq, Hkv, d, plan, win, scale);
                    cpu::attn_decode_naive(rounded(q, t).data(), kb.data(), vb.data(), pos, lowp.data(), Hq, Hkv, d, plan, win,
                                           scale);
                    lowp = rounded(lowp, t);
                    size_t wg = 0, wl = 0;
                    const double eg = max_abs_err(got, ref, &wg), el = max_abs_err(lowp, ref, &wl);
                    ASSERT_LE(eg, 2.0 * el + 1e-3 * max_abs(ref))
                        << cf.name << " heads " << Hq << "/" << Hkv << " d " << d << " pos " << pos << " splits "
                        << cuda::decode_splits(*cache) << ": err " << eg << " (naive " << el << ") worst " << wg << " (head "
                        << wg / size_t(d) << ") got " << got[wg] << " want " << ref[wg];
                }
            }
        }
}

// The split and merge at a production-like mix (fa-ssa: two FA heads of ~40K keys cut into many
// pieces, two SSA heads of sink 128 + ring 2048 in a few): each cut head's pieces merged after the
// grid barrier, ≥ 16 pieces per head so the merge reads several rows of pieces per thread, a
// sharp softmax (q scaled up) so the pieces' maxima differ, and consecutive calls at growing
// positions and alternating between two caches (grids differ from call to call: the barrier's
// counter must come back to rest after each).
TEST_F(CudaAttention, DecodeManyPiecesMerge) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const DType t = DType::BF16;
    const StreamingWindow win{128, 2048};
    for (const int d : {128, 64}) {
        const int Hkv = 4, Hq = d == 128 ? 16 : 32;  // G 4 and 8
        LayerPlan plan;
        for (int g = 0; g < Hkv; ++g) plan.mode.push_back(g % 2 ? HeadMode::FA : HeadMode::SSA);
        plan.xa.resize(size_t(Hkv));
        const int64_t T0 = 40000, cap = T0 + 3, kvd = int64_t(Hkv) * d;
        const std::vector<float> kall = randn(size_t(cap * kvd), rng), vall = randn(size_t(cap * kvd), rng);
        const DevTensor dk(kall, t), dv(vall, t);
        auto cache = cuda::new_layer_cache(plan, win, cap, Hkv, d);
        auto other = cuda::new_layer_cache(plan, win, cap, Hkv, d);
        cuda::cache_store_prefill(*cache, dk.p(), dv.p(), t, T0, nullptr);
        cuda::cache_store_prefill(*other, dk.p(), dv.p(), t, T0 / 2, nullptr);
        const std::vector<float> kb = rounded(kall, t), vb = rounded(vall, t);
        const float scale = 1.0f / std::sqrt(float(d));
        for (int64_t pos = T0 - 1; pos < cap; ++pos) {
            if (pos >= T0) cuda::cache_append(*cache, dk.at(pos * kvd), dv.at(pos * kvd), t, pos, nullptr);
            std::vector<float> q = randn(size_t(Hq * d), rng);
            for (float& x : q) x *= 3.0f;
            const DevTensor dq(q, t);
            DevTensor dout(q.size(), t), dother(q.size(), t);
            dout.poison();
            cuda::attn_decode(dq.p(), *other, T0 / 2 - 1, dother.p(), t, Hq, scale, nullptr);  // a different grid before
            cuda::attn_decode(dq.p(), *cache, pos, dout.p(), t, Hq, scale, nullptr);
            cuda::attn_decode(dq.p(), *other, T0 / 2 - 1, dother.p(), t, Hq, scale, nullptr);  // and after
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            EXPECT_GT(cuda::decode_splits(*cache), 16);
            const std::vector<float> got = dout.get();
            std::vector<float> ref(q.size()), lowp(q.size());
            cpu::attn_decode_naive(q.data(), kall.data(), vall.data(), pos, ref.data(), Hq, Hkv, d, plan, win, scale);
            cpu::attn_decode_naive(rounded(q, t).data(), kb.data(), vb.data(), pos, lowp.data(), Hq, Hkv, d, plan, win, scale);
            lowp = rounded(lowp, t);
            size_t wg = 0, wl = 0;
            const double eg = max_abs_err(got, ref, &wg), el = max_abs_err(lowp, ref, &wl);
            ASSERT_LE(eg, 2.0 * el + 1e-3 * max_abs(ref))
                << "d " << d << " heads " << Hq << "/" << Hkv << " pos " << pos << " splits " << cuda::decode_splits(*cache)
                << ": err " << eg << " (naive " << el << ") worst " << wg << " (head " << wg / size_t(d) << ") got "
                << got[wg] << " want " << ref[wg];
            // The other cache's result too (its context is half: fewer pieces).
            const std::vector<float> got_o = dother.get();
            cpu::attn_decode_naive(q.data(), kall.data(), vall.data(), T0 / 2 - 1, ref.data(), Hq, Hkv, d, plan, win, scale);
            cpu::attn_decode_naive(rounded(q, t).data(), kb.data(), vb.data(), T0 / 2 - 1, lowp.data(), Hq, Hkv, d, plan, win,
                                   scale);
            lowp = rounded(lowp, t);
            const double eo = max_abs_err(got_o, ref, &wg), elo = max_abs_err(lowp, ref, &wl);
            ASSERT_LE(eo, 2.0 * elo + 1e-3 * max_abs(ref)) << "other cache, d " << d << ": err " << eo << " (naive " << elo << ")";
        }
    }
}

// q, k in each attention type: block scores against the definition in fp64 on the same rounded
// values (small T), then lists against the CPU estimate from them.
TEST_F(CudaAttention, XAEstimationMatchesCpu) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    struct XCase {
        int64_t T;
        int Hq, Hkv, d;
        int64_t block;
    };
    for (DType t : {DType::F32, DType::BF16, DType::F16})
        for (const XCase& c : {XCase{700, 4, 2, 64, 64}, XCase{1000, 8, 2, 128, 128}, XCase{129, 3, 3, 64, 128},
                               XCase{3000, 8, 1, 64, 64}}) {
            const std::vector<float> q = rounded(randn(size_t(c.T * c.Hq * c.d), rng), t),
                                     k = rounded(randn(size_t(c.T * c.Hkv * c.d), rng), t);
            XAParams xp;
            xp.block = c.block;
            const DevTensor dq(q, t), dk(k, t);
            const int64_t rb = c.block / xp.stride;
            if (c.T <= 1000) {  // fp64 definition of the scores of KV head 0
                const std::vector<double> want = cpu::xa_block_scores_naive(q.data(), k.data(), c.T, c.Hq, c.Hkv, c.d, 0, xp);
                const std::vector<double> got = cuda::xa_block_scores(dq.p(), dk.p(), t, c.T, c.Hq, c.Hkv, c.d, 0, xp, nullptr);
                double worst = 0;
                for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
                EXPECT_LE(worst, 1e-4 * double(rb))
                    << type_name(t) << " T " << c.T << " block " << c.block << ": max score error " << worst;
            }
            LayerPlan gpu_plan, cpu_plan;
            gpu_plan.mode.assign(size_t(c.Hkv), HeadMode::XA);
            cpu_plan.mode = gpu_plan.mode;
            cuda::xa_fill_plan(dq.p(), dk.p(), t, c.T, c.Hq, c.Hkv, c.d, xp, gpu_plan, nullptr);
            cpu::xa_fill_plan(q.data(), k.data(), c.T, c.Hq, c.Hkv, c.d, xp, cpu_plan);
            for (int g = 0; g < c.Hkv; ++g) {
                const BlockList &a = gpu_plan.xa[size_t(g)], &b = cpu_plan.xa[size_t(g)];
                ASSERT_EQ(a.n_query_blocks(), b.n_query_blocks());
                int differ = 0;
                for (int64_t qb = 0; qb < a.n_query_blocks(); ++qb) {
                    const std::vector<int32_t> la(a.blocks.begin() + a.offsets[size_t(qb)],
                                                  a.blocks.begin() + a.offsets[size_t(qb) + 1]);
                    const std::vector<int32_t> lb(b.blocks.begin() + b.offsets[size_t(qb)],
                                                  b.blocks.begin() + b.offsets[size_t(qb) + 1]);
                    differ += la != lb;
                }
                // Float ties at the threshold may flip a block in a rare query block, never more.
                EXPECT_LE(differ, 1) << type_name(t) << " T " << c.T << " head " << g << ": " << differ << " of "
                                     << a.n_query_blocks() << " query blocks select different key blocks";
            }
        }
}

// The device selection (xa_fill_device_plan's kernels) against the host rule xa_select_blocks on
// the same scores: random scores, scores with many ties (multiples of 1/8), all-zero rows, and
// garbage above the diagonal (which the rule never reads); thresholds from 0.05 to 1; query-block
// counts from 1 past a 256-candidate sort. Lists must be equal, and the pair counts attended_pairs.
TEST_F(CudaAttention, XADeviceSelectionFollowsTheHostRule) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    struct SCase {
        int64_t T, block;
    };
    for (const SCase c : {SCase{1, 64}, SCase{64, 64}, SCase{129, 64}, SCase{300, 64}, SCase{2000, 64}, SCase{4200, 64},
                          SCase{33000, 128}})
        for (double threshold : {0.05, 0.5, 0.9, 0.999, 1.0}) {
            const int64_t nb = (c.T + c.block - 1) / c.block;
            std::vector<std::vector<double>> scores(3, std::vector<double>(size_t(nb * nb)));
            for (int64_t qb = 0; qb < nb; ++qb)
                for (int64_t kb = 0; kb < nb; ++kb) {
                    const size_t x = size_t(qb * nb + kb);
                    const bool above = kb > qb;
                    scores[0][x] = above ? 1e30 : u(rng);
                    scores[1][x] = above ? -1.0 : std::floor(u(rng) * 8.0) / 8.0;  // ties
                    scores[2][x] = above ? 7.0 : (qb % 3 == 0 ? 0.0 : u(rng) * 1e-3);  // all-zero rows
                }
            std::vector<BlockList> lists;
            std::vector<int64_t> pairs;
            cuda::xa_select_on_device(scores, c.T, c.block, threshold, lists, pairs, nullptr);
            ASSERT_EQ(lists.size(), scores.size());
            ASSERT_EQ(pairs.size(), scores.size());
            std::vector<int32_t> order;
            for (size_t h = 0; h < scores.size(); ++h) {
                BlockList want;
                want.offsets.push_back(0);
                for (int64_t qb = 0; qb < nb; ++qb) {
                    xa_select_blocks(scores[h].data() + qb * nb, qb, threshold, want.blocks, order);
                    want.offsets.push_back(int64_t(want.blocks.size()));
                }
                EXPECT_EQ(lists[h].offsets, want.offsets) << "T " << c.T << " block " << c.block << " threshold "
                                                          << threshold << " scores " << h;
                EXPECT_EQ(lists[h].blocks, want.blocks) << "T " << c.T << " block " << c.block << " threshold "
                                                        << threshold << " scores " << h;
                EXPECT_EQ(pairs[h], attended_pairs(HeadMode::XA, {}, &want, c.block, c.T))
                    << "T " << c.T << " scores " << h;
                if (HasFailure()) return;
            }
        }
}

// The forward's XA path (scores, selection, lists and work list all on the device) against the
// host path on the same lists: the device lists copied back and uploaded as a host plan give the
// same work list (longest first, ties in making order) and, through each prefill kernel, the same
// output bit for bit; the lists keep block 0 and the diagonal, and the pair counts are the lists'.
// Modes mix XA with FA and SSA; T not a multiple of the tile; bf16 / fp16, d 64 / 128.
TEST_F(CudaAttention, XADevicePlanMatchesHostLists) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    struct PCase {
        int64_t T;
        int Hq, Hkv, d;
        DType t;
    };
    const StreamingWindow win{64, 256};
    for (const PCase c : {PCase{200, 8, 4, 128, DType::BF16}, PCase{1000, 8, 4, 64, DType::F16},
                          PCase{3001, 16, 4, 128, DType::BF16}, PCase{5000, 4, 2, 128, DType::F16}}) {
        SCOPED_TRACE("T " + std::to_string(c.T) + " d " + std::to_string(c.d) + " " + type_name(c.t));
        const std::vector<float> q = randn(size_t(c.T * c.Hq * c.d), rng), k = randn(size_t(c.T * c.Hkv * c.d), rng),
                                 v = randn(size_t(c.T * c.Hkv * c.d), rng);
        const DevTensor dq(q, c.t), dk(k, c.t), dv(v, c.t);
        XAParams xp;
        xp.block = 128;
        xp.threshold = 0.9;
        LayerPlan plan;
        for (int g = 0; g < c.Hkv; ++g) plan.mode.push_back(g % 4 == 1 ? HeadMode::FA : g % 4 == 2 ? HeadMode::SSA : HeadMode::XA);
        auto dp = cuda::new_plan();
        ASSERT_TRUE(cuda::xa_device_select_supported(c.T, xp, 2));
        cuda::xa_fill_device_plan(*dp, dq.p(), dk.p(), c.t, c.T, c.Hq, c.Hkv, c.d, xp, plan, nullptr);
        EXPECT_TRUE(cuda::holds_device_xa(*dp, plan, c.T, xp.block));
        const std::vector<int32_t> items_dev = cuda::work_list(*dp, c.Hq, 128, win, nullptr);
        const float scale = 1.0f / std::sqrt(float(c.d));
        std::vector<std::vector<float>> out_dev;
        const std::vector<cuda::PrefillKernel> kernels = kernels_for(c.t, c.d, *dp);
        for (cuda::PrefillKernel kernel : kernels) {
            DevTensor dout(q.size(), c.t);
            dout.poison();
            cuda::attn_hybrid_prefill(dq.p(), dk.p(), dv.p(), dout.p(), c.t, c.T, c.Hq, c.Hkv, c.d, *dp, win, xp.block,
                                      scale, nullptr, kernel);
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            out_dev.push_back(dout.get());
        }
        const std::vector<int64_t> pairs = cuda::device_xa_pairs(*dp, plan, nullptr);
        LayerPlan host = plan;
        cuda::download_device_xa(*dp, host, nullptr);
        ASSERT_EQ(host.xa.size(), plan.mode.size());
        const int64_t nb = (c.T + xp.block - 1) / xp.block;
        for (size_t g = 0; g < plan.mode.size(); ++g) {
            if (plan.mode[g] != HeadMode::XA) {
                EXPECT_EQ(pairs[g], 0);
                continue;
            }
            const BlockList& bl = host.xa[g];
            ASSERT_EQ(bl.n_query_blocks(), nb);
            for (int64_t qb = 0; qb < nb; ++qb) {
                const auto b = bl.blocks.begin() + bl.offsets[size_t(qb)], e = bl.blocks.begin() + bl.offsets[size_t(qb) + 1];
                ASSERT_TRUE(e > b && *b == 0 && *(e - 1) == qb && std::is_sorted(b, e)) << "head " << g << " qb " << qb;
            }
            EXPECT_EQ(pairs[g], attended_pairs(HeadMode::XA, win, &bl, xp.block, c.T)) << "head " << g;
        }
        auto hp = cuda::upload_plan(host, c.T, xp.block, nullptr);
        EXPECT_EQ(cuda::work_list(*hp, c.Hq, 128, win, nullptr), items_dev);
        for (size_t i = 0; i < kernels.size(); ++i) {
            DevTensor dout(q.size(), c.t);
            dout.poison();
            cuda::attn_hybrid_prefill(dq.p(), dk.p(), dv.p(), dout.p(), c.t, c.T, c.Hq, c.Hkv, c.d, *hp, win, xp.block,
                                      scale, nullptr, kernels[i]);
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            const std::vector<float> want = dout.get();
            size_t differ = 0;
            for (size_t x = 0; x < want.size(); ++x) differ += std::memcmp(&want[x], &out_dev[i][x], sizeof(float)) != 0;
            EXPECT_EQ(differ, 0u) << kernel_name(kernels[i]) << ": elements differing from the host-list prefill";
        }
        // The selection agrees with the host selection of its own scores (cuda::xa_fill_plan) up to
        // a float tie in a rare query block (the fp64 block sums are added atomically).
        LayerPlan again = plan;
        cuda::xa_fill_plan(dq.p(), dk.p(), c.t, c.T, c.Hq, c.Hkv, c.d, xp, again, nullptr);
        for (size_t g = 0; g < plan.mode.size(); ++g) {
            if (plan.mode[g] != HeadMode::XA) continue;
            int differ = 0;
            for (int64_t qb = 0; qb < nb; ++qb) {
                const BlockList &a = host.xa[g], &b = again.xa[g];
                differ += !std::equal(a.blocks.begin() + a.offsets[size_t(qb)], a.blocks.begin() + a.offsets[size_t(qb) + 1],
                                      b.blocks.begin() + b.offsets[size_t(qb)], b.blocks.begin() + b.offsets[size_t(qb) + 1]);
            }
            EXPECT_LE(differ, 1) << "head " << g;
        }
    }
}

// The decode step's norms, RoPE and cache append in one launch (cuda::qk_norm_rope_append, what the
// CUDA backend's qk_norm_rope_append runs) against the two launches it replaces (qk_norm_rope, then
// cache_append per token): q, k and every byte of each token's K and V cache equal. Each token has
// its own cache (a batched decode step); FA and SSA heads, positions that wrap the SSA ring, T 1–4,
// head_dim 64 and 128, bf16 and fp16 rows, with and without norms, positions from device memory
// and from pos0.
TEST_F(CudaAttention, NormRopeAppendGivesTheBitsOfTheTwoSteps) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const StreamingWindow win{4, 16};
    const int H = 8, KV = 4;
    LayerPlan plan;
    plan.mode = {HeadMode::FA, HeadMode::SSA, HeadMode::SSA, HeadMode::FA};
    plan.xa.resize(size_t(KV));
    int n_case = 0;
    for (const DType t : {DType::BF16, DType::F16})
        for (const int hd : {64, 128}) {
            std::vector<float> freq(size_t(hd / 2));
            for (int i = 0; i < hd / 2; ++i) freq[size_t(i)] = std::pow(1e6f, -2.0f * float(i) / float(hd));
            const DevBuf<float> inv_freq(freq), qn(randn(size_t(hd), rng, 0.2f)), kn(randn(size_t(hd), rng, 0.2f));
            for (const std::vector<int32_t>& pos : {std::vector<int32_t>{37}, std::vector<int32_t>{3, 50},
                                                   std::vector<int32_t>{60, 61, 62}, std::vector<int32_t>{5, 90, 17, 63}})
                for (const bool norms : {true, false}) {
                    const int64_t T = int64_t(pos.size()), cap = 100, kvd = int64_t(KV) * hd;
                    const bool dev_pos = n_case++ % 2 == 0 || T == 2 || T == 4;  // scattered positions need it
                    SCOPED_TRACE(std::string(type_name(t)) + " hd " + std::to_string(hd) + " T " + std::to_string(T) +
                                 (norms ? " norms" : "") + (dev_pos ? " device positions" : " pos0"));
                    const std::vector<float> qh = randn(size_t(T * H * hd), rng, 3.0f), kh = randn(size_t(T * kvd), rng, 3.0f),
                                             vh = randn(size_t(T * kvd), rng), fill = randn(size_t(cap * kvd), rng);
                    const DevTensor dfill(fill, t), dv(vh, t);
                    const DevBuf<int32_t> dpos(pos);
                    std::vector<float> qo[2], ko[2];
                    std::vector<uint16_t> kc[2], vc[2];
                    std::vector<int64_t> slot_at;  // way 0: element offset in kc / vc of token i's head g's new row
                    for (int way = 0; way < 2; ++way) {
                        const DevTensor dq(qh, t), dk(kh, t);
                        std::vector<std::unique_ptr<cuda::DeviceLayerCache>> caches;
                        cuda::KvAppend app;
                        app.v = dv.p();
                        for (int64_t i = 0; i < T; ++i) {
                            caches.push_back(cuda::new_layer_cache(plan, win, cap, KV, hd));
                            cuda::cache_store_prefill(*caches.back(), dfill.p(), dfill.p(), t, pos[size_t(i)], nullptr);
                            cuda::cache_append_target(app, int(i), *caches.back(), pos[size_t(i)]);
                        }
                        const int32_t* p = dev_pos ? dpos.p : nullptr;
                        if (way == 0) {
                            cuda::qk_norm_rope_append(dq.p(), dk.p(), t, norms ? qn.p : nullptr, norms ? kn.p : nullptr, 1e-6f,
                                                      T, H, KV, hd, p, pos[0], inv_freq.p, app, nullptr);
                        } else {
                            cuda::qk_norm_rope(dq.p(), dk.p(), t, norms ? qn.p : nullptr, norms ? kn.p : nullptr, 1e-6f, T, H,
                                               KV, hd, p, pos[0], inv_freq.p, nullptr);
                            for (int64_t i = 0; i < T; ++i)
                                cuda::cache_append(*caches[size_t(i)], dk.at(i * kvd), dv.at(i * kvd), t, pos[size_t(i)],
                                                   nullptr, p ? dpos.p + i : nullptr);
                        }
                        TCUDA(cudaDeviceSynchronize());
                        qo[way] = dq.get();
                        ko[way] = dk.get();
                        for (size_t i = 0; i < caches.size(); ++i) {
                            const auto& c = caches[i];
                            const size_t n0 = kc[way].size();
                            for (int g = 0; g < KV && way == 0; ++g)
                                slot_at.push_back(int64_t(n0) + c->h_heads[size_t(g)].off +
                                                  cuda::detail::cache_slot(c->h_heads[size_t(g)], win.sink, win.local, pos[i]) * hd);
                            kc[way].resize(n0 + c->elems);
                            vc[way].resize(n0 + c->elems);
                            TCUDA(cudaMemcpy(kc[way].data() + n0, c->k, c->elems * 2, cudaMemcpyDeviceToHost));
                            TCUDA(cudaMemcpy(vc[way].data() + n0, c->v, c->elems * 2, cudaMemcpyDeviceToHost));
                        }
                    }
                    EXPECT_EQ(qo[0], qo[1]);
                    EXPECT_EQ(ko[0], ko[1]);
                    EXPECT_EQ(kc[0], kc[1]);
                    EXPECT_EQ(vc[0], vc[1]);
                    // The new rows are where decode reads them: k as rotated and v, rounded to bf16.
                    for (int64_t i = 0; i < T; ++i)
                        for (int g = 0; g < KV; ++g)
                            for (int e = 0; e < hd; e += 7) {
                                const size_t at = size_t(slot_at[size_t(i * KV + g)] + e), src = size_t(i * kvd + g * hd + e);
                                ASSERT_EQ(kc[0][at], f32_to_bf16(ko[0][src])) << "token " << i << " head " << g << " dim " << e;
                                ASSERT_EQ(vc[0][at], f32_to_bf16(round_lp(vh[src], t))) << "token " << i << " head " << g;
                            }
                }
        }
}

#endif  // ELASTIC_HAVE_CUDA
