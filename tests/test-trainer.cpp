// Router training on the CPU (src/train/train-step.h, trainer.h, trainer-data.h) on the tiny
// random-weight models: the whole step's router gradient against central finite differences of
// the full loss (with the smooth soft-z forward, and |Ω − t| taken on the base point's side of its
// kink), a short run that moves Ω_MSR toward its target, bit-exact resume, and data-line errors.
#include <gtest/gtest.h>

#include <thread>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>

#include "attention/router.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "dist/comm.h"
#include "test-helpers.h"
#include "train/backward.h"
#include "train/router-init.h"
#include "train/trainer-data.h"
#include "train/trainer.h"

namespace elastic {
namespace {

using train::TrainSample;

// A model on the CPU backend, as the trainer takes it.
struct CpuEngine {
    std::unique_ptr<Model> model;
    std::unique_ptr<Backend> be;
    std::unique_ptr<Engine> engine;
    explicit CpuEngine(const std::string& rel)
        : model(Model::load(test::source_path(rel))), be(make_cpu_backend(0)), engine(std::make_unique<Engine>(*model, *be)) {}
};

TrainSample random_sample(std::mt19937_64& rng, int vocab, int n_prompt, int n_answer, int category) {
    std::uniform_int_distribution<int> u(0, vocab - 1);
    std::vector<int32_t> p(static_cast<size_t>(n_prompt)), a(static_cast<size_t>(n_answer));
    for (int32_t& t : p) t = u(rng);
    for (int32_t& t : a) t = u(rng);
    return train::make_sample(p, a, category);
}

// The 10 tensors of a router layer.
std::vector<std::vector<float>*> tensors_of(RouterLayer& r) {
    return {&r.fe0.w, &r.fe0.b, &r.fe2.w, &r.fe2.b, &r.rh0.w, &r.rh0.b, &r.rh2.w, &r.rh2.b, &r.rh4.w, &r.rh4.b};
}

std::string temp_dir() {
    char tmpl[] = "/tmp/elastic-trainer-XXXXXX";
    return std::string(mkdtemp(tmpl));
}

struct FdCase {
    const char* name;
    const char* model;
    train::TrainConfig config;
    double lambda1, lambda2;
    int n_out = 2;            // 1: the sigmoid variant (LayerNorm over heads)
    float tau = 1.0f;         // with noise_key: Gumbel-sigmoid decisions
    uint64_t noise_key = 0;
};

class TrainerGrad : public ::testing::TestWithParam<FdCase> {};

// Gradient of the full loss (CE + λ terms, all layers, soft z) with respect to the routers:
// one element of the last router layer, and a random direction over every router tensor of
// every layer (which exercises the path through later routers' pooled keys), both against
// central differences in fp32 of the loss.
TEST_P(TrainerGrad, MatchesFiniteDifferences) {
    const FdCase& fc = GetParam();
    CpuEngine ce(fc.model);
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    const ModelConfig& c = m->config;
    // A draw whose gradients are nearly all tiny checks little: up to six draws, until at least 4
    // of the 6 elements checked have a gradient that finite differences resolve (every element
    // checked must agree in every draw).
    const uint64_t first_seed = test::fresh_seed();
    int checked = 0;
    for (int attempt = 0; attempt < 6 && checked < 4; ++attempt) {
        const uint64_t seed = first_seed + uint64_t(attempt);
        SCOPED_TRACE(testing::Message() << "seed " << seed);
        std::mt19937_64 rng(seed);
        std::vector<RouterLayer> routers = train::router_init(c.n_layer, c.head_dim, seed, fc.n_out);
        // Larger router weights so z is far from 1/2 and depends strongly on the input.
        for (RouterLayer& r : routers)
            for (std::vector<float>* t : tensors_of(r))
                for (float& x : *t) x *= 3.0f;
        const TrainSample s = random_sample(rng, c.vocab, 40, 24, train::kSensitive);
        train::StepOptions o;
        o.config = fc.config;
        o.win.sink = 4;
        o.win.local = 8;
        o.xa.block = 16;
        o.xa.stride = 4;
        o.xa.threshold = 0.5;  // fewer blocks than the causal mask, so O_XA differs from O_FA
        o.soft_forward = true;
        o.tau = fc.tau;
        o.noise_key = fc.noise_key;
        const double target = 0.7;
        std::vector<RouterLayer> grads;
        for (const RouterLayer& r : routers) grads.push_back(train::router_zero_grads(r));
        const train::StepResult base = train::train_step(e, routers, s, fc.lambda1, fc.lambda2, target, o, grads);
        ASSERT_GT(base.answer_tokens, 0);
        // The λ1·|Ω − t| term has a kink where Ω crosses t: when the base Ω lies closer to t than
        // a perturbation moves it, a central difference straddles the kink and averages the two
        // one-sided slopes (seen at Ω − t = −2.4e-4). Off the kink, |Ω − t| equals s0·(Ω − t) with
        // s0 the sign at the base point, so the loss with that linear branch in place of |·| is the
        // loss near the base point, has the same gradient there, and is smooth everywhere: its
        // central differences check the λ1 path (s0 comes from the forward, not from the backward's
        // sign) without a kink in reach of any step. At Ω = t exactly there is no gradient to check.
        const double dev0 = base.omega - target;
        if (dev0 == 0) continue;
        const double s0 = dev0 > 0 ? 1.0 : -1.0;
        // NaN where the perturbed routers change some layer's XA block lists (see below).
        auto loss = [&](const std::vector<RouterLayer>& rs) {
            const train::StepResult r = train::train_loss(e, rs, s, fc.lambda1, fc.lambda2, target, o);
            if (r.xa_selection != base.xa_selection) return std::numeric_limits<double>::quiet_NaN();
            // The step's own loss with its λ1·|Ω − t| (r.dlambda1 = |Ω − t|) swapped for λ1·s0·(Ω − t).
            return r.lm_loss + r.reg_loss + fc.lambda1 * (s0 * (r.omega - target) - r.dlambda1);
        };
        // Per layer and for the first, a middle and the last tensor (fe0.w, rh2.w, rh4.b), the element
        // with the largest gradient: layer 0's reach the loss through layer 1's keys and its router.
        const double eps = 1e-2;
        checked = 0;
        for (size_t l = 0; l < routers.size(); ++l)
            for (size_t ti : {size_t(0), size_t(6), size_t(9)}) {
                const std::vector<float>& g = *tensors_of(grads[l])[ti];
                size_t e = 0;
                for (size_t i = 0; i < g.size(); ++i)
                    if (std::fabs(g[i]) > std::fabs(g[e])) e = i;
                auto central = [&](double h) {
                    std::vector<RouterLayer> p = routers, q = routers;
                    (*tensors_of(p[l])[ti])[e] += float(h);
                    (*tensors_of(q[l])[ti])[e] -= float(h);
                    return (loss(p) - loss(q)) / (2 * h);
                };
                // XA block lists are picked from q, k and held constant (no gradient through the
                // selection): a perturbation that flips a later layer's selection puts a step in
                // the loss. Such a difference is NaN (the selection's fingerprint changed) and a
                // smaller step is tried; a real gradient error shows at every step size (eps,
                // eps/4, eps/16). An element whose every step flips a selection is not checked.
                // The fp32 loss (about 8) carries rounding noise of ~1e-6, which a central difference
                // divides by 2h: the absolute floor grows as the step shrinks (1e-4 at eps).
                const double an = g[e];
                double h = eps, fd = central(h);
                auto tol = [&] { return 2e-2 * std::fabs(fd) + 1e-4 * (eps / h); };
                while (h / 4 >= eps / 16 && !(std::fabs(an - fd) <= tol())) {
                    h /= 4;
                    fd = central(h);
                }
                std::printf("layer %zu tensor %zu element %zu: analytic %.6g, finite differences %.6g (step %.3g)\n", l, ti,
                            e, an, fd, h);
                if (std::isnan(fd)) continue;  // every step changed an XA selection: nothing to compare
                EXPECT_NEAR(an, fd, tol()) << "layer " << l << " tensor " << ti << " element " << e;
                checked += std::fabs(fd) > 1e-3;
            }
    }
    EXPECT_GE(checked, 4) << "gradients too small to check anything";
}

INSTANTIATE_TEST_SUITE_P(
    Trainer, TrainerGrad,
    ::testing::Values(FdCase{"qwen3_fa_ssa_ce", "tests/data/tiny-qwen3", train::TrainConfig::FA_SSA, 0.0, 0.0},
                      FdCase{"qwen3_fa_ssa_lambda", "tests/data/tiny-qwen3", train::TrainConfig::FA_SSA, 0.5, 2.0},
                      FdCase{"llama3_xa_ssa_lambda", "tests/data/tiny-llama3", train::TrainConfig::XA_SSA, 0.5, 2.0},
                      FdCase{"qwen3_fa_xa_ce", "tests/data/tiny-qwen3", train::TrainConfig::FA_XA, 0.0, 0.0},
                      // The sigmoid variant's LayerNorm over 1 or 2 KV heads (the tiny models) is
                      // degenerate (±1): its backward is checked in test-backward-router.cpp.
                      FdCase{"qwen3_softmax_gumbel", "tests/data/tiny-qwen3", train::TrainConfig::FA_SSA, 0.5, 2.0, 2,
                             1.3f, 42}),
    [](const ::testing::TestParamInfo<FdCase>& i) { return std::string(i.param.name); });

// The hard forward: Ω is a share of whole heads; the backward's recomputation (both paths, mixed)
// reproduces the checkpointing forward (one path per head; train_step asserts it), in every config.
TEST(TrainerStep, HardForwardAllConfigs) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    std::mt19937_64 rng(5);
    const TrainSample s = random_sample(rng, m->config.vocab, 40, 24, train::kRobust);
    std::vector<RouterLayer> routers = train::router_init(m->config.n_layer, m->config.head_dim, 1);
    for (train::TrainConfig tc : {train::TrainConfig::FA_SSA, train::TrainConfig::FA_XA, train::TrainConfig::XA_SSA}) {
        train::StepOptions o;
        o.config = tc;
        o.win.sink = 4;
        o.win.local = 8;
        o.xa.block = 16;
        o.xa.stride = 4;
        o.xa.threshold = 0.5;
        std::vector<RouterLayer> grads;
        for (const RouterLayer& r : routers) grads.push_back(train::router_zero_grads(r));
        const train::StepResult r = train::train_step(e, routers, s, 0.5, 0.5, 1.0, o, grads);
        const train::StepResult f = train::train_loss(e, routers, s, 0.5, 0.5, 1.0, o);
        const double n = double(m->config.n_layer) * m->config.n_kv_head;
        EXPECT_NEAR(r.omega * n, std::round(r.omega * n), 1e-9);
        EXPECT_EQ(r.answer_tokens, 24);
        EXPECT_TRUE(std::isfinite(r.lm_loss));
        EXPECT_EQ(r.lm_loss, f.lm_loss);
        EXPECT_NE(grads[0].rh4.b[1], 0.0f) << train::train_config_name(tc);
    }
}


// The router decides from the prompt, as at inference: two samples with the same prompt and
// different answers get the same soft decisions (the same soft Ω), while a different prompt moves them.
TEST(TrainerStep, RouterPoolsThePromptOnly) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    std::mt19937_64 rng(9);
    const TrainSample a = random_sample(rng, m->config.vocab, 30, 20, train::kSensitive);
    TrainSample b = random_sample(rng, m->config.vocab, 30, 20, train::kSensitive);
    TrainSample same_prompt = a;
    std::copy(b.tokens.begin() + 30, b.tokens.end(), same_prompt.tokens.begin() + 30);
    same_prompt.targets = b.targets;
    ASSERT_EQ(a.prompt_len, 30);
    const std::vector<RouterLayer> routers = train::router_init(m->config.n_layer, m->config.head_dim, 3);
    train::StepOptions o;
    o.soft_forward = true;
    o.win.sink = 4;
    o.win.local = 8;
    const double wa = train::train_loss(e, routers, a, 0, 0, 1.0, o).omega;
    const double wsame = train::train_loss(e, routers, same_prompt, 0, 0, 1.0, o).omega;
    const double wb = train::train_loss(e, routers, b, 0, 0, 1.0, o).omega;
    EXPECT_EQ(wa, wsame);
    EXPECT_NE(wa, wb);
}
// The fold of the input standardisation: fe0'(x) = fe0((x − μ)/σ) for any x, with μ, σ of the rows.
TEST(TrainerInit, StandardizeFoldsMeanAndScale) {
    std::mt19937_64 rng(4);
    RouterLayer r = train::router_layer_init(16, rng);
    const RouterLayer orig = r;
    const int d = 16, n = 40;
    std::normal_distribution<double> g(0.0, 1.0);
    std::vector<double> mu(d), sd(d);
    for (int j = 0; j < d; ++j) {
        mu[size_t(j)] = 5.0 + 3.0 * g(rng);  // a large shared component
        sd[size_t(j)] = 0.05 + 0.2 * std::fabs(g(rng));
    }
    sd[3] = 0.0;  // a constant dimension: floored, not divided by 0
    std::vector<float> rows(size_t(n) * d);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) rows[size_t(i) * d + size_t(j)] = float(mu[size_t(j)] + sd[size_t(j)] * g(rng));
    const double norm = train::router_standardize_input(r, rows.data(), size_t(n));
    EXPECT_GT(norm, 5.0);
    // Exact mean and std of the rows, in double.
    std::vector<double> m(d, 0.0), s(d, 0.0);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) m[size_t(j)] += rows[size_t(i) * d + size_t(j)] / double(n);
    double smax = 0;
    for (int j = 0; j < d; ++j) {
        for (int i = 0; i < n; ++i) s[size_t(j)] += std::pow(rows[size_t(i) * d + size_t(j)] - m[size_t(j)], 2) / n;
        s[size_t(j)] = std::sqrt(s[size_t(j)]);
        smax = std::max(smax, s[size_t(j)]);
    }
    for (double& v : s) v = std::max(v, 1e-3 * smax);
    auto fe0 = [](const RouterLinear& l, const std::vector<double>& x, int o) {
        double y = l.b[size_t(o)];
        for (int j = 0; j < l.in; ++j) y += double(l.w[size_t(o) * size_t(l.in) + size_t(j)]) * x[size_t(j)];
        return y;
    };
    for (int t = 0; t < 5; ++t) {
        std::vector<double> x(d), xs(d);
        for (int j = 0; j < d; ++j) {
            x[size_t(j)] = mu[size_t(j)] + 0.3 * g(rng);
            xs[size_t(j)] = (x[size_t(j)] - m[size_t(j)]) / s[size_t(j)];
        }
        for (int o = 0; o < r.fe0.out; o += 7) {
            const double want = fe0(orig.fe0, xs, o);
            EXPECT_NEAR(fe0(r.fe0, x, o), want, 1e-4 * (1.0 + std::fabs(want))) << "output " << o;
        }
    }
    // Only fe0 changes; too few rows is an error.
    EXPECT_EQ(r.fe2.w, orig.fe2.w);
    EXPECT_EQ(r.rh4.b, orig.rh4.b);
    EXPECT_THROW(train::router_standardize_input(r, rows.data(), 1), Error);
}

