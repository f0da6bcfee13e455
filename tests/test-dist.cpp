// src/dist: tensor-parallel head placement (placement.h), the fp32 all-reduce of LocalGroup and
// the tensor-parallel forward (tensor-parallel.h) against the single-process Session. Data-parallel
// training is tested in test-trainer.cpp (TrainerRun.DataParallelMatchesOneRank, TrainerCli.Ranks*).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <thread>

#include "core/error.h"
#include "cpu/ops.h"
#include "dist/comm.h"
#include "dist/placement.h"
#include "dist/tensor-parallel.h"
#include "model/random-model.h"
#include "test-helpers.h"
#include "tiny-model.h"
#include "train/router-init.h"
#ifdef ELASTIC_HAVE_NCCL
#include "dist/nccl-comm.h"
#endif

namespace elastic::dist {
namespace {

using test::close_enough;

// The best placement by brute force, for small layers.
double optimum(const std::vector<double>& cost, int ranks) {
    const size_t n = cost.size();
    size_t total = 1;
    for (size_t i = 0; i < n; ++i) total *= size_t(ranks);
    double best = 1e300;
    std::vector<int> r(n);
    for (size_t code = 0; code < total; ++code) {
        size_t c = code;
        for (size_t i = 0; i < n; ++i, c /= size_t(ranks)) r[i] = int(c % size_t(ranks));
        best = std::min(best, max_rank_cost(cost, r, ranks));
    }
    return best;
}

TEST(HeadPlacement, ContiguousAndBalanced) {
    EXPECT_EQ(place_contiguous(8, 4), (std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3}));
    EXPECT_EQ(place_contiguous(3, 2), (std::vector<int>{0, 0, 1}));
    // Two FA heads side by side: the contiguous split puts both on rank 0.
    const std::vector<double> c = head_costs({0, 0, 0.97, 0.97, 0.97, 0.97, 0.97, 0.97}, 1000);
    EXPECT_DOUBLE_EQ(c[0], 1000.0 * 1001 / 2);
    const auto bal = place_balanced(c, 4);
    EXPECT_NE(bal[0], bal[1]);
    EXPECT_LT(max_rank_cost(c, bal, 4), 0.6 * max_rank_cost(c, place_contiguous(8, 4), 4));
    EXPECT_DOUBLE_EQ(max_rank_cost(c, bal, 4), optimum(c, 4));
}

// Longest-first stays within 4/3 of the best placement on random layers of 8 heads (Graham's bound).
TEST(HeadPlacement, WithinFourThirdsOfTheOptimum) {
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int trial = 0; trial < 200; ++trial) {
        std::vector<double> cost(8);
        for (double& x : cost) x = u(rng) < 0.3 ? 1.0 : 0.03 + 0.02 * u(rng);  // FA or streaming at long T
        for (int ranks : {2, 4}) {
            const double opt = optimum(cost, ranks), lpt = max_rank_cost(cost, place_balanced(cost, ranks), ranks);
            EXPECT_LE(lpt, opt * 4.0 / 3.0 + 1e-12);
            EXPECT_LE(lpt, max_rank_cost(cost, place_contiguous(8, ranks), ranks) + 1e-12);
        }
    }
}

// Renaming a layer's ranks keeps its slowest rank and evens the totals over layers: with one head
// per rank, longest-first alone would give every layer's FA head to rank 0.
TEST(HeadPlacement, SpreadOverLayersEvensTheTotals) {
    std::vector<double> totals(3, 0.0), lpt_only(3, 0.0);
    for (int l = 0; l < 3; ++l) {
        const std::vector<double> c = {l == 1 ? 10.0 : 1.0, l == 1 ? 1.0 : 10.0, 1.0};
        const std::vector<int> lpt = place_balanced(c, 3), r = spread_over_layers(c, lpt, totals);
        EXPECT_DOUBLE_EQ(max_rank_cost(c, r, 3), max_rank_cost(c, lpt, 3));
        for (size_t h = 0; h < 3; ++h) lpt_only[size_t(lpt[h])] += c[h];
    }
    EXPECT_EQ(totals, (std::vector<double>{12, 12, 12}));
    EXPECT_EQ(lpt_only, (std::vector<double>{30, 3, 3}));
}

