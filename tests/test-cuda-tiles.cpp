// Host-side checks of the CUDA attention bookkeeping (src/cuda/attention-tiles.h), runnable
// without a GPU: for every query tile of random plans, the key tiles the prefill kernel visits
// plus its token mask give exactly the (i, j) pairs plan_allows() allows, no tile twice; tiles the
// kernel leaves unmasked are fully visible; the decode spans and slots equal cpu::LayerKVCache's
// (src/cpu/attention.h).
#include <gtest/gtest.h>

#include <set>

#include "attention/plan.h"
#include "cpu/attention.h"
#include "cuda/attention-tiles.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::cuda::detail;
using namespace elastic::test;

TEST(CudaTiles, VisitedTilesAndMaskEqualPlanAllows) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const StreamingWindow wins[] = {{16, 48}, {0, 70}, {128, 2048}, {20, 1}, {200, 64}, {1, 1}, {64, 64}};
    std::uniform_int_distribution<int> rand_T(1, 900);
    for (int trial = 0; trial < 60; ++trial) {
        const int T = trial < 4 ? std::vector<int>{1, 64, 129, 2500}[size_t(trial)] : rand_T(rng);
        const StreamingWindow win = wins[size_t(trial) % std::size(wins)];
        const int block = trial % 2 ? 128 : 64;
        // Key tiles of 32 and 64 (the mma.sync kernel) and 128 (the Hopper kernel, 128-row tiles).
        for (int BN : {32, 64, 128})
        for (int mode = 0; mode < 3; ++mode)
            for (int bm : {64, 128}) {
                if (mode == kModeXA && (block % bm != 0 || block % BN != 0)) continue;
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
                                << "mode " << mode << " T " << T << " block_m " << bm << " block_n " << BN << " window " << sink << "/"
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

// ---- mma.sync fragment addressing of the prefill kernel against the PTX ISA layouts ----
namespace {

struct Reg {  // one 32-bit register holding two 16-bit elements (lo = lower address / column)
    float lo, hi;
};

// ldmatrix.sync.aligned.m8n8.x4(.trans).b16: matrix m's row r starts at the address of lane
// 8m + r; without .trans lane t gets (row t/4, columns 2(t%4), 2(t%4)+1) of matrix m in register
// m, with .trans (rows 2(t%4), 2(t%4)+1, column t/4).
void ldmatrix_x4(const std::vector<float>& smem, const int (&addr)[32], bool trans, Reg (&out)[32][4]) {
    for (int m = 0; m < 4; ++m)
        for (int t = 0; t < 32; ++t) {
            if (!trans) {
                const int base = addr[8 * m + t / 4];
                out[t][m] = {smem[size_t(base + 2 * (t % 4))], smem[size_t(base + 2 * (t % 4) + 1)]};
            } else {
                out[t][m] = {smem[size_t(addr[8 * m + 2 * (t % 4)] + t / 4)],
                             smem[size_t(addr[8 * m + 2 * (t % 4) + 1] + t / 4)]};
            }
        }
}

// mma.sync.aligned.m16n8k16.row.col: A register i of lane t holds row t/4 + 8(i&1), columns
// 2(t%4) + {0,1} + 8(i>>1); B register i holds k = 2(t%4) + {0,1} + 8i of column t/4; C element e
// is row t/4 + 8(e>>1), column 2(t%4) + (e&1).
void mma(const Reg (&a)[32][4], const Reg (&b)[32][2], float (&c)[32][4]) {
    float A[16][16], B[16][8];
    for (int t = 0; t < 32; ++t) {
        for (int i = 0; i < 4; ++i) {
            const int r = t / 4 + 8 * (i & 1), k = 2 * (t % 4) + 8 * (i >> 1);
            A[r][k] = a[t][i].lo;
            A[r][k + 1] = a[t][i].hi;
        }
        for (int i = 0; i < 2; ++i) {
            const int k = 2 * (t % 4) + 8 * i, n = t / 4;
            B[k][n] = b[t][i].lo;
            B[k + 1][n] = b[t][i].hi;
        }
    }
    for (int t = 0; t < 32; ++t)
        for (int e = 0; e < 4; ++e) {
            const int r = t / 4 + 8 * (e >> 1), n = 2 * (t % 4) + (e & 1);
            for (int k = 0; k < 16; ++k) c[t][e] += A[r][k] * B[k][n];
        }
}

}  // namespace

// One warp of the prefill kernel, emulated: S = Q Kᵀ and O = P V through the kernel's own
// fragment offsets (frag_* in attention-tiles.h) and the PTX layouts above; small integer inputs
// make every sum exact.
TEST(CudaTiles, MmaFragmentsComputeQKAndPV) {
    std::mt19937_64 rng(fresh_seed());
    std::uniform_int_distribution<int> val(-2, 2);
    for (int D : {64, 128}) {
        const int S = D + 8, BN = 64, NF = BN / 8, DF = D / 8;
        for (int row0 : {0, 16, 48}) {
            std::vector<float> sQ(size_t(64 * S)), sK(size_t(BN * S)), sV(size_t(BN * S));
            for (float& x : sQ) x = float(val(rng));
            for (float& x : sK) x = float(val(rng));
            for (float& x : sV) x = float(val(rng));
            float acc[32][4];
            std::vector<float> S_exact(size_t(16 * BN));
            for (int r = 0; r < 16; ++r)
                for (int c = 0; c < BN; ++c) {
                    float x = 0;
                    for (int k = 0; k < D; ++k) x += sQ[size_t((row0 + r) * S + k)] * sK[size_t(c * S + k)];
                    S_exact[size_t(r * BN + c)] = x;
                }
            // S = Q Kᵀ
            std::vector<float> sacc(size_t(NF * 32 * 4), 0.0f);
            auto SA = [&](int nf, int t, int e) -> float& { return sacc[size_t((nf * 32 + t) * 4 + e)]; };
            for (int ks = 0; ks < D / 16; ++ks) {
                int addr[32];
                Reg a[32][4], b[32][4];
                for (int t = 0; t < 32; ++t) addr[t] = frag_a_offset(t, row0, ks * 16, S);
                ldmatrix_x4(sQ, addr, false, a);
                for (int nf2 = 0; nf2 < NF / 2; ++nf2) {
                    for (int t = 0; t < 32; ++t) addr[t] = frag_bk_offset(t, nf2 * 16, ks * 16, S);
                    ldmatrix_x4(sK, addr, false, b);
                    for (int half = 0; half < 2; ++half) {
                        Reg bb[32][2];
                        for (int t = 0; t < 32; ++t) bb[t][0] = b[t][2 * half], bb[t][1] = b[t][2 * half + 1];
                        const int nf = 2 * nf2 + half;
                        for (int t = 0; t < 32; ++t)
                            for (int e = 0; e < 4; ++e) acc[t][e] = SA(nf, t, e);
                        mma(a, bb, acc);
                        for (int t = 0; t < 32; ++t)
                            for (int e = 0; e < 4; ++e) SA(nf, t, e) = acc[t][e];
                    }
                }
            }
            for (int nf = 0; nf < NF; ++nf)
                for (int t = 0; t < 32; ++t)
                    for (int e = 0; e < 4; ++e)
                        ASSERT_EQ(SA(nf, t, e), S_exact[size_t(frag_c_row(t, e) * BN + nf * 8 + frag_c_col(t, e))])
                            << "S: d " << D << " row0 " << row0 << " nf " << nf << " lane " << t << " e " << e;
            // O = P V with P = S taken from the accumulators
            std::vector<float> oacc(size_t(DF * 32 * 4), 0.0f);
            auto OA = [&](int df, int t, int e) -> float& { return oacc[size_t((df * 32 + t) * 4 + e)]; };
            for (int kk = 0; kk < BN / 16; ++kk) {
                Reg a[32][4], b[32][4];
                for (int t = 0; t < 32; ++t) {
                    float lo[4], hi[4];
                    for (int e = 0; e < 4; ++e) lo[e] = SA(2 * kk, t, e), hi[e] = SA(2 * kk + 1, t, e);
                    frag_a_from_c(lo, hi, a[t], [](float x, float y) { return Reg{x, y}; });
                }
                for (int df2 = 0; df2 < DF / 2; ++df2) {
                    int addr[32];
                    for (int t = 0; t < 32; ++t) addr[t] = frag_bv_offset(t, kk * 16, df2 * 16, S);
                    ldmatrix_x4(sV, addr, true, b);
                    for (int half = 0; half < 2; ++half) {
                        Reg bb[32][2];
                        for (int t = 0; t < 32; ++t) bb[t][0] = b[t][2 * half], bb[t][1] = b[t][2 * half + 1];
                        const int df = 2 * df2 + half;
                        for (int t = 0; t < 32; ++t)
                            for (int e = 0; e < 4; ++e) acc[t][e] = OA(df, t, e);
                        mma(a, bb, acc);
                        for (int t = 0; t < 32; ++t)
                            for (int e = 0; e < 4; ++e) OA(df, t, e) = acc[t][e];
                    }
                }
            }
            for (int df = 0; df < DF; ++df)
                for (int t = 0; t < 32; ++t)
                    for (int e = 0; e < 4; ++e) {
                        const int r = frag_c_row(t, e), col = df * 8 + frag_c_col(t, e);
                        float want = 0;
                        for (int c = 0; c < BN; ++c) want += S_exact[size_t(r * BN + c)] * sV[size_t(c * S + col)];
                        ASSERT_EQ(OA(df, t, e), want) << "O: d " << D << " row0 " << row0 << " df " << df << " lane " << t;
                    }
        }
    }
}