// standardize_routers on a model: layer 0's pooled keys do not depend on any router, so after the
// fold the mean of fe0's output over those rows is fe0's old bias (the input is centred).
TEST(TrainerInit, StandardizeRoutersCentresTheFirstLayer) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    std::mt19937_64 rng(21);
    std::vector<TrainSample> data;
    for (int i = 0; i < 6; ++i) data.push_back(random_sample(rng, m->config.vocab, 24 + 3 * i, 8, i % 2));
    std::vector<RouterLayer> routers = train::router_init(m->config.n_layer, m->config.head_dim, 5);
    const std::vector<RouterLayer> orig = routers;
    train::StepOptions o;
    o.win.sink = 4;
    o.win.local = 8;
    const std::vector<double> norm = train::standardize_routers(train::collect_router_inputs(e, data, 4, o, routers), routers);
    ASSERT_EQ(norm.size(), size_t(m->config.n_layer));
    for (double v : norm) EXPECT_GT(v, 0.0);
    // The rows it used: samples 0, 1, 3, 4 of 6 (i·6/4).
    std::vector<std::vector<float>> pooled;
    o.pooled = &pooled;
    for (int i : {0, 1, 3, 4}) train::train_loss(e, orig, data[size_t(i)], 0, 0, 0, o);
    const int d = m->config.head_dim;
    const size_t n = pooled[0].size() / size_t(d);
    ASSERT_EQ(n, size_t(4 * m->config.n_kv_head));
    for (int out = 0; out < routers[0].fe0.out; ++out) {
        double mean = 0;
        for (size_t i = 0; i < n; ++i) {
            double y = routers[0].fe0.b[size_t(out)];
            for (int j = 0; j < d; ++j) y += double(routers[0].fe0.w[size_t(out) * size_t(d) + size_t(j)]) * pooled[0][i * size_t(d) + size_t(j)];
            mean += y / double(n);
        }
        EXPECT_NEAR(mean, orig[0].fe0.b[size_t(out)], 1e-3) << "output " << out;
    }
    EXPECT_NE(routers[0].fe0.w, orig[0].fe0.w);
    EXPECT_THROW(train::collect_router_inputs(e, {}, 4, o, routers), Error);
}