// The figures for docs/performance.md: a Qwen3-8B-shaped plan (36 layers x 8 KV heads) at 32K and
// 128K with Ω_MSR 0.75 routed at random (2 FA heads per layer on average), streaming heads at sink
// 128 + local 2048. Per placement: the sum over layers of the slowest rank's attended pairs over an
// even split (each layer waits for its slowest rank: the time), and the largest rank's total over
// the mean (its share of the work and of the KV cache).
TEST(HeadPlacement, QwenShapedPlanAt32KAnd128K) {
    const StreamingWindow win{128, 2048};
    for (int64_t T : {int64_t(32768), int64_t(131072)}) {
        for (int ranks : {2, 4, 8}) {
            std::mt19937_64 rng(7);
            double contiguous = 0, balanced = 0, ideal = 0;
            std::vector<double> tot_c(size_t(ranks), 0.0), tot_b(size_t(ranks), 0.0), tot_lpt(size_t(ranks), 0.0);
            for (int l = 0; l < 36; ++l) {
                std::vector<HeadMode> modes(8);
                for (HeadMode& m : modes) m = std::uniform_real_distribution<double>(0, 1)(rng) < 0.25 ? HeadMode::FA : HeadMode::SSA;
                const std::vector<double> c = mode_costs(modes, win, T);
                double total = 0;
                for (double x : c) total += x;
                ideal += total / ranks;
                const std::vector<int> rc = place_contiguous(8, ranks), lpt = place_balanced(c, ranks);
                const std::vector<int> rb = spread_over_layers(c, lpt, tot_b);
                contiguous += max_rank_cost(c, rc, ranks);
                balanced += max_rank_cost(c, rb, ranks);
                EXPECT_DOUBLE_EQ(max_rank_cost(c, rb, ranks), max_rank_cost(c, lpt, ranks));
                for (size_t h = 0; h < 8; ++h) tot_c[size_t(rc[h])] += c[h], tot_lpt[size_t(lpt[h])] += c[h];
            }
            auto max_over_mean = [&](const std::vector<double>& t) {
                double sum = 0;
                for (double x : t) sum += x;
                return *std::max_element(t.begin(), t.end()) / (sum / ranks);
            };
            std::printf("%lldK, Ω 0.75, %d ranks: slowest rank per layer / even split: contiguous %.2f, balanced %.2f; "
                        "largest rank total / mean: contiguous %.2f, balanced %.2f (longest-first alone %.2f)\n",
                        (long long)(T / 1024), ranks, contiguous / ideal, balanced / ideal, max_over_mean(tot_c),
                        max_over_mean(tot_b), max_over_mean(tot_lpt));
            EXPECT_LE(balanced, contiguous);
            EXPECT_LE(max_over_mean(tot_b), max_over_mean(tot_lpt) + 1e-12);
            if (ranks == 4) {
                EXPECT_LT(balanced, 0.8 * contiguous);
            }
        }
    }
}

// ---- The fp32 all-reduce ----

// Every rank gets the rank-order sum, bit for bit; fp64 and fp32 collectives interleave.
TEST(LocalGroup, FloatAllReduceIsTheRankOrderSumOnEveryRank) {
    const int N = 3;
    const size_t n = 1000;
    LocalGroup g(N);
    std::vector<std::vector<float>> x(N);
    std::mt19937_64 rng(11);
    for (auto& v : x) v = test::randn(n, rng);
    std::vector<float> want(n, 0.0f);
    for (int r = 0; r < N; ++r)
        for (size_t i = 0; i < n; ++i) want[i] += x[size_t(r)][i];
    std::vector<std::vector<float>> got = x;
    std::vector<double> d(N);
    std::vector<std::thread> ts;
    for (int r = 0; r < N; ++r)
        ts.emplace_back([&, r] {
            auto c = g.rank(r);
            c->all_reduce_sum(got[size_t(r)].data(), n);
            double v = r + 1;
            c->all_reduce_sum(&v, 1);
            d[size_t(r)] = v;
        });
    for (auto& t : ts) t.join();
    for (int r = 0; r < N; ++r) {
        EXPECT_EQ(got[size_t(r)], want) << "rank " << r;
        EXPECT_EQ(d[size_t(r)], 6.0);
    }
}

