// Op tests of the elastic attention, CPU: hybrid prefill against the plan_allows() reference,
// XAttention estimation against its naive loops, and per-head KV cache + decode against masked
// attention over a full cache. Fresh random inputs (seed in the trace), outputs poisoned with NaN,
// fp32 tolerance 2e-5 relative to the largest reference magnitude, worst element reported.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "cpu/attention.h"
#include "cpu/softmax.h"
#include "test-helpers.h"

extern "C" void openblas_set_num_threads(int);

using namespace elastic;
using namespace elastic::cpu;
using namespace elastic::test;

namespace {

constexpr double kTol = 2e-5;

struct Shape {
    int n_head, n_kv, hd;
};

std::string describe(const std::vector<float>& got, const std::vector<float>& ref, size_t worst, const Shape& s) {
    const size_t row = worst / size_t(s.n_head * s.hd), head = worst / size_t(s.hd) % size_t(s.n_head);
    return "worst element " + std::to_string(worst) + " (row " + std::to_string(row) + ", head " + std::to_string(head) +
           "): got " + std::to_string(got[worst]) + " want " + std::to_string(ref[worst]);
}

class HybridTest : public ::testing::Test {
protected:
    void SetUp() override { openblas_set_num_threads(1); }
};

}  // namespace

using HybridAttention = HybridTest;
using XAttention = HybridTest;
using KVCache = HybridTest;

TEST_F(HybridAttention, PrefillMatchesNaiveOnGrid) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const StreamingWindow win{16, 48};
    const Shape shapes[] = {{2, 2, 64}, {6, 2, 128}, {8, 2, 64}, {3, 3, 128}, {4, 1, 64}, {12, 2, 64}};
    // Fixed edge lengths (T = 1, T < sink, multiples of the tile / block and one past) plus two
    // fresh random lengths per run.
    std::vector<int64_t> Ts = {1, 7, 15, 64, 100, 129, 199, 300, 517};
    std::uniform_int_distribution<int64_t> rand_T(1, 700);
    Ts.push_back(rand_T(rng));
    Ts.push_back(rand_T(rng));
    enum Kind { AllFA, AllSSA, AllXAEstimated, AllXARandom, Mixed, NKinds };
    const char* kind_name[] = {"all-FA", "all-SSA", "all-XA(estimated)", "all-XA(random lists)", "mixed"};
    int n = 0;
    for (int kind = 0; kind < NKinds; ++kind)
        for (int64_t T : Ts) {
            const Shape s = shapes[size_t(n) % std::size(shapes)];
            const int64_t block = (n / 2) % 2 ? 128 : 64;
            ++n;
            std::vector<float> q = randn(size_t(T * s.n_head * s.hd), rng), k = randn(size_t(T * s.n_kv * s.hd), rng),
                               v = randn(size_t(T * s.n_kv * s.hd), rng);
            LayerPlan plan;
            plan.mode.assign(size_t(s.n_kv), HeadMode::FA);
            plan.xa.resize(size_t(s.n_kv));
            for (int g = 0; g < s.n_kv; ++g) {
                HeadMode m = kind == AllFA ? HeadMode::FA : kind == AllSSA ? HeadMode::SSA : HeadMode::XA;
                if (kind == Mixed) m = HeadMode((g + n) % 3);
                plan.mode[size_t(g)] = m;
                if (m == HeadMode::XA && kind != AllXAEstimated) plan.xa[size_t(g)] = random_blocks(T, block, 0.4, rng);
            }
            if (kind == AllXAEstimated || kind == Mixed) {
                XAParams xp;
                xp.block = block;
                if (kind == AllXAEstimated) xa_fill_plan(q.data(), k.data(), T, s.n_head, s.n_kv, s.hd, xp, plan);
            }
            const float scale = 1.0f / std::sqrt(float(s.hd));
            std::vector<float> ref(q.size()), out = poisoned(q.size());
            attn_hybrid_naive(q.data(), k.data(), v.data(), ref.data(), T, s.n_head, s.n_kv, s.hd, plan, win, block, scale);
            attn_hybrid_prefill(q.data(), k.data(), v.data(), out.data(), T, s.n_head, s.n_kv, s.hd, plan, win, block, scale);
            size_t worst = 0;
            const double err = max_rel_err(out, ref, &worst);
            EXPECT_LT(err, kTol) << kind_name[kind] << " T " << T << " heads " << s.n_head << "/" << s.n_kv << " d " << s.hd
                                 << " block " << block << ": " << describe(out, ref, worst, s);
            EXPECT_EQ(std::count_if(out.begin(), out.end(), [](float x) { return std::isnan(x); }), 0) << "unwritten outputs";
        }
}