// The warm start: a forward under a forced plan has that plan's Ω, and the fit makes the routers
// decide that plan on the rows it saw, at the aimed probability.
TEST(TrainerInit, FitRoutersToPlan) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    const int L = m->config.n_layer, H = m->config.n_kv_head;
    std::mt19937_64 rng(8);
    std::vector<TrainSample> data;
    for (int i = 0; i < 5; ++i) data.push_back(random_sample(rng, m->config.vocab, 20 + 5 * i, 6, i % 2));
    std::vector<std::vector<uint8_t>> plan(size_t(L), std::vector<uint8_t>(size_t(H), 0));
    int n_fa = 0;
    for (int l = 0; l < L; ++l)
        for (int h = 0; h < H; ++h) n_fa += plan[size_t(l)][size_t(h)] = uint8_t((l + h) % 2);
    ASSERT_GT(n_fa, 0);
    ASSERT_LT(n_fa, L * H);
    std::vector<RouterLayer> routers = train::router_init(L, m->config.head_dim, 2);
    train::StepOptions o;
    o.win.sink = 4;
    o.win.local = 8;
    o.forced_full = &plan;
    EXPECT_DOUBLE_EQ(train::train_loss(e, routers, data[0], 0, 0, 0, o).omega, 1.0 - double(n_fa) / (L * H));
    o.forced_full = nullptr;
    const auto inputs = train::collect_router_inputs(e, data, 5, o, routers, &plan);
    train::standardize_routers(inputs, routers);
    const train::PlanFit f = train::fit_routers_to_plan(inputs, plan, 0.75, 300, 3e-3, routers);
    EXPECT_EQ(f.agreement, 1.0);
    EXPECT_LT(f.mse, 0.01);
    // The fitted routers route the samples (under the plan's own forward) as the plan, at P ≈ 0.75.
    for (int l = 0; l < L; ++l) {
        const size_t row = size_t(H) * size_t(m->config.head_dim);
        for (size_t s = 0; s < 5; ++s) {
            const RouterDecision d = Router(std::vector<RouterLayer>{routers[size_t(l)]})
                                         .route(0, inputs[size_t(l)].data() + s * row, 1, H, m->config.head_dim);
            for (int h = 0; h < H; ++h) {
                EXPECT_EQ(d.full[size_t(h)], plan[size_t(l)][size_t(h)]) << "layer " << l << " head " << h;
                EXPECT_NEAR(d.prob_fa[size_t(h)], plan[size_t(l)][size_t(h)] ? 0.75 : 0.25, 0.1);
            }
        }
    }
    EXPECT_THROW(train::fit_routers_to_plan(inputs, plan, 1.0, 10, 1e-3, routers), Error);
}

// The adaptive warm start: sensitive and robust samples fitted to two different plans, each
// collected under its own plan; the fitted routers route every sample as its category's plan.
// Six random samples of the tiny model, sensitive and robust in turn, and their router inputs
// collected under `sens` (sensitive samples) and `rob` (robust ones), from a fresh router init.
struct CategoryInputs {
    std::vector<TrainSample> data;
    train::StepOptions o;
    std::vector<RouterLayer> routers;
    std::vector<std::vector<float>> inputs;
    std::vector<int> cats;
};
CategoryInputs collect_by_category(const Engine& e, const Model& m, const std::vector<std::vector<uint8_t>>& sens,
                                   const std::vector<std::vector<uint8_t>>& rob) {
    CategoryInputs c;
    std::mt19937_64 rng(9);
    for (int i = 0; i < 6; ++i) c.data.push_back(random_sample(rng, m.config.vocab, 24 + 4 * i, 5, i % 2));
    c.routers = train::router_init(m.config.n_layer, m.config.head_dim, 3);
    c.o.win.sink = 4;
    c.o.win.local = 8;
    c.inputs = train::collect_router_inputs(e, c.data, 6, c.o, c.routers, &sens, &rob, &c.cats);
    return c;
}

// The heads of all layers, (layer, head), by score, highest first; and the plan keeping the first k FA.
std::vector<std::pair<int, int>> heads_by_score(const std::vector<std::vector<float>>& scores) {
    std::vector<std::pair<int, int>> order;
    for (size_t l = 0; l < scores.size(); ++l)
        for (size_t h = 0; h < scores[l].size(); ++h) order.emplace_back(int(l), int(h));
    std::stable_sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
        return scores[size_t(a.first)][size_t(a.second)] > scores[size_t(b.first)][size_t(b.second)];
    });
    return order;
}
std::vector<std::vector<uint8_t>> top_plan(const std::vector<std::pair<int, int>>& order, int L, int H, int k) {
    std::vector<std::vector<uint8_t>> p(size_t(L), std::vector<uint8_t>(size_t(H), 0));
    for (int i = 0; i < k; ++i) p[size_t(order[size_t(i)].first)][size_t(order[size_t(i)].second)] = 1;
    return p;
}