// A rank that fails calls abort(): the ranks waiting in a collective get an error, not a hang.
TEST(LocalGroup, AbortWakesTheWaitingRanks) {
    LocalGroup g(3);
    std::vector<std::string> errors(2);
    std::vector<std::thread> ts;
    for (int r = 0; r < 2; ++r)
        ts.emplace_back([&, r] {
            auto c = g.rank(r);
            float x = 1;
            try {
                c->all_reduce_sum(&x, 1);
            } catch (const Error& e) {
                errors[size_t(r)] = e.what();
            }
        });
    g.abort();  // rank 2 never comes
    for (auto& t : ts) t.join();
    for (const std::string& e : errors) EXPECT_NE(e.find("another rank of the group failed"), std::string::npos) << e;
    auto c = g.rank(2);
    EXPECT_THROW(c->barrier(), Error);
}

// ---- Weight slices ----

// Products with row and column slices equal the matching part of the whole product, to the last
// bit where the stored type is kept (the same per-block terms); an fp32 copy where the columns
// cut through blocks.
TEST(TensorParallel, WeightSlicesGiveTheSameProducts) {
    std::mt19937_64 rng(3);
    for (DType t : {DType::F32, DType::BF16, DType::Q4_1, DType::Q4_K}) {
        SCOPED_TRACE(dtype_name(t));
        std::vector<uint8_t> store;
        const int64_t rows = 96, cols = 512, T = 3;
        const Weight w = test::make_weight(t, rows, cols, rng, store);
        const std::vector<float> x = test::randn(size_t(T * cols), rng);
        std::vector<float> y(size_t(T * rows));
        cpu::matmul(w, x.data(), y.data(), T);
        // Rows 32..63: a view.
        const Weight wr = weight_rows(w, 32, 32);
        EXPECT_EQ(wr.data, w.row(32));
        std::vector<float> yr(size_t(T * 32));
        cpu::matmul(wr, x.data(), yr.data(), T);
        for (int64_t i = 0; i < T; ++i)
            for (int64_t r = 0; r < 32; ++r) EXPECT_EQ(yr[size_t(i * 32 + r)], y[size_t(i * rows + 32 + r)]);
        // Columns [256, 512) keep the type; the sum of two column halves is the whole product.
        const Weight a = weight_cols(w, 0, 256), b = weight_cols(w, 256, 256);
        EXPECT_EQ(b.type, t);
        std::vector<float> xa(size_t(T * 256)), xb(size_t(T * 256)), ya(size_t(T * rows)), yb(size_t(T * rows));
        for (int64_t i = 0; i < T; ++i) {
            std::copy_n(x.begin() + i * cols, 256, xa.begin() + i * 256);
            std::copy_n(x.begin() + i * cols + 256, 256, xb.begin() + i * 256);
        }
        {
            test::ScopedCpuKernels f32(CpuKernels::F32);  // fp32 activations: only the order of the sum differs
            cpu::matmul(w, x.data(), y.data(), T);
            cpu::matmul(a, xa.data(), ya.data(), T);
            cpu::matmul(b, xb.data(), yb.data(), T);
        }
        for (size_t i = 0; i < ya.size(); ++i) ya[i] += yb[i];
        EXPECT_TRUE(close_enough(ya, y, nullptr, 1e-5));
        // Columns [96, 192) fall inside a Q4_K block: an fp32 copy with the same values.
        const Weight c = weight_cols(w, 96, 96);
        EXPECT_EQ(c.type, t == DType::Q4_K ? DType::F32 : t);
        const std::vector<float> wf = weight_to_f32(w), cf = weight_to_f32(c);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t k = 0; k < 96; ++k) ASSERT_EQ(cf[size_t(r * 96 + k)], wf[size_t(r * cols + 96 + k)]);
    }
}

