// Router training on the GPU against the CPU (compiled only with ELASTIC_CUDA; skipped without a
// device): every training op of the Backend interface (model/backend.h) on the CUDA backend in
// F32 against the CPU backend, which runs the reference functions of src/train/backward.h, on the
// same random inputs; then a whole train_step on a tiny model, router gradients compared.
// The CPU references are themselves held to finite differences (tests/test-backward*.cpp,
// test-trainer.cpp). Tolerance: fp32 rule of close_enough (max |gpu − cpu| ≤ rel · max |cpu|), rel
// 1e-4 for single ops (summation order differs), 2e-3 for a whole step through the layers.
#ifdef ELASTIC_HAVE_CUDA

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "attention/router.h"
#include "cpu/attention.h"
#include "model/backend.h"
#include "model/model.h"
#include "test-helpers.h"
#include "train/backward.h"
#include "train/router-init.h"
#include "train/train-step.h"

using namespace elastic;
using namespace elastic::test;

namespace {

bool have_gpu() { return cuda_device_count() > 0; }

// One host vector mirrored on a backend.
struct Mirror {
    Backend& be;
    Buf b;
    size_t n;
    Mirror(Backend& be_, const std::vector<float>& h) : be(be_), b(be_.alloc(h.size(), DType::F32)), n(h.size()) {
        be.upload(b, h.data(), n);
    }
    ~Mirror() { be.release(b); }
    std::vector<float> get() const {
        std::vector<float> h(n);
        be.download(h.data(), b, n);
        return h;
    }
};

class CudaTrainOps : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
        cpu = make_cpu_backend(0);
        gpu = make_cuda_backend(0, DType::F32);
        seed = fresh_seed();
        rng.seed(seed);
    }
    std::unique_ptr<Backend> cpu, gpu;
    uint64_t seed = 0;
    std::mt19937_64 rng;
};

TEST_F(CudaTrainOps, RowOpsAndProducts) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    const int64_t rows = 37, dim = 576, T = 29;
    const auto x = randn(size_t(rows * dim), rng), dy = randn(size_t(rows * dim), rng);
    const auto w = randn(size_t(dim), rng);
    const auto wc = cpu->upload_vector(w), wg = gpu->upload_vector(w);
    for (bool acc : {false, true}) {
        const auto init = randn(size_t(rows * dim), rng);
        Mirror xc(*cpu, x), dyc(*cpu, dy), dxc(*cpu, init), xg(*gpu, x), dyg(*gpu, dy), dxg(*gpu, init);
        cpu->rms_norm_backward(xc.b, *wc, dyc.b, dxc.b, rows, dim, 1e-6f, acc);
        gpu->rms_norm_backward(xg.b, *wg, dyg.b, dxg.b, rows, dim, 1e-6f, acc);
        EXPECT_TRUE(close_enough(dxg.get(), dxc.get(), nullptr, 1e-5)) << "rms_norm_backward accumulate " << acc;
    }
    {  // rope_backward: the inverse rotation (the same base function on both backends, fed different ropes)
        const int heads = 3, hd = 64;
        std::vector<float> inv(hd / 2);
        for (int i = 0; i < hd / 2; ++i) inv[size_t(i)] = std::pow(10000.0f, -2.0f * float(i) / hd);
        const auto ic = cpu->upload_vector(inv), ig = gpu->upload_vector(inv);
        std::vector<int32_t> pos(static_cast<size_t>(T));
        for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(1000 + 7 * t);
        const auto d = randn(size_t(T * heads * hd), rng);
        Mirror c(*cpu, d), g(*gpu, d);
        cpu->rope_backward(c.b, T, heads, hd, pos.data(), *ic);
        gpu->rope_backward(g.b, T, heads, hd, pos.data(), *ig);
        EXPECT_TRUE(close_enough(g.get(), c.get(), nullptr, 1e-5)) << "rope_backward";
        std::vector<float> ref = d;
        train::rope_backward(ref.data(), T, heads, hd, pos.data(), inv.data());
        EXPECT_TRUE(close_enough(c.get(), ref, nullptr, 1e-6)) << "Backend::rope_backward vs train::rope_backward";
    }
    {
        const int64_t n = 5000;
        const auto ga = randn(size_t(n), rng), up = randn(size_t(n), rng), dout = randn(size_t(n), rng);
        Mirror gc(*cpu, ga), uc(*cpu, up), oc(*cpu, dout), dgc(*cpu, poisoned(n)), duc(*cpu, poisoned(n));
        Mirror gg(*gpu, ga), ug(*gpu, up), og(*gpu, dout), dgg(*gpu, poisoned(n)), dug(*gpu, poisoned(n));
        cpu->swiglu_backward(gc.b, uc.b, oc.b, dgc.b, duc.b, n);
        gpu->swiglu_backward(gg.b, ug.b, og.b, dgg.b, dug.b, n);
        EXPECT_TRUE(close_enough(dgg.get(), dgc.get(), nullptr, 1e-5)) << "swiglu dgate";
        EXPECT_TRUE(close_enough(dug.get(), duc.get(), nullptr, 1e-5)) << "swiglu dup";
    }
    {
        std::vector<uint8_t> store;
        const Weight W = make_weight(DType::F32, 300, 200, rng, store);
        const auto mc = cpu->upload_matrix(W), mg = gpu->upload_matrix(W);
        const auto dyv = randn(size_t(T * 300), rng), init = randn(size_t(T * 200), rng);
        for (bool acc : {false, true}) {
            Mirror c(*cpu, dyv), g(*gpu, dyv), oc(*cpu, init), og(*gpu, init);
            cpu->matmul_dx(*mc, c.b, oc.b, T, acc);
            gpu->matmul_dx(*mg, g.b, og.b, T, acc);
            EXPECT_TRUE(close_enough(og.get(), oc.get(), nullptr, 1e-5)) << "matmul_dx accumulate " << acc;
        }
    }
}