TEST(TrainerInit, FitRoutersToPlanPerCategory) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    const int L = m->config.n_layer, H = m->config.n_kv_head, d = m->config.head_dim;
    std::vector<std::vector<uint8_t>> sens(size_t(L), std::vector<uint8_t>(size_t(H), 1)), rob = sens;
    for (int l = 0; l < L; ++l)
        for (int h = 0; h < H; ++h) rob[size_t(l)][size_t(h)] = uint8_t((l + h) % 2);  // sparser
    CategoryInputs c = collect_by_category(e, *m, sens, rob);
    auto& [data, o, routers, inputs, cats] = c;
    ASSERT_EQ(cats, (std::vector<int>{0, 1, 0, 1, 0, 1}));
    // Each sample's forward ran under its own plan: a robust sample's Ω is the sparse plan's.
    o.forced_full = &rob;
    int n_fa = 0;
    for (const auto& r : rob)
        for (uint8_t f : r) n_fa += f;
    EXPECT_DOUBLE_EQ(train::train_loss(e, routers, data[1], 0, 0, 0, o).omega, 1.0 - double(n_fa) / (L * H));
    o.forced_full = nullptr;
    train::standardize_routers(inputs, routers);
    const train::PlanFit f = train::fit_routers_to_plans(inputs, {&sens, &rob}, cats, 0.8, 600, 3e-3, routers);
    ASSERT_EQ(f.plan_agreement.size(), 2u);
    EXPECT_EQ(f.plan_agreement[0], 1.0);
    EXPECT_EQ(f.plan_agreement[1], 1.0);
    // The curve: one point per iteration and the end; its last point is the fit's result, and with
    // every decision agreeing each category's Ω is its plan's (sensitive: all FA, Ω 0).
    ASSERT_EQ(f.curve.size(), 601u);
    EXPECT_EQ(f.curve.back().iter, 600);
    EXPECT_EQ(f.curve.back().agreement, f.plan_agreement);
    EXPECT_DOUBLE_EQ(f.curve.back().mse, f.mse);
    EXPECT_LT(f.curve.back().mse, 0.5 * f.curve.front().mse);
    EXPECT_EQ(f.plan_omega, (std::vector<double>{0.0, 1.0 - double(n_fa) / (L * H)}));
    EXPECT_EQ(f.curve.back().omega, f.plan_omega);
    const size_t row = size_t(H) * size_t(d);
    for (int l = 0; l < L; ++l)
        for (size_t s = 0; s < 6; ++s) {
            const auto& want = cats[s] == train::kRobust ? rob : sens;
            const RouterDecision dec = Router(std::vector<RouterLayer>{routers[size_t(l)]})
                                           .route(0, inputs[size_t(l)].data() + s * row, 1, H, d);
            for (int h = 0; h < H; ++h)
                EXPECT_EQ(dec.full[size_t(h)], want[size_t(l)][size_t(h)]) << "layer " << l << " sample " << s << " head " << h;
        }
    EXPECT_THROW(train::fit_routers_to_plans(inputs, {&sens, &rob}, std::vector<int>(6, 2), 0.8, 10, 1e-3, routers), Error);
}

// Graded targets: on the plan's side of 1/2 for every head, falling with the head's rank, and the
// same logit step between heads of neighbouring ranks in any plan (the ranking is the plans' own).
TEST(TrainerInit, GradedStaticTargetsFollowTheRanking) {
    const int L = 3, H = 4;
    std::vector<std::vector<float>> scores(L, std::vector<float>(H));
    std::mt19937_64 rng(4);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (auto& l : scores)
        for (float& x : l) x = u(rng);
    const auto order = heads_by_score(scores);
    const double temp = 0.1;
    auto logit = [](double p) { return std::log(p / (1 - p)); };
    for (int k : {2, 5, 9}) {
        const auto plan = top_plan(order, L, H, k);
        const auto t = train::graded_static_targets(scores, plan, temp);
        for (int i = 0; i < L * H; ++i) {
            const auto [l, h] = order[size_t(i)];
            const float p = t[size_t(l)][size_t(h)];
            EXPECT_EQ(p > 0.5f, plan[size_t(l)][size_t(h)] != 0) << "k " << k << " rank " << i;
            EXPECT_NEAR(logit(p), (k - 0.5 - i) / (temp * L * H), 1e-4) << "k " << k << " rank " << i;
        }
    }
    // A plan that is not the ranking's top k (a tie broken the other way): the disagreeing heads sit
    // just on the plan's side.
    auto odd = top_plan(order, L, H, 3);
    std::swap(odd[size_t(order[2].first)][size_t(order[2].second)], odd[size_t(order[3].first)][size_t(order[3].second)]);
    const auto t = train::graded_static_targets(scores, odd, temp);
    EXPECT_FLOAT_EQ(t[size_t(order[2].first)][size_t(order[2].second)], 0.45f);
    EXPECT_FLOAT_EQ(t[size_t(order[3].first)][size_t(order[3].second)], 0.55f);
    EXPECT_THROW(train::graded_static_targets(scores, odd, 0.0), Error);
    EXPECT_THROW(train::graded_static_targets(std::vector<std::vector<float>>(2, std::vector<float>(H)), odd, temp), Error);
}

// The fit to graded targets per category reaches both plans' decisions, as the binary fit does.
TEST(TrainerInit, FitRoutersToGradedTargetsPerCategory) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const int L = m->config.n_layer, H = m->config.n_kv_head;
    std::vector<std::vector<float>> scores(size_t(L), std::vector<float>(static_cast<size_t>(H)));
    for (int l = 0; l < L; ++l)
        for (int h = 0; h < H; ++h) scores[size_t(l)][size_t(h)] = float((l * 7 + h * 5) % (L * H));  // distinct
    const auto order = heads_by_score(scores);
    const auto sens = top_plan(order, L, H, L * H * 3 / 4), rob = top_plan(order, L, H, L * H / 4);
    CategoryInputs c = collect_by_category(*ce.engine, *m, sens, rob);
    train::standardize_routers(c.inputs, c.routers);
    const auto ts = train::graded_static_targets(scores, sens, 0.2), tr = train::graded_static_targets(scores, rob, 0.2);
    const train::PlanFit f = train::fit_routers_to_targets(c.inputs, {&ts, &tr}, c.cats, 800, 3e-3, c.routers);
    ASSERT_EQ(f.plan_agreement.size(), 2u);
    EXPECT_EQ(f.plan_agreement[0], 1.0);
    EXPECT_EQ(f.plan_agreement[1], 1.0);
    EXPECT_LT(f.mse, 0.01);
    std::vector<std::vector<float>> bad = ts;
    bad[0][0] = 1.0f;
    EXPECT_THROW(train::fit_routers_to_targets(c.inputs, {&bad}, std::vector<int>(6, 0), 10, 1e-3, c.routers), Error);
}

std::vector<TrainSample> synthetic_data(int vocab, int n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<TrainSample> d;
    for (int i = 0; i < n; ++i) d.push_back(random_sample(rng, vocab, 20, 12, i % 2 ? train::kRobust : train::kSensitive));
    return d;
}

// Routers that start with every head on full attention (Ω = 0, far from both targets).
std::vector<RouterLayer> all_fa_init(const ModelConfig& c, float margin) {
    std::vector<RouterLayer> r = train::router_init(c.n_layer, c.head_dim, 7);
    for (RouterLayer& l : r) {
        l.rh4.b[0] = -margin / 2;
        l.rh4.b[1] = margin / 2;
    }
    return r;
}