TEST(TensorParallel, PlacementNamesAndModeCosts) {
    EXPECT_EQ(parse_placement("balanced"), Placement::Balanced);
    EXPECT_EQ(parse_placement("contiguous"), Placement::Contiguous);
    try {
        parse_placement("round-robin");
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "unknown placement 'round-robin' (balanced or contiguous)");
    }
    const StreamingWindow win{4, 16};
    const std::vector<double> c = mode_costs({HeadMode::FA, HeadMode::SSA, HeadMode::XA}, win, 100);
    EXPECT_EQ(c[0], 5050.0);
    EXPECT_EQ(c[1], double(attended_pairs(HeadMode::SSA, win, nullptr, 64, 100)));
    EXPECT_EQ(c[2], 5050.0);  // XA: priced as FA until its owner chooses its blocks
}

// ---- The tensor-parallel forward against one process ----

// Prefill logits, then greedy decode steps: logits of every step and the chosen tokens.
struct Trace {
    std::vector<std::vector<float>> logits;
    std::vector<int32_t> tokens;
    AttentionStats stats;
};

int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

Trace run_single(const Model& m, const Router* router, const AttentionSpec& spec, const std::vector<int32_t>& prompt,
                 int n_decode) {
    auto be = make_cpu_backend(0);
    Engine e(m, *be, router);
    Session s(e, int64_t(prompt.size()) + n_decode, spec);
    Trace t;
    s.forward(prompt.data(), int64_t(prompt.size()));
    t.stats = s.stats();
    t.stats.kv_bytes = s.kv_bytes();
    t.logits.push_back(s.last_logits());
    for (int i = 0; i < n_decode; ++i) {
        t.tokens.push_back(argmax(s.last_logits()));
        s.forward(&t.tokens.back(), 1);
        t.logits.push_back(s.last_logits());
    }
    return t;
}

Trace run_tp(LocalTensorParallel& tp, const std::vector<int32_t>& prompt, int n_decode) {
    Trace t;
    tp.forward(prompt.data(), int64_t(prompt.size()));
    t.stats = tp.rank(0).stats();
    t.logits.push_back(tp.last_logits());
    for (int i = 0; i < n_decode; ++i) {
        t.tokens.push_back(argmax(tp.last_logits()));
        tp.forward(&t.tokens.back(), 1);
        t.logits.push_back(tp.last_logits());
    }
    return t;
}

// The tolerance. The ranks compute the same terms as one process (q, k, v from row slices of the
// same weights, each head's attention alone, the products' per-block terms unchanged); only the
// order of summation differs: wo's and w_down's dot products are cut into per-group / per-rank
// partial sums and added by the all-reduce, and decode's split-KV pieces follow the thread count.
// Each reordered fp32 sum of K terms moves by at most ~K·2^-24 of the sum of |terms| (a few 1e-6
// relative for K of 64..1536) and the layers pass it on without blowing up, so the logits agree to
// 2e-5 of their largest magnitude (measured: <= 4e-7 on the random model, <= 1.6e-6 on SmolLM2 over
// 30 layers; CONVENTIONS.md #5 says
// ~1e-5 for fp32). A real bug (a head missing, counted twice, a wrong wo column) moves them by O(1).
constexpr double kLogitTol = 2e-5;