TEST_F(HybridAttention, PrefillEdgeWindows) {
    // sink 0 / local 1 (the diagonal only), a window longer than the sequence, a sink longer than it.
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Shape s{4, 2, 64};
    for (StreamingWindow win : {StreamingWindow{0, 1}, StreamingWindow{3, 1000}, StreamingWindow{500, 8},
                                StreamingWindow{64, 64}, StreamingWindow{1, 300}})
        for (int64_t T : {1, 90, 333}) {
            std::vector<float> q = randn(size_t(T * s.n_head * s.hd), rng), k = randn(size_t(T * s.n_kv * s.hd), rng),
                               v = randn(size_t(T * s.n_kv * s.hd), rng);
            LayerPlan plan;
            plan.mode = {HeadMode::SSA, HeadMode::FA};
            std::vector<float> ref(q.size()), out = poisoned(q.size());
            attn_hybrid_naive(q.data(), k.data(), v.data(), ref.data(), T, s.n_head, s.n_kv, s.hd, plan, win, 64, 0.125f);
            attn_hybrid_prefill(q.data(), k.data(), v.data(), out.data(), T, s.n_head, s.n_kv, s.hd, plan, win, 64, 0.125f);
            size_t worst = 0;
            EXPECT_LT(max_rel_err(out, ref, &worst), kTol)
                << "sink " << win.sink << " local " << win.local << " T " << T << ": " << describe(out, ref, worst, s);
        }
}

TEST_F(HybridAttention, AttendedPairsCountsThePlan) {
    std::mt19937_64 rng(1);
    const StreamingWindow win{16, 48};
    for (int64_t T : {1, 15, 64, 200, 517}) {
        const int64_t block = 64;
        BlockList bl = random_blocks(T, block, 0.5, rng);
        for (HeadMode m : {HeadMode::FA, HeadMode::SSA, HeadMode::XA}) {
            int64_t n = 0;
            for (int64_t i = 0; i < T; ++i)
                for (int64_t j = 0; j <= i; ++j) n += plan_allows(m, win, &bl, block, i, j);
            EXPECT_EQ(attended_pairs(m, win, &bl, block, T), n) << head_mode_name(m) << " T " << T;
        }
    }
}

