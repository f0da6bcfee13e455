// What the 16-bit GPU precisions (src/model/backend.h) cost in per-token log-probs on SmolLM2,
// measured on the CPU with the naive emulation of tests/precision-emulation.h (no GPU needed): why
// the CUDA backend runs small models in f32 (the bar is 2e-2 of the CPU path over a
// 2000-token text; with ELASTIC_PRECISION_TOKENS=2000 this prints bf16 ~0.26 and f16 ~0.03 at
// worst, docs/performance.md). Checked here: the rounding happens (error > 0), fp16's 3 extra
// mantissa bits cut the mean error several-fold against bf16, and fp16's worst case stays under 5e-2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"
#include "model/model.h"
#include "precision-emulation.h"
#include "tiny-qwen3-64.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// log p(ids[i + 1] | ids[..i]) for i in [0, n - 1).
std::vector<double> token_logprobs(const Model& m, Backend& be, const std::vector<int32_t>& ids) {
    std::vector<double> lp;
    Engine e(m, be);
    Session s(e, int64_t(ids.size()));
    s.forward(ids.data(), int64_t(ids.size()), true, [&](int64_t i, const float* l) {
        if (i + 1 >= int64_t(ids.size())) return;
        double mx = -INFINITY;
        for (int v = 0; v < m.config.vocab; ++v) mx = std::max(mx, double(l[v]));
        double sum = 0;
        for (int v = 0; v < m.config.vocab; ++v) sum += std::exp(double(l[v]) - mx);
        lp.push_back(double(l[ids[size_t(i) + 1]]) - mx - std::log(sum));
    });
    return lp;
}

}  // namespace

TEST(Precision, EmulatedLogprobErrorPerGpuPrecision) {
    const std::string p = default_model_path();
    if (!file_exists(p)) GTEST_SKIP() << "default model not present (make model)";
    auto model = Model::load(p);
    const int64_t n = std::getenv("ELASTIC_PRECISION_TOKENS") ? std::atoll(std::getenv("ELASTIC_PRECISION_TOKENS")) : 400;
    std::vector<int32_t> ids = model->tok().encode(slurp("/usr/share/common-licenses/GPL-3"), false);
    ASSERT_GE(int64_t(ids.size()), n);
    ids.resize(size_t(n));
    auto cpu = make_cpu_backend(0);
    const std::vector<double> ref = token_logprobs(*model, *cpu, ids);
    double mean_of[2] = {0, 0}, max_of[2] = {0, 0};
    int at = 0;
    for (DType precision : {DType::F16, DType::BF16}) {
        const EmulatedPrecision ep = emulated(precision);
        PrecisionEmulation emu(ep, model->weights);
        const std::vector<double> got = token_logprobs(*model, emu, ids);
        ASSERT_EQ(got.size(), ref.size());
        double mx = 0, mean = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            const double d = std::fabs(got[i] - ref[i]);
            mx = std::max(mx, d);
            mean += d / double(ref.size());
        }
        std::printf("precision %-4s over %lld tokens: max |d logprob| %.3e, mean %.3e\n", ep.name, (long long)n, mx, mean);
        mean_of[at] = mean;
        max_of[at++] = mx;
    }
    EXPECT_GT(mean_of[0], 0.0) << "f16 emulation rounded nothing";
    EXPECT_LT(4 * mean_of[0], mean_of[1]) << "f16 should be several times closer than bf16";
    EXPECT_LT(max_of[0], 5e-2) << "f16 worst case";
}

// The Session's path for a backend that routes on the device (Backend::route_prefill: the modes
// held back until route_result, after the layer's attention is queued; MSR's count per layer from
// the host's running total), run on the CPU through the emulation's device_routing contract, against
// the host path (router_logits, Router::decision, choose_modes) on the same backend: the same modes
// in every layer, the same Ω and KV bytes, and the same logits bit for bit over the prompt and two
// decode steps. Random routers per layer: the softmax variant under fa-ssa, the sigmoid variant
// under msr:0.5 (which must mix FA and SSA heads in some layer), a window small enough to matter.
// On a GPU, CudaModel.RoutingOnDeviceMatchesHost checks the CUDA backend's own implementation.
TEST(Precision, DeviceRoutingContractMatchesHostRouting) {
    auto model = tiny_qwen3_head_dim_64();
    const ModelConfig& c = model->config;
    ASSERT_GE(c.n_kv_head, 2);
    std::mt19937_64 rng(17);
    std::vector<int32_t> ids(200);
    for (auto& x : ids) x = int32_t(rng() % uint64_t(c.vocab));
    const EmulatedPrecision none{Rounding::None, Rounding::None, Rounding::None, "f32"};
    for (const int n_out : {2, 1}) {
        std::vector<RouterLayer> layers;
        for (int l = 0; l < c.n_layer; ++l) layers.push_back(random_router(c.head_dim, n_out, rng));
        const Router router(layers);
        AttentionSpec spec = AttentionSpec::parse(n_out == 2 ? "fa-ssa" : "msr:0.5");
        spec.win.sink = 4;
        spec.win.local = 32;
        std::vector<float> logits[2];
        std::vector<std::vector<HeadMode>> modes[2];
        AttentionStats st[2];
        size_t kv[2] = {0, 0};
        for (int i = 0; i < 2; ++i) {
            PrecisionEmulation be(none, model->weights);
            be.device_routing = i == 1;
            const Engine e(*model, be, &router);
            const int64_t T = int64_t(ids.size()) - 2;
            Session s(e, int64_t(ids.size()), spec);
            auto keep = [&](int64_t, const float* l) { logits[i].insert(logits[i].end(), l, l + c.vocab); };
            s.forward(ids.data(), T, true, keep);
            for (const LayerPlan& p : s.plans()) {
                ASSERT_FALSE(p.modes_on_device);
                modes[i].push_back(p.mode);
            }
            st[i] = s.stats();
            kv[i] = s.kv_bytes();
            for (int64_t t = T; t < int64_t(ids.size()); ++t) s.forward(&ids[size_t(t)], 1, true, keep);
        }
        const std::string what = spec.name;
        ASSERT_EQ(modes[0], modes[1]) << what;
        EXPECT_EQ(st[0].omega_msr, st[1].omega_msr) << what;
        EXPECT_EQ(st[0].omega_esr, st[1].omega_esr) << what;
        EXPECT_EQ(kv[0], kv[1]) << what;
        EXPECT_GT(st[1].router_seconds, 0.0) << what;
        ASSERT_EQ(logits[0].size(), logits[1].size());
        EXPECT_EQ(0, std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * sizeof(float))) << what;
        if (n_out == 1) {
            EXPECT_GT(mixed_layers(modes[1]), 0) << what << ": msr:0.5 mixes the modes in some layer";
            EXPECT_NEAR(st[1].omega_msr, 0.5, 0.5 / (c.n_layer * c.n_kv_head) + 1e-12) << what;
        }
    }
}