TEST(TrainerRun, MovesOmegaTowardTarget) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    const std::vector<TrainSample> data = synthetic_data(m->config.vocab, 8, 3);
    train::TrainerOptions o;
    o.step.win.sink = 4;
    o.step.win.local = 8;
    o.steps = 30;
    o.batch = 2;
    o.lr = 2e-2;
    o.lambda_init = 1.0;
    o.lambda_lr = 0.1;
    o.seed = 11;
    train::TrainState st = train::init_state(all_fa_init(m->config, 1.0f), o, data.size());
    double first = -1, last_dev = 0, first_dev = 0, seconds = 0;
    int64_t tokens = 0;
    std::vector<double> devs;
    train::LoopOptions lo;
    lo.on_step = [&](const train::StepLog& l) {
        double dev = 0;
        int n = 0;
        for (int c = 0; c < train::kCategories; ++c)
            if (l.count[c] > 0) {
                dev += std::fabs(l.omega[c] - o.target[c]) * l.count[c];
                n += l.count[c];
            }
        devs.push_back(dev / n);
        seconds += l.seconds;
        tokens += l.tokens;
        if (first < 0) {
            first = l.lm_loss;
            // The log line carries the targets, which `plot` draws against Ω.
            const auto j = nlohmann::json::parse(l.json());
            EXPECT_EQ(j.at("target").at("sensitive").get<double>(), o.target[train::kSensitive]);
            EXPECT_EQ(j.at("target").at("robust").get<double>(), o.target[train::kRobust]);
        }
    };
    train::train_loop(e, data, o, lo, st);
    ASSERT_EQ(devs.size(), 30u);
    for (int i = 0; i < 5; ++i) {
        first_dev += devs[size_t(i)] / 5;
        last_dev += devs[devs.size() - 1 - size_t(i)] / 5;
    }
    std::printf("Trainer run: mean |Ω − t| first 5 steps %.3f, last 5 steps %.3f; %.1f steps/s, %.0f tokens/s\n",
                first_dev, last_dev, 30 / seconds, double(tokens) / seconds);
    EXPECT_GT(first_dev, 0.6);
    EXPECT_LT(last_dev, first_dev - 0.2);
}

// N steps in one run == N/2, checkpoint, load, N/2 more; plain, and with Gumbel noise and the
// annealed temperature in both router variants (the noise is keyed by seed, step and batch slot).
void check_resume_bit_exact(bool gumbel, int n_out) {
    SCOPED_TRACE(testing::Message() << "gumbel " << gumbel << ", router outputs " << n_out);
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const Engine& e = *ce.engine;
    const std::vector<TrainSample> data = synthetic_data(m->config.vocab, 5, 4);  // odd: epochs wrap mid-batch
    train::TrainerOptions o;
    o.step.win.sink = 4;
    o.step.win.local = 8;
    o.steps = 8;
    o.batch = 2;
    o.lr = 1e-2;
    o.lambda_init = 0.5;
    o.lambda_lr = 0.05;
    o.seed = 99;
    o.gumbel = gumbel;
    const std::vector<RouterLayer> init = train::router_init(m->config.n_layer, m->config.head_dim, 2, n_out);
    train::TrainState a = train::init_state(init, o, data.size());
    train::train_loop(e, data, o, train::LoopOptions{}, a);

    const std::string dir = temp_dir();
    train::TrainState b = train::init_state(init, o, data.size());
    train::LoopOptions half;
    half.stop_at = 4;
    half.checkpoint_dir = dir;
    train::train_loop(e, data, o, half, b);
    train::TrainState c = train::load_checkpoint(dir, m->config.n_layer, m->config.head_dim, data.size());
    EXPECT_EQ(c.step, 4);
    train::train_loop(e, data, o, train::LoopOptions{}, c);
    EXPECT_EQ(c.step, 8);
    for (size_t l = 0; l < init.size(); ++l) {
        auto A = tensors_of(a.routers[l]), C = tensors_of(c.routers[l]), I = tensors_of(const_cast<RouterLayer&>(init[l]));
        for (size_t i = 0; i < A.size(); ++i) {
            ASSERT_EQ(A[i]->size(), C[i]->size());
            EXPECT_EQ(0, std::memcmp(A[i]->data(), C[i]->data(), A[i]->size() * sizeof(float))) << "layer " << l << " tensor " << i;
            EXPECT_NE(0, std::memcmp(A[i]->data(), I[i]->data(), A[i]->size() * sizeof(float))) << "did not train";
        }
    }
    for (int k = 0; k < train::kCategories; ++k) {
        EXPECT_EQ(a.lambda1[k], c.lambda1[k]);
        EXPECT_EQ(a.lambda2[k], c.lambda2[k]);
    }
    // The trained routers load with the inference path's loader.
    const std::string out = dir + "/out.safetensors";
    train::write_trained_router(out, c.routers, {{"config", "fa-ssa"}});
    const Router r = Router::load(out, m->config.n_layer, m->config.head_dim);
    EXPECT_EQ(0, std::memcmp(r.layer(1).rh4.w.data(), c.routers[1].rh4.w.data(), c.routers[1].rh4.w.size() * 4));
    EXPECT_EQ(r.layer(1).use_softmax(), n_out == 2);
    std::filesystem::remove_all(dir);
}

// Data parallel (issue 14) with the in-process communicator: N ranks, each with its own backend
// and engine on one model, each computing its share of every batch, give one rank's result on the
// same global batch up to the order of the gradient sums: routers within 1e-5, λ and the logged Ω,
// losses and token counts exactly (they are summed per slot, in slot order). Batch 5 over 2 and 3
// ranks: uneven shares; Gumbel noise keyed by the global slot.
TEST(TrainerRun, DataParallelMatchesOneRank) {
    CpuEngine ce("tests/data/tiny-qwen3");
    const Model* m = ce.model.get();
    const std::vector<TrainSample> data = synthetic_data(m->config.vocab, 7, 5);
    train::TrainerOptions o;
    o.step.win.sink = 4;
    o.step.win.local = 8;
    o.steps = 4;
    o.batch = 5;
    o.lr = 1e-2;
    o.lambda_init = 0.5;
    o.lambda_lr = 0.05;
    o.seed = 21;
    o.gumbel = true;
    const std::vector<RouterLayer> init = train::router_init(m->config.n_layer, m->config.head_dim, 3);
    train::TrainState one = train::init_state(init, o, data.size());
    std::vector<train::StepLog> logs1;
    train::LoopOptions lo1;
    lo1.on_step = [&](const train::StepLog& l) { logs1.push_back(l); };
    train::train_loop(*ce.engine, data, o, lo1, one);
    for (int ranks : {2, 3}) {
        SCOPED_TRACE(testing::Message() << ranks << " ranks");
        dist::LocalGroup group(ranks);
        std::vector<train::TrainState> states(size_t(ranks), train::init_state(init, o, data.size()));
        std::vector<std::vector<train::StepLog>> logs(static_cast<size_t>(ranks));
        std::vector<std::thread> th;
        for (int r = 0; r < ranks; ++r)
            th.emplace_back([&, r] {
                auto comm = group.rank(r);
                auto be = make_cpu_backend(1);
                Engine eng(*m, *be);
                train::TrainerOptions ro = o;
                ro.comm = comm.get();
                train::LoopOptions lo;
                lo.on_step = [&](const train::StepLog& l) { logs[size_t(r)].push_back(l); };
                train::train_loop(eng, data, ro, lo, states[size_t(r)]);
            });
        for (auto& t : th) t.join();
        for (int r = 0; r < ranks; ++r) {
            const train::TrainState& st = states[size_t(r)];
            ASSERT_EQ(st.step, one.step);
            for (size_t l = 0; l < init.size(); ++l) {
                auto A = tensors_of(one.routers[l]), B = tensors_of(const_cast<RouterLayer&>(st.routers[l]));
                for (size_t i = 0; i < A.size(); ++i)
                    for (size_t e = 0; e < A[i]->size(); ++e)
                        ASSERT_NEAR((*B[i])[e], (*A[i])[e], 1e-5) << "rank " << r << " layer " << l << " tensor " << i;
            }
            for (int k = 0; k < train::kCategories; ++k) {
                EXPECT_NEAR(st.lambda1[k], one.lambda1[k], 1e-12);
                EXPECT_NEAR(st.lambda2[k], one.lambda2[k], 1e-12);
            }
            ASSERT_EQ(logs[size_t(r)].size(), logs1.size());
            for (size_t k = 0; k < logs1.size(); ++k) {
                EXPECT_EQ(logs[size_t(r)][k].tokens, logs1[k].tokens);
                EXPECT_NEAR(logs[size_t(r)][k].lm_loss, logs1[k].lm_loss, 1e-9);
                EXPECT_NEAR(logs[size_t(r)][k].grad_norm, logs1[k].grad_norm, 1e-5 * (1 + logs1[k].grad_norm));
                for (int c = 0; c < train::kCategories; ++c) EXPECT_EQ(logs[size_t(r)][k].count[c], logs1[k].count[c]);
            }
        }
    }
}