// Runs one case on 1..4 ranks (and `more` ranks beyond the heads, if > 0), both placements, and
// compares everything with one process.
void check_case(const Model& m, const Router* router, const AttentionSpec& spec, const std::vector<int32_t>& prompt,
                int n_decode, std::vector<int> rank_counts) {
    const Trace want = run_single(m, router, spec, prompt, n_decode);
    const int H = m.config.n_kv_head;
    for (int N : rank_counts)
        for (Placement p : {Placement::Balanced, Placement::Contiguous}) {
            SCOPED_TRACE(std::string(spec.name) + ", " + std::to_string(N) + " ranks, " + placement_name(p));
            LocalTensorParallel tp(m, router, N, int64_t(prompt.size()) + n_decode, spec, p);
            const Trace got = run_tp(tp, prompt, n_decode);
            EXPECT_EQ(got.tokens, want.tokens);
            double worst = 0;
            for (size_t i = 0; i < want.logits.size(); ++i) {
                EXPECT_TRUE(close_enough(got.logits[i], want.logits[i], nullptr, kLogitTol)) << "step " << i;
                worst = std::max(worst, test::max_rel_err(got.logits[i], want.logits[i]));
            }
            std::printf("%s, %d ranks, %s: max |Δ logit| / max |logit| = %.2e\n", spec.name.c_str(), N,
                        placement_name(p), worst);
            // The same plan and statistics; the caches hold what one process's do, spread out.
            EXPECT_EQ(got.stats.modes, want.stats.modes);
            // The ranks project the router's keys from the 200 boundary rows alone, one process
            // from the whole prompt: the same values up to the GEMM's rounding.
            ASSERT_EQ(got.stats.prob_fa.size(), want.stats.prob_fa.size());
            for (size_t l = 0; l < want.stats.prob_fa.size(); ++l) {
                ASSERT_EQ(got.stats.prob_fa[l].size(), want.stats.prob_fa[l].size());
                for (size_t h = 0; h < want.stats.prob_fa[l].size(); ++h)
                    EXPECT_NEAR(got.stats.prob_fa[l][h], want.stats.prob_fa[l][h], 1e-5) << "layer " << l << " head " << h;
            }
            EXPECT_EQ(got.stats.pruned, want.stats.pruned);
            EXPECT_EQ(got.stats.omega_msr, want.stats.omega_msr);
            EXPECT_EQ(got.stats.kv_bytes, want.stats.kv_bytes);
            // Every rank holds the same placement, and a head's cache lives on its owner only.
            for (int r = 0; r < N; ++r) {
                EXPECT_EQ(tp.rank(r).rank_of(), tp.rank(0).rank_of());
                EXPECT_EQ(tp.rank(r).last_logits(), tp.last_logits());
            }
            std::vector<double> totals(size_t(N), 0.0);
            for (int l = 0; l < m.config.n_layer; ++l) {
                const std::vector<int>& own = tp.rank(0).rank_of()[size_t(l)];
                ASSERT_EQ(int(own.size()), H);
                const std::vector<double> cost = mode_costs(want.stats.modes[size_t(l)], spec.win, int64_t(prompt.size()));
                EXPECT_EQ(own, p == Placement::Balanced ? spread_over_layers(cost, place_balanced(cost, N), totals)
                                                        : place_contiguous(H, N));
            }
        }
}

// A random Qwen3-shaped model (q/k norms) with 8 query / 4 KV heads of 32 and 3 layers, written by
// the random-model generator once for the suite.
class TensorParallelModel : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new test::TmpDir;
        RandomModelSpec s;
        s.arch = "tiny-qwen3";
        s.layers = 3;
        s.vocab = 512;
        s.heads = 8;
        s.kv_heads = 4;
        s.seed = 5;
        s.tokenizer = test::write_byte_tokenizer(dir_->path / "tok");
        s.out = (dir_->path / "m").string();
        write_random_model(s);
        model_ = Model::load(s.out).release();
        router_ = new Router(train::router_init(3, 32, 9));
    }
    static void TearDownTestSuite() {
        delete router_;
        delete model_;
        delete dir_;
    }
    // 260 tokens: more than the router's two windows of 100, so the ranks' boundary-row keys are used.
    static std::vector<int32_t> prompt(size_t n = 260) {
        std::mt19937_64 rng(17);
        std::vector<int32_t> ids(n);
        for (int32_t& id : ids) id = int32_t(rng() % 256);
        return ids;
    }
    // Per layer l: heads `fa` of layer l FA, the others in `sparse`; a short window so SSA differs.
    static AttentionSpec forced(const std::string& name, HeadMode sparse, const std::function<bool(int, int)>& fa) {
        AttentionSpec s;
        s.kind = AttentionSpec::Kind::Static;
        s.sparse_mode = sparse;
        s.name = name;
        s.win = {4, 32};
        s.xa.block = 64;
        for (int l = 0; l < 3; ++l) {
            s.static_scores.emplace_back();
            for (int h = 0; h < 4; ++h) s.static_scores.back().push_back(fa(l, h) ? 1.0f : 0.0f);
        }
        return s;
    }
    static test::TmpDir* dir_;
    static Model* model_;
    static Router* router_;
};
test::TmpDir* TensorParallelModel::dir_ = nullptr;
Model* TensorParallelModel::model_ = nullptr;
Router* TensorParallelModel::router_ = nullptr;

