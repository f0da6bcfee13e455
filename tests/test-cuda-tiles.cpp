// Host-side checks of the CUDA attention bookkeeping (src/cuda/attention-tiles.h), runnable
// without a GPU: for every query tile of random plans, the key tiles the prefill kernel visits
// plus its token mask give exactly the (i, j) pairs plan_allows() allows, no tile twice; tiles the
// kernel leaves unmasked are fully visible; the decode spans and slots equal cpu::LayerKVCache's.
#include <gtest/gtest.h>

#include <set>

#include "attention/kv-cache.h"
#include "attention/plan.h"
#include "cuda/attention-tiles.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::cuda::detail;
using namespace elastic::test;

namespace {

BlockList random_blocks(int64_t T, int64_t block, double p, std::mt19937_64& rng) {
    BlockList bl;
    bl.offsets.push_back(0);
    std::bernoulli_distribution keep(p);
    for (int64_t qb = 0; qb * block < T; ++qb) {
        for (int64_t kb = 0; kb <= qb; ++kb)
            if (kb == 0 || kb == qb || keep(rng)) bl.blocks.push_back(int32_t(kb));
        bl.offsets.push_back(int64_t(bl.blocks.size()));
    }
    return bl;
}

}  // namespace

TEST(CudaTiles, VisitedTilesAndMaskEqualPlanAllows) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    constexpr int BN = 64;
    const StreamingWindow wins[] = {{16, 48}, {0, 70}, {128, 2048}, {20, 1}, {200, 64}, {1, 1}, {64, 64}};
    std::uniform_int_distribution<int> rand_T(1, 900);
    for (int trial = 0; trial < 60; ++trial) {
        const int T = trial < 4 ? std::vector<int>{1, 64, 129, 2500}[size_t(trial)] : rand_T(rng);
        const StreamingWindow win = wins[size_t(trial) % std::size(wins)];
        const int block = trial % 2 ? 128 : 64;
        for (int mode = 0; mode < 3; ++mode)
            for (int bm : {64, 128}) {
                if (mode == kModeXA && block % bm != 0) continue;
                const BlockList bl = random_blocks(T, block, 0.3, rng);
                std::vector<int32_t> offs(bl.offsets.begin(), bl.offsets.end());
                const int sink = int(win.sink), local = int(win.local);
                for (int m0 = 0; m0 < T; m0 += bm) {
                    const int m1 = std::min(m0 + bm, T);
                    const TileRange tr = tile_range(mode, m0, m1, BN, sink, local, block, offs.data(), 0);
                    std::set<int> tiles;
                    std::vector<std::vector<char>> seen(size_t(m1 - m0), std::vector<char>(size_t(m1), 0));
                    for (int t = 0; t < tr.count; ++t) {
                        const int n = tile_at(tr, mode, t, bl.blocks.data());
                        ASSERT_TRUE(n >= 0 && n * BN < m1) << "tile " << n << " outside the causal range";
                        ASSERT_TRUE(tiles.insert(n).second) << "tile " << n << " visited twice";
                        const bool masked = tile_needs_mask(mode, m0, bm, n * BN, BN, T, sink, local);
                        for (int i = m0; i < m1; ++i)
                            for (int j = n * BN; j < n * BN + BN; ++j) {
                                const bool vis = tile_visible(mode, i, j, T, sink, local);
                                if (!masked) {
                                    ASSERT_TRUE(vis) << "unmasked tile hides (" << i << ", " << j << ")";
                                }
                                if (vis) seen[size_t(i - m0)][size_t(j)] = 1;
                            }
                    }
                    for (int i = m0; i < m1; ++i)
                        for (int j = 0; j <= i; ++j) {
                            const bool want = plan_allows(HeadMode(mode), win, &bl, block, i, j);
                            ASSERT_EQ(bool(seen[size_t(i - m0)][size_t(j)]), want)
                                << "mode " << mode << " T " << T << " block_m " << bm << " window " << sink << "/"
                                << local << " xa block " << block << " pair (" << i << ", " << j << ")";
                        }
                }
            }
    }
}

TEST(CudaTiles, DecodeSpansMatchCpuCache) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const StreamingWindow wins[] = {{8, 40}, {0, 33}, {128, 2048}, {5, 1}, {50, 10}};
    for (const StreamingWindow& win : wins)
        for (int64_t cap : {1, 7, 60, 300, 3000}) {
            LayerPlan plan;
            plan.mode = {HeadMode::FA, HeadMode::SSA, HeadMode::XA};
            cpu::LayerKVCache cc;
            cc.init(plan, win, cap, 3, 1);
            for (int g = 0; g < 3; ++g) {
                CacheHead h{0, int32_t(plan.mode[size_t(g)]), 0, 0, 0};
                if (plan.mode[size_t(g)] == HeadMode::SSA) {
                    h.n_sink = int32_t(std::min(win.sink, cap));
                    h.n_ring = int32_t(std::min(win.local, cap - h.n_sink));
                }
                for (int64_t pos = 0; pos < cap; pos += cap > 1000 ? 13 : 1) {
                    cpu::LayerKVCache::Span sp[3];
                    const int n = cc.spans(g, pos, sp);
                    int64_t b[3], e[3];
                    ASSERT_EQ(cache_spans(h, win.sink, win.local, pos, b, e), n);
                    for (int x = 0; x < n; ++x) {
                        ASSERT_EQ(b[x], sp[x].begin);
                        ASSERT_EQ(e[x], sp[x].end);
                    }
                    // Every kept position ≤ pos sits in a slot inside the spans, each slot once.
                    std::set<int64_t> slots;
                    for (int64_t j = 0; j <= pos; ++j) {
                        if (!plan_allows(plan.mode[size_t(g)] == HeadMode::SSA ? HeadMode::SSA : HeadMode::FA, win,
                                         nullptr, 1, pos, j))
                            continue;
                        const int64_t s = cache_slot(h, win.sink, win.local, j);
                        bool inside = false;
                        for (int x = 0; x < n; ++x) inside |= s >= b[x] && s < e[x];
                        ASSERT_TRUE(inside) << "position " << j << " slot " << s;
                        ASSERT_TRUE(slots.insert(s).second) << "slot " << s << " holds two attended positions";
                    }
                    ASSERT_EQ(int64_t(slots.size()), spans_total(b, e, n));
                }
            }
        }
    (void)rng;
}