TEST_F(CudaTrainOps, CrossEntropyAndMixing) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    const int64_t T = 600, D = 96, V = 1500;
    std::vector<uint8_t> store;
    const Weight W = make_weight(DType::F32, V, D, rng, store);
    const auto mc = cpu->upload_matrix(W), mg = gpu->upload_matrix(W);
    const auto h = randn(size_t(T * D), rng, 0.3f);
    std::vector<int32_t> tg(size_t(T), -1);
    std::uniform_int_distribution<int> u(0, int(V) - 1);
    for (int64_t t = 100; t < T; t += 2) tg[size_t(t)] = u(rng);  // 250 rows: two chunks of 256 on the GPU? one + rest
    for (int64_t t = 101; t < 400; t += 2) tg[size_t(t)] = u(rng);
    Mirror hc(*cpu, h), hg(*gpu, h), dc(*cpu, poisoned(T * D)), dg(*gpu, poisoned(T * D));
    const CrossEntropy a = cpu->cross_entropy(*mc, hc.b, tg.data(), T, dc.b);
    const CrossEntropy b = gpu->cross_entropy(*mg, hg.b, tg.data(), T, dg.b);
    EXPECT_EQ(a.count, b.count);
    EXPECT_GT(a.count, 256);  // more than one chunk
    EXPECT_NEAR(a.loss, b.loss, 1e-5 * std::fabs(a.loss));
    EXPECT_TRUE(close_enough(dg.get(), dc.get(), nullptr, 1e-4)) << "cross-entropy dh";

    const int Hq = 6, H = 2, hd = 64;
    const auto x = randn(size_t(T * Hq * hd), rng), y = randn(size_t(T * Hq * hd), rng), d = randn(size_t(T * Hq * hd), rng);
    const float w[2] = {1.0f, 0.25f};
    Mirror xc(*cpu, x), yc(*cpu, y), oc(*cpu, poisoned(x.size())), xg(*gpu, x), yg(*gpu, y), og(*gpu, poisoned(x.size()));
    cpu->mix_heads(xc.b, yc.b, w, oc.b, T, Hq, H, hd);
    gpu->mix_heads(xg.b, yg.b, w, og.b, T, Hq, H, hd);
    EXPECT_TRUE(close_enough(og.get(), oc.get(), nullptr, 1e-6)) << "mix_heads";
    Mirror dcm(*cpu, d), dgm(*gpu, d);
    double dwc[2], dwg[2];
    cpu->mix_heads_dw(dcm.b, xc.b, yc.b, T, Hq, H, hd, dwc);
    gpu->mix_heads_dw(dgm.b, xg.b, yg.b, T, Hq, H, hd, dwg);
    for (int g = 0; g < H; ++g) EXPECT_NEAR(dwg[g], dwc[g], 1e-9 * (1 + std::fabs(dwc[g]))) << "mix_heads_dw " << g;
}