TEST_F(TensorParallelModel, FullAttentionMatchesOneProcess) {
    AttentionSpec s;
    s.name = "full";
    check_case(*model_, nullptr, s, prompt(), 4, {1, 2, 3, 4, 6});  // 6 ranks: two hold no head
}

TEST_F(TensorParallelModel, MixedStreamingMatchesOneProcess) {
    check_case(*model_, nullptr, forced("fa-ssa (h + l even)", HeadMode::SSA, [](int l, int h) { return (l + h) % 2 == 0; }),
               prompt(), 4, {1, 2, 3, 4});
}

// Two FA heads side by side in every layer (the contiguous split puts them on one rank), the others
// XAttention: unequal heads, and XA block lists chosen on the rank that owns the head.
TEST_F(TensorParallelModel, UnequalHeadsWithXAttentionMatchOneProcess) {
    check_case(*model_, nullptr, forced("fa-xa (adjacent FA)", HeadMode::XA, [](int l, int h) { return h / 2 == l % 2; }),
               prompt(), 4, {1, 2, 3, 4, 5});
}

// The router runs on every rank (msr:0.5 of a random router: half the heads of the model stream).
TEST_F(TensorParallelModel, RoutedMatchesOneProcess) {
    AttentionSpec s = AttentionSpec::parse("msr:0.5");
    s.win = {4, 32};
    check_case(*model_, router_, s, prompt(), 4, {1, 2, 3, 4});
    check_case(*model_, router_, s, prompt(150), 2, {2, 3});  // a prompt shorter than the two windows
}

// Balanced placement never leaves a layer's slowest rank with more attended pairs than the
// contiguous split, and here (FA heads side by side) clearly fewer.
TEST_F(TensorParallelModel, BalancedPlacementSplitsTheLoadBetter) {
    const AttentionSpec s = forced("fa-ssa (adjacent FA)", HeadMode::SSA, [](int l, int h) { return h / 2 == l % 2; });
    const std::vector<int32_t> ids = prompt();
    for (int N : {2, 3, 4}) {
        double worst[2] = {0, 0}, total[2] = {0, 0};
        for (Placement p : {Placement::Balanced, Placement::Contiguous}) {
            LocalTensorParallel tp(*model_, nullptr, N, int64_t(ids.size()), s, p);
            tp.forward(ids.data(), int64_t(ids.size()));
            for (int l = 0; l < 3; ++l) {
                double mx = 0;
                for (int r = 0; r < N; ++r) {
                    const double x = tp.rank(r).load().pairs[size_t(l)];
                    mx = std::max(mx, x);
                    total[int(p)] += x;
                }
                worst[int(p)] += mx;
            }
        }
        const int B = int(Placement::Balanced), C = int(Placement::Contiguous);
        const double mean = total[B] / N;
        std::printf("%d ranks: slowest rank / mean (summed over layers): balanced %.2f, contiguous %.2f\n", N,
                    worst[B] / mean, worst[C] / mean);
        EXPECT_EQ(total[B], total[C]);  // the same work, placed differently
        EXPECT_LE(worst[B], worst[C]);
        if (N == 2) {
            EXPECT_LT(worst[B], 0.8 * worst[C]);
        }
    }
}