// Inputs with planted structure: every query block qb >= 2 of each KV head has one or two "hot"
// key blocks whose keys share an (exactly orthogonal) direction with its queries, so the hot blocks
// hold almost all of the softmax mass and the selection is far from any tie.
TEST_F(XAttention, EstimateMatchesNaiveWithPlantedBlocks) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    struct Case {
        Shape s;
        int64_t T, block, chunk_rows;
    };
    for (const Case& c : {Case{{4, 2, 64}, 1000, 64, 256}, Case{{3, 1, 64}, 1536, 64, 16384},
                          Case{{2, 2, 128}, 777, 128, 128}, Case{{6, 3, 64}, 2100, 128, 512}, Case{{1, 1, 64}, 40, 64, 64}}) {
        const Shape s = c.s;
        const int64_t T = c.T, nb = (T + c.block - 1) / c.block;
        ASSERT_LE(nb, s.hd) << "one orthogonal direction per query block";
        std::vector<float> q = randn(size_t(T * s.n_head * s.hd), rng), k = randn(size_t(T * s.n_kv * s.hd), rng);
        std::vector<std::vector<std::vector<int32_t>>> hot(size_t(s.n_kv), std::vector<std::vector<int32_t>>(size_t(nb)));
        const int group = s.n_head / s.n_kv;
        for (int g = 0; g < s.n_kv; ++g)
            for (int64_t qb = 2; qb < nb; ++qb) {
                const int n_hot = qb >= 3 && (rng() & 1) ? 2 : 1;
                std::vector<int32_t> cand;
                for (int32_t kb = 1; kb < qb; ++kb) cand.push_back(kb);
                std::shuffle(cand.begin(), cand.end(), rng);
                for (int x = 0; x < n_hot; ++x) {
                    const int32_t kb = cand[size_t(x)];
                    hot[size_t(g)][size_t(qb)].push_back(kb);
                    const float beta = x == 0 ? 8.0f : 7.6f;  // strided scores ~8 and ~7.6 (vs ~0 ± 0.25)
                    for (int64_t j = kb * c.block; j < std::min(T, (kb + 1) * c.block); ++j)
                        k[size_t((j * s.n_kv + g) * s.hd + qb)] += beta;
                }
                for (int64_t i = qb * c.block; i < std::min(T, (qb + 1) * c.block); ++i)
                    for (int hh = 0; hh < group; ++hh) q[size_t((i * s.n_head + g * group + hh) * s.hd + qb)] += 8.0f;
            }
        XAParams xp;
        xp.block = c.block;
        xp.chunk_rows = c.chunk_rows;
        for (int g = 0; g < s.n_kv; ++g) {
            const BlockList fast = xa_estimate_head(q.data(), k.data(), T, s.n_head, s.n_kv, s.hd, g, xp);
            const BlockList ref = xa_estimate_head_naive(q.data(), k.data(), T, s.n_head, s.n_kv, s.hd, g, xp);
            ASSERT_EQ(fast.offsets, ref.offsets) << "T " << T << " head " << g;
            ASSERT_EQ(fast.blocks, ref.blocks) << "T " << T << " head " << g;
            ASSERT_EQ(fast.n_query_blocks(), nb);
            // A last strided row cut by T sees only part of its antidiagonal (rows past T are zero),
            // which weakens the planted signal there: the planted expectation skips that block.
            const int64_t n_checked = T % xp.stride ? nb - 1 : nb;
            for (int64_t qb = 0; qb < n_checked; ++qb) {
                std::vector<int32_t> got(fast.blocks.begin() + fast.offsets[size_t(qb)],
                                         fast.blocks.begin() + fast.offsets[size_t(qb) + 1]);
                std::vector<int32_t> want = hot[size_t(g)][size_t(qb)];
                want.push_back(0);
                if (qb > 0) want.push_back(int32_t(qb));
                std::sort(want.begin(), want.end());
                EXPECT_EQ(got, want) << "T " << T << " head " << g << " query block " << qb << ": the planted blocks";
            }
        }
    }
}

TEST_F(XAttention, EstimateIsValidOnRandomInputs) {
    // Near-uniform scores: every list must still be ascending, hold 0 and the diagonal, and reach
    // the threshold; the naive version must agree on the list lengths' total within a block or two
    // (near-ties may resolve differently in fp32 and fp64).
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Shape s{4, 2, 64};
    const int64_t T = 1111;
    std::vector<float> q = randn(size_t(T * s.n_head * s.hd), rng, 2.0f), k = randn(size_t(T * s.n_kv * s.hd), rng, 2.0f);
    XAParams xp;
    xp.block = 64;
    for (int g = 0; g < s.n_kv; ++g) {
        const BlockList bl = xa_estimate_head(q.data(), k.data(), T, s.n_head, s.n_kv, s.hd, g, xp);
        const BlockList ref = xa_estimate_head_naive(q.data(), k.data(), T, s.n_head, s.n_kv, s.hd, g, xp);
        ASSERT_EQ(bl.n_query_blocks(), (T + 63) / 64);
        for (int64_t qb = 0; qb < bl.n_query_blocks(); ++qb) {
            auto b = bl.blocks.begin() + bl.offsets[size_t(qb)], e = bl.blocks.begin() + bl.offsets[size_t(qb) + 1];
            EXPECT_TRUE(std::is_sorted(b, e) && std::adjacent_find(b, e) == e);
            EXPECT_EQ(*b, 0);
            EXPECT_EQ(*(e - 1), qb);
        }
        EXPECT_NEAR(double(bl.blocks.size()), double(ref.blocks.size()), 2.0);
    }
}