TEST(TrainerRun, ResumeIsBitExact) { check_resume_bit_exact(false, 2); }
TEST(TrainerRun, GumbelResumeIsBitExact) {
    check_resume_bit_exact(true, 2);
    check_resume_bit_exact(true, 1);
}

TEST(TrainerRun, TemperatureAnneals) {
    train::TrainerOptions o;
    o.steps = 100;
    EXPECT_EQ(train::temperature(o, 0), 1.0);  // no --gumbel: tau 1
    o.gumbel = true;
    EXPECT_DOUBLE_EQ(train::temperature(o, 0), 1.5);
    EXPECT_DOUBLE_EQ(train::temperature(o, 30), 1.25);
    EXPECT_DOUBLE_EQ(train::temperature(o, 60), 1.0);
    EXPECT_DOUBLE_EQ(train::temperature(o, 99), 1.0);
    // The noise is a logistic draw: about half positive, spread ~ pi/sqrt(3).
    int pos = 0;
    double sq = 0;
    for (int h = 0; h < 4000; ++h) {
        const float g = train::router_noise(12345, h % 7, h);
        pos += g > 0;
        sq += double(g) * g;
    }
    EXPECT_NEAR(pos / 4000.0, 0.5, 0.05);
    EXPECT_NEAR(std::sqrt(sq / 4000), 3.14159265 / std::sqrt(3.0), 0.15);
    EXPECT_EQ(train::router_noise(1, 2, 3), train::router_noise(1, 2, 3));
    EXPECT_NE(train::router_noise(1, 2, 3), train::router_noise(2, 2, 3));
}

// A byte-level stand-in for a tokenizer: one id per character, no template, no end id.
void bytes(const train::TextSample& s, std::vector<int32_t>& p, std::vector<int32_t>& a) {
    p.assign(s.prompt.begin(), s.prompt.end());
    a.assign(s.answer.begin(), s.answer.end());
}

TEST(TrainerData, ReadsGoodLines) {
    const std::string text =
        R"({"prompt": "abc", "answer": "de", "task": "qa", "category": "sensitive"})"
        "\n\n"
        R"({"prompt": "x", "answer": "yz", "task": "sum", "category": "robust"})"
        "\n";
    const auto d = train::parse_train_data(text, "d.jsonl", bytes, 16, false);
    ASSERT_EQ(d.size(), 2u);
    EXPECT_EQ(d[0].tokens.size(), 5u);
    EXPECT_EQ(d[0].targets, (std::vector<int32_t>{-1, -1, 'd', 'e', -1}));
    EXPECT_EQ(d[0].category, train::kSensitive);
    EXPECT_EQ(d[1].category, train::kRobust);
    EXPECT_EQ(d[1].line, 3);

    // the format reaches the encoder (render_sample renders raw samples without the chat template)
    std::vector<train::SampleFormat> seen;
    const auto record = [&](const train::TextSample& s, std::vector<int32_t>& p, std::vector<int32_t>& a) {
        seen.push_back(s.format);
        bytes(s, p, a);
    };
    const std::string mixed = R"({"prompt": "x", "answer": "y", "task": "code-raw", "category": "robust", "format": "raw"})"
                              "\n"
                              R"({"prompt": "x", "answer": "y", "task": "qa", "category": "robust", "format": "chat"})"
                              "\n"
                              R"({"prompt": "x", "answer": "y", "task": "qa", "category": "robust"})"
                              "\n";
    EXPECT_EQ(train::parse_train_data(mixed, "d.jsonl", record, 16, false).size(), 3u);
    EXPECT_EQ(seen, (std::vector<train::SampleFormat>{train::SampleFormat::Raw, train::SampleFormat::Chat, train::SampleFormat::Chat}));
}

TEST(TrainerData, BadLinesNameTheLine) {
    const std::string good = R"({"prompt": "abc", "answer": "de", "task": "qa", "category": "robust"})";
    struct Case {
        std::string line, expect;
    };
    const std::vector<Case> cases = {
        {R"({"prompt": "abc", "answer": )", "not valid JSON"},
        {R"({"prompt": "abc", "task": "qa", "category": "robust"})", "missing field 'answer'"},
        {R"({"prompt": "abc", "answer": 3, "task": "qa", "category": "robust"})", "'answer' is not a string"},
        {R"({"prompt": "abc", "answer": "d", "task": "qa", "category": "medium"})", "unknown category 'medium'"},
        {R"({"prompt": "abcdefghijklmnopq", "answer": "d", "task": "qa", "category": "robust"})", "longer than --max-seq 16"},
        {R"({"prompt": "", "answer": "d", "task": "qa", "category": "robust"})", "empty prompt"},
        {R"([1, 2])", "not a JSON object"},
        {R"({"prompt": "abc", "answer": "d", "task": "qa", "category": "robust", "format": "text"})", "unknown format 'text'"},
        {R"({"prompt": "abc", "answer": "d", "task": "qa", "category": "robust", "format": null})", "'format' is not a string"},
    };
    for (const Case& c : cases) {
        const std::string text = good + "\n" + good + "\n" + c.line + "\n" + good + "\n";
        try {
            train::parse_train_data(text, "d.jsonl", bytes, 16, false);
            ADD_FAILURE() << "no error for " << c.line;
        } catch (const Error& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find("d.jsonl:3: "), std::string::npos) << msg;
            EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
        }
        train::DataReport rep;
        const auto d = train::parse_train_data(text, "d.jsonl", bytes, 16, true, &rep);
        EXPECT_EQ(d.size(), 3u);
        EXPECT_EQ(rep.skipped, 1);
        ASSERT_EQ(rep.problems.size(), 1u);
        EXPECT_NE(rep.problems[0].find("d.jsonl:3: "), std::string::npos);
    }
}