struct AttnCase {
    const char* name;
    int64_t T;
    int Hq, H, hd;
    std::vector<HeadMode> modes;
    int64_t xa_block;
    std::vector<float> coef;  // empty: null
};

class CudaTrainAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CudaTrainAttention, ForwardAndBackwardMatchCpu) {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    const AttnCase& c = GetParam();
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    auto cpu = make_cpu_backend(0);
    auto gpu = make_cuda_backend(0, DType::F32);
    AttnShape s;
    s.T = c.T;
    s.n_head = c.Hq;
    s.n_kv_head = c.H;
    s.head_dim = c.hd;
    s.scale = 1.0f / std::sqrt(float(c.hd));
    s.win.sink = 37;  // not a tile multiple
    s.win.local = 150;
    s.xa_block = c.xa_block;
    LayerPlan plan;
    plan.mode = c.modes;
    plan.xa.resize(size_t(c.H));
    for (int g = 0; g < c.H; ++g)
        if (c.modes[size_t(g)] == HeadMode::XA) plan.xa[size_t(g)] = random_blocks(c.T, c.xa_block, 0.3, rng);
    const size_t nq = size_t(c.T) * c.Hq * c.hd, nk = size_t(c.T) * c.H * c.hd, nl = size_t(c.T) * c.Hq;
    const auto q = randn(nq, rng), k = randn(nk, rng), v = randn(nk, rng), dout = randn(nq, rng);
    Mirror qc(*cpu, q), kc(*cpu, k), vc(*cpu, v), oc(*cpu, poisoned(nq)), lc(*cpu, poisoned(nl));
    Mirror qg(*gpu, q), kg(*gpu, k), vg(*gpu, v), og(*gpu, poisoned(nq)), lg(*gpu, poisoned(nl));
    cpu->attn_forward_lse(s, plan, qc.b, kc.b, vc.b, oc.b, lc.b);
    gpu->attn_forward_lse(s, plan, qg.b, kg.b, vg.b, og.b, lg.b);
    EXPECT_TRUE(close_enough(og.get(), oc.get(), nullptr, 1e-5)) << "forward output";
    EXPECT_TRUE(close_enough(lg.get(), lc.get(), nullptr, 1e-5)) << "forward lse";
    // The backward from the same (CPU) forward on both; gradients added to non-zero buffers.
    const auto o = oc.get(), lse = lc.get();
    const auto dq0 = randn(nq, rng), dk0 = randn(nk, rng), dv0 = randn(nk, rng);
    Mirror oc2(*cpu, o), lc2(*cpu, lse), dc(*cpu, dout), dqc(*cpu, dq0), dkc(*cpu, dk0), dvc(*cpu, dv0);
    Mirror og2(*gpu, o), lg2(*gpu, lse), dg(*gpu, dout), dqg(*gpu, dq0), dkg(*gpu, dk0), dvg(*gpu, dv0);
    const float* coef = c.coef.empty() ? nullptr : c.coef.data();
    cpu->attn_backward(s, plan, qc.b, kc.b, vc.b, oc2.b, lc2.b, dc.b, dqc.b, dkc.b, dvc.b, coef);
    gpu->attn_backward(s, plan, qg.b, kg.b, vg.b, og2.b, lg2.b, dg.b, dqg.b, dkg.b, dvg.b, coef);
    // Compare the added gradients (minus the initial values) so that the check sees them whole.
    auto diff = [](std::vector<float> a, const std::vector<float>& b0) {
        for (size_t i = 0; i < a.size(); ++i) a[i] -= b0[i];
        return a;
    };
    // dq and dk are sums of p·(dp − δ) terms that cancel: exactly 0 for a row with one key (one
    // token), where the CPU's order gives 0 and the GPU's a rounding of δ's scale. Floor: 1e-6 of
    // the largest |dv| (the scale of p·dout, hence of dp and δ).
    const auto dvr = diff(dvc.get(), dv0);
    double mdv = 0;
    for (float x : dvr) mdv = std::max(mdv, double(std::fabs(x)));
    EXPECT_TRUE(close_enough(diff(dqg.get(), dq0), diff(dqc.get(), dq0), nullptr, 1e-4, 1e-6 * mdv)) << "dq";
    EXPECT_TRUE(close_enough(diff(dkg.get(), dk0), diff(dkc.get(), dk0), nullptr, 1e-4, 1e-6 * mdv)) << "dk";
    EXPECT_TRUE(close_enough(diff(dvg.get(), dv0), dvr, nullptr, 1e-4)) << "dv";
}