TEST_F(KVCache, DecodeMatchesNaiveFullCache) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    struct Case {
        Shape s;
        int64_t T, steps;
        StreamingWindow win;
    };
    // One thread as well: then a head count of at least 4 × threads takes the path that does not
    // split heads into pieces (it once overflowed the piece end and read past the cache).
    const int threads0 = omp_get_max_threads();
    for (int threads : {threads0, 1})
    for (const Case& c : {Case{{6, 3, 64}, 150, 60, {16, 48}}, Case{{4, 4, 128}, 10, 70, {16, 48}},
                          Case{{8, 2, 64}, 1300, 5, {64, 700}}, Case{{3, 3, 64}, 1, 20, {0, 5}},
                          Case{{32, 8, 128}, 2100, 3, {128, 2048}}}) {
        omp_set_num_threads(threads);
        struct Restore {
            int n;
            ~Restore() { omp_set_num_threads(n); }
        } restore{threads0};
        const Shape s = c.s;
        const int64_t cap = c.T + c.steps, kvd = int64_t(s.n_kv) * s.hd;
        LayerPlan plan;
        for (int g = 0; g < s.n_kv; ++g) plan.mode.push_back(HeadMode(g % 3 == 0 ? 1 : g % 3 == 1 ? 0 : 2));  // SSA, FA, XA
        // The full K/V of the whole sequence (the naive reference's cache).
        std::vector<float> k = randn(size_t(cap * kvd), rng), v = randn(size_t(cap * kvd), rng);
        LayerKVCache cache;
        cache.init(plan, c.win, cap, s.n_kv, s.hd);
        cache.store_prefill(k.data(), v.data(), c.T);
        const float scale = 1.0f / std::sqrt(float(s.hd));
        double worst_err = 0;
        for (int64_t pos = c.T; pos < cap; ++pos) {
            cache.append(k.data() + pos * kvd, v.data() + pos * kvd, pos);
            std::vector<float> q = randn(size_t(s.n_head * s.hd), rng), ref(q.size()), out = poisoned(q.size());
            attn_decode_naive(q.data(), k.data(), v.data(), pos, ref.data(), s.n_head, s.n_kv, s.hd, plan, c.win, scale);
            attn_decode(q.data(), cache, pos, out.data(), s.n_head, scale);
            size_t worst = 0;
            const double err = max_rel_err(out, ref, &worst);
            worst_err = std::max(worst_err, err);
            ASSERT_LT(err, kTol) << "T " << c.T << " pos " << pos << " worst element " << worst << " got " << out[worst]
                                 << " want " << ref[worst];
        }
        // Expected bytes: FA/XA heads keep cap positions, SSA heads sink + local (clipped to cap).
        size_t want = 0;
        for (int g = 0; g < s.n_kv; ++g) {
            const int64_t slots = plan.mode[size_t(g)] == HeadMode::SSA
                                      ? std::min(c.win.sink, cap) + std::min(c.win.local, cap - std::min(c.win.sink, cap))
                                      : cap;
            want += size_t(2 * slots * s.hd) * sizeof(float);
        }
        EXPECT_EQ(cache.bytes(), want);
        const size_t full = size_t(2 * cap * kvd) * sizeof(float);
        std::printf("[ kv cache ] heads %d/%d d %d, %lld + %lld tokens, sink %lld local %lld: %zu bytes (full cache %zu, %.2fx), "
                    "max rel err %.2e\n",
                    s.n_head, s.n_kv, s.hd, (long long)c.T, (long long)c.steps, (long long)c.win.sink,
                    (long long)c.win.local, cache.bytes(), full, double(full) / double(cache.bytes()), worst_err);
    }
}

// The softmax's 2^x: accurate on [-126, 0], 0 for -inf, NaN and anything below -127 (never a shift
// of a negative exponent: undefined behaviour the sanitizer reported in the attention loop).
TEST(CpuAttention, Exp2NonPositiveEdgeCases) {
    for (float x : {0.0f, -0.25f, -1.0f, -10.5f, -100.0f, -126.0f})
        EXPECT_NEAR(cpu::exp2_nonpos(x) / std::exp2(x), 1.0, 1e-6) << x;
    for (float x : {-127.5f, -1000.0f, -1e30f, -INFINITY, std::nanf("")}) EXPECT_EQ(cpu::exp2_nonpos(x), 0.0f) << x;
}