// Mistakes are one clear error; a bad token leaves the group usable.
TEST_F(TensorParallelModel, MistakesAreClearErrors) {
    auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
        try {
            f();
            ADD_FAILURE() << "no error; wanted '" << needle << "'";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_error([&] { LocalTensorParallel tp(*model_, nullptr, 0, 16); }, "at least one rank");
    expect_error([&] { LocalTensorParallel tp(*model_, nullptr, 129, 16); }, "cannot be split over 129 ranks");
    expect_error([&] { LocalTensorParallel tp(*model_, nullptr, 2, 16, AttentionSpec::parse("msr:0.5")); }, "needs a router");
    LocalTensorParallel tp(*model_, nullptr, 2, 16);
    const int32_t bad[2] = {1, 600};
    expect_error([&] { tp.forward(bad, 2); }, "token id 600 is outside the vocabulary (512)");
    const std::vector<int32_t> ids = prompt(17);
    expect_error([&] { tp.forward(ids.data(), 17); }, "17 tokens exceed the session's context of 16");
    tp.forward(ids.data(), 16);
    for (float x : tp.last_logits()) ASSERT_TRUE(std::isfinite(x));
}

// The real SmolLM2-135M (9 query / 3 KV heads of 64, Q4_1) with its trained fa-ssa router: 3 ranks
// hold one KV head each, 2 and 4 split unevenly. Skipped when the model is absent.
TEST(TensorParallelSmolLM2, RoutedMatchesOneProcess) {
    const std::string path = test::default_model_path();
    const std::string router_path = test::source_path("routers/smollm2-135m-fa-ssa.safetensors");
    if (!test::file_exists(path)) GTEST_SKIP() << "no model at " << path << " (make model)";
    if (!test::file_exists(router_path)) GTEST_SKIP() << "no router at " << router_path;
    auto m = Model::load(path);
    const Router router = Router::load(router_path, m->config.n_layer, m->config.head_dim);
    std::string text;
    while (text.size() < 1600) text += "The tensor-parallel forward splits the heads of every layer over the ranks. ";
    std::vector<int32_t> ids = m->tok().encode(text, false);
    ids.resize(300);
    AttentionSpec s = AttentionSpec::parse("fa-ssa");
    s.win = {16, 64};  // short enough that streaming heads differ from full ones at 300 tokens
    // Decode's products with Q4_1 weights quantise their activations to int8 in blocks of 32
    // (formats/quants.h): a rounding-level difference in the residual stream can move a value across
    // a step of that grid (~1 % of its block's largest value), so the two paths would differ by the
    // int8 rounding itself (~1e-2 of the logits), not by their summation order. Compared with fp32
    // activations, as the other equivalence tests of decode paths are.
    test::ScopedCpuKernels f32(CpuKernels::F32);
    check_case(*m, &router, s, ids, 4, {1, 2, 3, 4});
}

#ifdef ELASTIC_HAVE_NCCL
// NcclCommunicator with one rank per GPU of this machine (threads of this process): sums of host
// buffers (the trainer's) and of device buffers (the tensor-parallel forward's), NVLink multicast
// off. Skipped with fewer than two GPUs.
TEST(NcclCommunicator, AllReduceOnEveryGpu) {
    const int N = cuda_device_count();
    if (N < 2) GTEST_SKIP() << N << " GPU(s): NCCL needs two";
    const std::string id = nccl_unique_id();
    const size_t n = 4099;
    const size_t ranks = static_cast<size_t>(N);
    std::vector<std::vector<float>> host(ranks), dev(ranks);
    std::vector<double> dsum(ranks);
    std::vector<std::string> errors(ranks);
    std::vector<std::thread> ts;
    for (int r = 0; r < N; ++r)
        ts.emplace_back([&, r] {
            try {
                NcclCommunicator c(r, N, id, r);
                auto be = make_cuda_backend(r, DType::F32);
                std::vector<float>& h = host[size_t(r)];
                h.assign(n, float(r + 1));
                c.all_reduce_sum(h.data(), n);
                double d = 0.5 * (r + 1);
                c.all_reduce_sum(&d, 1);
                dsum[size_t(r)] = d;
                Buf b = be->alloc(n, DType::F32);
                std::vector<float> x(n);
                for (size_t i = 0; i < n; ++i) x[i] = float(i % 7) * float(r + 1);
                be->upload(b, x.data(), n);
                c.all_reduce_sum(b.f32(), n);
                dev[size_t(r)].resize(n);
                be->download(dev[size_t(r)].data(), b, n);
                be->release(b);
                c.barrier();
            } catch (const std::exception& e) {
                errors[size_t(r)] = e.what();
            }
        });
    for (auto& t : ts) t.join();
    const float tri = float(N * (N + 1) / 2);
    for (int r = 0; r < N; ++r) {
        ASSERT_EQ(errors[size_t(r)], "") << "rank " << r;
        EXPECT_EQ(host[size_t(r)], std::vector<float>(n, tri));
        EXPECT_EQ(dsum[size_t(r)], 0.5 * tri);
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(dev[size_t(r)][i], float(i % 7) * tri);
    }
    EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "0");
}
#endif

}  // namespace
}  // namespace elastic::dist