std::string slurp(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

int run_elastic(const std::string& args, const std::string& err) {
    const std::string cmd = std::string(ELASTIC_BINARY_DIR) + "/bin/elastic " + args + " >/dev/null 2>" + err;
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// `elastic train-router` end to end on the real model (skipped without it): a run split with
// --stop-at and continued with --resume writes the same file as one run; a bad line is one error
// line naming it.
TEST(TrainerCli, SmolLM2SplitRunMatchesOneRun) {
    const std::string model = test::default_model_path();
    if (!test::file_exists(model)) GTEST_SKIP() << "no " << model << " (make model)";
    const std::string dir = temp_dir(), data = dir + "/data.jsonl";
    {
        std::ofstream f(data);
        const char* words[] = {"alpha", "beta", "gamma", "delta", "river", "stone", "paper", "light"};
        for (int i = 0; i < 4; ++i) {
            std::string p;
            for (int w = 0; w < 40; ++w) p += std::string(words[(w * (i + 3)) % 8]) + " ";
            f << R"({"prompt": ")" << p << R"(", "answer": "the end of sample )" << i << R"(", "task": "t", "category": ")"
              << (i % 2 ? "robust" : "sensitive") << R"("})" << "\n";
        }
    }
    const std::string common = "-m " + model + " --data " + data + " --steps 4 --batch 1 --sink 8 --local 16 -t 1 --seed 3";
    ASSERT_EQ(0, run_elastic("train-router " + common + " -o " + dir + "/one.safetensors", dir + "/err1")) << slurp(dir + "/err1");
    ASSERT_EQ(0, run_elastic("train-router " + common + " --stop-at 2 --checkpoint-dir " + dir + "/ck -o " + dir + "/half.safetensors",
                             dir + "/err2")) << slurp(dir + "/err2");
    ASSERT_EQ(0, run_elastic("train-router " + common + " --resume " + dir + "/ck -o " + dir + "/two.safetensors", dir + "/err3"))
        << slurp(dir + "/err3");
    const std::string one = slurp(dir + "/one.safetensors"), two = slurp(dir + "/two.safetensors");
    ASSERT_FALSE(one.empty());
    EXPECT_TRUE(one == two) << "split run differs from one run";
    EXPECT_FALSE(one == slurp(dir + "/half.safetensors"));
    const Router r = Router::load(dir + "/one.safetensors", 30, 64);
    EXPECT_EQ(r.n_layer(), 30);

    // export: the checkpoint (now at step 4) as a router file: the same weights as the run's
    // output in f32, their bf16 rounding in bf16, with the run's metadata; a missing state.json
    // is one clear error.
    for (const char* dt : {"f32", "bf16"}) {
        const std::string out = dir + "/export-" + dt + ".safetensors";
        ASSERT_EQ(0, run_elastic("train-router export " + dir + "/ck -m " + model + " --data " + data + " --dtype " + dt +
                                     " -o " + out,
                                 dir + "/err5"))
            << slurp(dir + "/err5");
        const std::string bytes = slurp(out);
        EXPECT_NE(bytes.find(R"("steps":"4")"), std::string::npos);
        EXPECT_NE(bytes.find(R"("config":"fa-ssa")"), std::string::npos);
        EXPECT_NE(bytes.find(R"("data_fnv1a64")"), std::string::npos);
        const Router e = Router::load(out, 30, 64);
        for (int l : {0, 29}) {
            const std::vector<float>& a = r.layer(l).rh2.w;
            const std::vector<float>& b = e.layer(l).rh2.w;
            ASSERT_EQ(a.size(), b.size());
            for (size_t i = 0; i < a.size(); ++i)
                ASSERT_EQ(b[i], std::string(dt) == "f32" ? a[i] : test::round_bf16(a[i])) << "layer " << l << " element " << i;
        }
    }
    // A router file written by -o, in bf16: its weights rounded, its metadata kept.
    {
        const std::string out = dir + "/file-bf16.safetensors";
        ASSERT_EQ(0, run_elastic("train-router export " + dir + "/one.safetensors -m " + model + " --dtype bf16 -o " + out,
                                 dir + "/err7"))
            << slurp(dir + "/err7");
        const std::string bytes = slurp(out);
        EXPECT_NE(bytes.find(R"("steps":"4")"), std::string::npos);
        EXPECT_NE(bytes.find(R"("exported_from":"one.safetensors")"), std::string::npos);
        const Router e = Router::load(out, 30, 64);
        const std::vector<float>& a = r.layer(7).rh0.w;
        const std::vector<float>& b = e.layer(7).rh0.w;
        ASSERT_EQ(a.size(), b.size());
        for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(b[i], test::round_bf16(a[i])) << "element " << i;
        // A safetensors file that is not a router of train-router: one clear error.
        const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
        {
            std::ofstream f(dir + "/other.safetensors", std::ios::binary);
            const uint64_t n = header.size();
            f.write(reinterpret_cast<const char*>(&n), 8);
            f << header << std::string(4, '\0');
        }
        EXPECT_EQ(1, run_elastic("train-router export " + dir + "/other.safetensors -m " + model + " -o " + dir + "/y.safetensors",
                                 dir + "/err8"));
        EXPECT_NE(slurp(dir + "/err8").find("not a router file"), std::string::npos) << slurp(dir + "/err8");
    }
    EXPECT_EQ(1, run_elastic("train-router export " + dir + " -m " + model + " -o " + dir + "/x.safetensors", dir + "/err6"));
    EXPECT_NE(slurp(dir + "/err6").find("state.json not found"), std::string::npos) << slurp(dir + "/err6");

    std::ofstream(data, std::ios::app) << R"({"prompt": "x"})" << "\n";
    EXPECT_EQ(1, run_elastic("train-router " + common + " -o " + dir + "/bad.safetensors", dir + "/err4"));
    const std::string err = slurp(dir + "/err4");
    EXPECT_NE(err.find("data.jsonl:5: missing field 'answer'"), std::string::npos) << err;
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace elastic

