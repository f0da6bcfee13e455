// src/dist: tensor-parallel head placement (placement.h). The communicator and data-parallel
// training are tested in test-trainer.cpp (TrainerRun.DataParallelMatchesOneRank, TrainerCli.Ranks*).
#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "dist/placement.h"

namespace elastic::dist {
namespace {

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

// The figure for docs/performance.md: a Qwen3-8B-shaped plan (36 layers x 8 KV heads) at 128K with
// Ω_MSR 0.75 routed at random (2 FA heads per layer on average), streaming heads at sink 128 +
// local 2048. Sum over layers of the slowest rank's attended pairs, relative to an even split.
TEST(HeadPlacement, QwenShapedPlanAt128K) {
    const int64_t T = 131072;
    const double ssa_pruned = 1.0 - double(128 + 2048) * 2 / double(T);  // ~ (sink+local)·T of T²/2 pairs
    std::mt19937_64 rng(7);
    for (int ranks : {2, 4, 8}) {
        double contiguous = 0, balanced = 0, ideal = 0;
        for (int l = 0; l < 36; ++l) {
            std::vector<double> pruned(8);
            for (double& p : pruned) p = std::uniform_real_distribution<double>(0, 1)(rng) < 0.25 ? 0.0 : ssa_pruned;
            const std::vector<double> c = head_costs(pruned, T);
            double total = 0;
            for (double x : c) total += x;
            ideal += total / ranks;
            contiguous += max_rank_cost(c, place_contiguous(8, ranks), ranks);
            balanced += max_rank_cost(c, place_balanced(c, ranks), ranks);
        }
        std::printf("128K, Ω 0.75, %d ranks: slowest rank / even split: contiguous %.2f, balanced %.2f\n", ranks,
                    contiguous / ideal, balanced / ideal);
        EXPECT_LE(balanced, contiguous);
        if (ranks == 4) {
            EXPECT_LT(balanced, 0.8 * contiguous);
        }
    }
}

}  // namespace
}  // namespace elastic::dist