using HM = HeadMode;
INSTANTIATE_TEST_SUITE_P(
    Train, CudaTrainAttention,
    ::testing::Values(AttnCase{"fa_d64_gqa3", 301, 9, 3, 64, {HM::FA, HM::FA, HM::FA}, 128, {}},
                      AttnCase{"ssa_d64", 700, 6, 2, 64, {HM::SSA, HM::SSA}, 128, {}},
                      AttnCase{"mixed_d128", 520, 8, 4, 128, {HM::FA, HM::SSA, HM::XA, HM::XA}, 128, {}},
                      AttnCase{"xa64_d32", 333, 4, 2, 32, {HM::XA, HM::SSA}, 64, {}},
                      AttnCase{"coef_zero_d64", 257, 4, 2, 64, {HM::FA, HM::SSA}, 128, {0.0f, 0.5f}},
                      AttnCase{"one_token", 1, 2, 1, 64, {HM::SSA}, 128, {}}),
    [](const ::testing::TestParamInfo<AttnCase>& i) { return std::string(i.param.name); });

// A whole step on a tiny model: the router gradients, Ω and the loss of the CUDA backend match the
// CPU backend's, in each config.
TEST(CudaTrainStep, MatchesCpu) {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    auto m = Model::load(source_path("tests/data/tiny-qwen3"));
    auto cpu = make_cpu_backend(0);
    auto gpu = make_cuda_backend(0, DType::F32);
    const Engine ec(*m, *cpu), eg(*m, *gpu);
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    std::vector<RouterLayer> routers = train::router_init(m->config.n_layer, m->config.head_dim, seed);
    std::uniform_int_distribution<int> u(0, m->config.vocab - 1);
    std::vector<int32_t> prompt(300), answer(40);
    for (int32_t& t : prompt) t = u(rng);
    for (int32_t& t : answer) t = u(rng);
    const train::TrainSample smp = train::make_sample(prompt, answer, train::kSensitive);
    for (train::TrainConfig tc : {train::TrainConfig::FA_SSA, train::TrainConfig::FA_XA, train::TrainConfig::XA_SSA}) {
        SCOPED_TRACE(train::train_config_name(tc));
        train::StepOptions o;
        o.config = tc;
        o.win.sink = 16;
        o.win.local = 64;
        o.xa.block = 64;
        o.xa.stride = 8;
        o.xa.threshold = 0.6;
        for (bool soft : {true, false}) {
            o.soft_forward = soft;
            std::vector<RouterLayer> gc, gg;
            for (const RouterLayer& r : routers) {
                gc.push_back(train::router_zero_grads(r));
                gg.push_back(train::router_zero_grads(r));
            }
            const train::StepResult a = train::train_step(ec, routers, smp, 0.5, 1.0, 0.7, o, gc);
            const train::StepResult b = train::train_step(eg, routers, smp, 0.5, 1.0, 0.7, o, gg);
            EXPECT_NEAR(a.lm_loss, b.lm_loss, 1e-4 * std::fabs(a.lm_loss));
            EXPECT_EQ(a.omega, b.omega);
            for (size_t l = 0; l < routers.size(); ++l) {
                const RouterLayer& x = gc[l];
                const RouterLayer& y = gg[l];
                for (auto [px, py] : {std::pair{&x.fe0.w, &y.fe0.w}, {&x.fe2.w, &y.fe2.w}, {&x.rh0.w, &y.rh0.w},
                                      {&x.rh2.w, &y.rh2.w}, {&x.rh4.w, &y.rh4.w}, {&x.rh4.b, &y.rh4.b}})
                    EXPECT_TRUE(close_enough(*py, *px, nullptr, 2e-3)) << "layer " << l << (soft ? " soft" : " hard");
            }
        }
    }
}

}  // namespace

#endif  // ELASTIC_HAVE_CUDA