namespace elastic {
namespace {

// A random tiny Qwen3 with the real tokenizer at DIR/m and a mix built for it at DIR/data.jsonl.
void tiny_model_and_data(const std::string& d, int tokens, int max_seq, int min_seq) {
    ASSERT_EQ(run_elastic("random-model --arch tiny-qwen3 --tokenizer " + test::source_path("../shared/fixtures/tokenizers/qwen3") +
                              " -o " + d + "/m",
                          d + "/err"),
              0)
        << slurp(d + "/err");
    ASSERT_EQ(run_elastic("data build --out " + d + "/data.jsonl --tokens " + std::to_string(tokens) + " --max-seq " +
                              std::to_string(max_seq) + " --min-seq " + std::to_string(min_seq) + " --seed 0 -m " + d + "/m",
                          d + "/err"),
              0)
        << slurp(d + "/err");
}

// The warm start from the CLI: a static plan from a head-score file, the fit's report, the record
// in the output's metadata; a missing score file is one clear error.
TEST(TrainerCli, FitStaticWarmStart) {
    const std::string d = temp_dir();
    ASSERT_NO_FATAL_FAILURE(tiny_model_and_data(d, 3000, 256, 128));
    const std::unique_ptr<Model> m = Model::load(d + "/m");
    const int L = m->config.n_layer, H = m->config.n_kv_head;
    {
        std::ofstream f(d + "/scores.json");
        nlohmann::json sc = nlohmann::json::array();
        for (int l = 0; l < L; ++l) {
            nlohmann::json row = nlohmann::json::array();
            for (int h = 0; h < H; ++h) row.push_back(double(l * H + h));
            sc.push_back(row);
        }
        f << nlohmann::json{{"scores", sc}}.dump();
    }
    const std::string base = "train-router -m " + d + "/m --data " + d + "/data.jsonl --config fa-ssa --steps 1 --batch 1 " +
                             "--max-seq 256 --sink 4 --local 16 -t 1 -o " + d + "/r.safetensors ";
    ASSERT_EQ(run_elastic(base + "--standardize 3 --fit-static " + d + "/scores.json --fit-msr 0.5 --fit-samples 4", d + "/err"), 0)
        << slurp(d + "/err");
    const std::string err = slurp(d + "/err");
    EXPECT_NE(err.find("standardised the routers' input over 4 samples"), std::string::npos) << err;
    EXPECT_NE(err.find("router inputs 4/4 samples"), std::string::npos) << err;  // the progress line (not a tty)
    EXPECT_NE(err.find("decisions agree on 100.0 % of heads"), std::string::npos) << err;
    const auto out = SafetensorsFile::open(d + "/r.safetensors");
    EXPECT_EQ(out->metadata().at("standardize"), "4");
    EXPECT_NE(out->metadata().at("fit").find("static:scores.json --msr 0.5"), std::string::npos) << out->metadata().at("fit");
    // Per category, with targets graded by rank: the report names both plans and the temperature.
    ASSERT_EQ(run_elastic(base + "--standardize 3 --fit-static " + d + "/scores.json --fit-msr 0.25 --fit-msr-robust 0.75 " +
                              "--fit-temp 0.1 --fit-iters 600 --fit-samples 4",
                          d + "/err"),
              0)
        << slurp(d + "/err");
    const std::string err3 = slurp(d + "/err");
    EXPECT_NE(err3.find("at Ω_MSR 0.25 (sensitive, "), std::string::npos) << err3;
    EXPECT_NE(err3.find("and 0.75 (robust, "), std::string::npos) << err3;
    EXPECT_NE(err3.find("targets graded by rank (temperature 0.1)"), std::string::npos) << err3;
    EXPECT_NE(SafetensorsFile::open(d + "/r.safetensors")->metadata().at("fit").find("(robust), rank temperature 0.1"),
              std::string::npos);
    // --fit-log: the fit's curve, one line per iteration and the end, drawn by `train-router plot`.
    ASSERT_EQ(run_elastic(base + "--fit-static " + d + "/scores.json --fit-msr 0.25 --fit-msr-robust 0.75 --fit-iters 20 " +
                              "--fit-samples 4 --fit-log " + d + "/fit.jsonl",
                          d + "/err"),
              0)
        << slurp(d + "/err");
    {
        std::ifstream f(d + "/fit.jsonl");
        std::vector<nlohmann::json> lines;
        for (std::string line; std::getline(f, line);) lines.push_back(nlohmann::json::parse(line));
        ASSERT_EQ(lines.size(), 21u);
        EXPECT_EQ(lines.back()["step"], 20);
        EXPECT_DOUBLE_EQ(lines.back()["target"]["sensitive"].get<double>(), 0.25);
        EXPECT_DOUBLE_EQ(lines.back()["target"]["robust"].get<double>(), 0.75);
        EXPECT_TRUE(lines.back()["agreement"]["robust"].is_number());
        EXPECT_LT(lines.back()["fit_loss"].get<double>(), lines.front()["fit_loss"].get<double>());
    }
#ifdef ELASTIC_HAVE_CAIRO
    EXPECT_EQ(run_elastic("train-router plot " + d + "/fit.jsonl --png " + d + "/fit.png", d + "/err"), 0) << slurp(d + "/err");
#endif
    EXPECT_EQ(run_elastic(base + "--fit-msr-robust 0.9", d + "/err"), 1);
    EXPECT_NE(slurp(d + "/err").find("--fit-msr-robust needs --fit-static"), std::string::npos) << slurp(d + "/err");
    EXPECT_EQ(run_elastic(base + "--fit-static " + d + "/missing.json", d + "/err"), 1);
    const std::string e2 = slurp(d + "/err");
    EXPECT_NE(e2.find("missing.json"), std::string::npos) << e2;
    EXPECT_EQ(std::count(e2.begin(), e2.end(), '\n'), 1) << e2;
    std::filesystem::remove_all(d);
}

// `train-router --ranks N` (data parallel in one process, one backend per rank): the same losses,
// Ω and λ as one rank, step by step, on a tiny random Qwen3 with the real tokenizer; a process
// that a launcher started as one rank of several is told what is missing, in one line.
TEST(TrainerCli, RanksMatchOneRank) {
    const std::string d = temp_dir();
    ASSERT_NO_FATAL_FAILURE(tiny_model_and_data(d, 6000, 384, 128));
    std::vector<std::vector<nlohmann::json>> logs;
    for (int ranks : {1, 3}) {
        const std::string log = d + "/log-" + std::to_string(ranks) + ".jsonl";
        ASSERT_EQ(run_elastic("train-router -m " + d + "/m --data " + d + "/data.jsonl --config fa-ssa --steps 3 --batch 5 " +
                                  "--max-seq 384 --sink 4 --local 16 --gumbel --lambda-init 0.5 --ranks " + std::to_string(ranks) +
                                  " -t 1 -o " + d + "/r.safetensors --log " + log,
                              d + "/err"),
                  0)
            << slurp(d + "/err");
        std::ifstream f(log);
        std::vector<nlohmann::json> lines;
        for (std::string line; std::getline(f, line);) lines.push_back(nlohmann::json::parse(line));
        logs.push_back(lines);
    }
    ASSERT_EQ(logs[0].size(), 3u);
    ASSERT_EQ(logs[1].size(), 3u);
    for (size_t k = 0; k < 3; ++k) {
        for (const char* key : {"lm_loss", "reg_loss", "tokens"}) EXPECT_EQ(logs[1][k][key], logs[0][k][key]) << key << " step " << k + 1;
        for (const char* key : {"omega", "lambda1", "lambda2"})
            for (const char* cat : {"sensitive", "robust"})
                EXPECT_NEAR(logs[1][k][key][cat].get<double>(), logs[0][k][key][cat].get<double>(), 1e-12) << key << " step " << k + 1;
        EXPECT_NEAR(logs[1][k]["grad_norm"].get<double>(), logs[0][k]["grad_norm"].get<double>(), 1e-6);
    }
    EXPECT_EQ(run_elastic("train-router -m " + d + "/m --data " + d + "/data.jsonl --steps 1 -o " + d + "/x.safetensors --ranks 2 --batch 1",
                          d + "/err"),
              1);
    EXPECT_NE(slurp(d + "/err").find("--ranks must be between 1 and --batch"), std::string::npos) << slurp(d + "/err");
    EXPECT_EQ(run_elastic("train-router -m " + d + "/m --data " + d + "/data.jsonl --steps 1 -o " + d + "/x.safetensors",
                          d + "/err2"),
              0);  // (no launcher variables here: one rank)
    setenv("RANK", "1", 1);
    setenv("WORLD_SIZE", "2", 1);
    EXPECT_EQ(run_elastic("train-router -m " + d + "/m --data " + d + "/data.jsonl --steps 1 -o " + d + "/x.safetensors",
                          d + "/err2"),
              1);
    unsetenv("RANK");
    unsetenv("WORLD_SIZE");
    const std::string e2 = slurp(d + "/err2");
    EXPECT_NE(e2.find("rank 1 of 2 (torchrun)"), std::string::npos) << e2;
    EXPECT_EQ(std::count(e2.begin(), e2.end(), '\n'), 1) << e2;
    std::filesystem::remove_all(d);
}

}  // namespace
}  // namespace elastic
