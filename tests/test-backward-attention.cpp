// Finite-difference checks of the attention backward (src/train/attention-backward.cpp): the
// forward with log-sum-exp against an fp64 reference, dq/dk/dv of every plan mode (FA, SSA with a
// window shorter than T and with T < sink, XA on a hand-made block list, modes mixed in one layer)
// at GQA groups 1, 3 and 4, independence from the tile size, and the mixed FA/SA attention of
// training with hard and continuous z (dz included). Rule and harness: fd-check.h.
#include <gtest/gtest.h>

#include "fd-check.h"
#include "train/backward.h"

using namespace elastic;
using namespace elastic::test;
using namespace elastic::train;

namespace {

// XA blocks by hand: query block qb keeps {0, qb - 2 (qb >= 3), qb}, so most rows skip blocks.
BlockList hand_blocks(int64_t T, int64_t block) {
    BlockList bl;
    bl.offsets.push_back(0);
    for (int64_t qb = 0; qb * block < T; ++qb) {
        bl.blocks.push_back(0);
        if (qb >= 3) bl.blocks.push_back(int32_t(qb - 2));
        if (qb >= 1) bl.blocks.push_back(int32_t(qb));
        bl.offsets.push_back(int64_t(bl.blocks.size()));
    }
    return bl;
}

// One attention problem; z non-empty makes it the mixed attention z·FA + (1 - z)·`plan`.
struct Problem {
    AttnShape s;
    LayerPlan plan;
    std::vector<double> z;          // [Hkv]
    std::vector<float> q, k, v, R;  // R [T, Hq, d]: the loss is <R, out>
    std::vector<double> qd, kd, vd;

    Problem(AttnShape shape, std::vector<HeadMode> modes, std::mt19937_64& rng) : s(shape) {
        plan.mode = std::move(modes);
        plan.xa.resize(plan.mode.size());
        for (size_t g = 0; g < plan.mode.size(); ++g)
            if (plan.mode[g] == HeadMode::XA) plan.xa[g] = hand_blocks(s.T, s.xa_block);
        s.scale = 1.0f / std::sqrt(float(s.head_dim));
        q = randn(size_t(s.T * s.n_head * s.head_dim), rng);
        k = randn(size_t(s.T * s.n_kv_head * s.head_dim), rng);
        v = randn(k.size(), rng);
        R = randn(q.size(), rng);
        qd.assign(q.begin(), q.end());
        kd.assign(k.begin(), k.end());
        vd.assign(v.begin(), v.end());
    }

    // fp64 output row i of query head h under plan p (o [d]); returns its natural-log lse.
    double row(const LayerPlan& p, const double* Q, const double* K, const double* V, int h, int64_t i,
               double* o) const {
        const int d = s.head_dim, g = h / (s.n_head / s.n_kv_head);
        const BlockList* xa = p.mode[size_t(g)] == HeadMode::XA ? &p.xa[size_t(g)] : nullptr;
        std::vector<double> sc(size_t(i + 1), -1e300);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
            if (!plan_allows(p.mode[size_t(g)], s.win, xa, s.xa_block, i, j)) continue;
            double a = 0;
            for (int c = 0; c < d; ++c) a += Q[(i * s.n_head + h) * d + c] * K[(j * s.n_kv_head + g) * d + c];
            mx = std::max(mx, sc[size_t(j)] = a * s.scale);
        }
        std::fill(o, o + d, 0.0);
        for (int64_t j = 0; j <= i; ++j) {
            if (sc[size_t(j)] == -1e300) continue;
            const double e = std::exp(sc[size_t(j)] - mx);
            sum += e;
            for (int c = 0; c < d; ++c) o[c] += e * V[(j * s.n_kv_head + g) * d + c];
        }
        for (int c = 0; c < d; ++c) o[c] /= sum;
        return mx + std::log(sum);
    }

    // <R, out> restricted to row i of head h, with the mixed weights zz (or the plain plan).
    double row_loss(const double* Q, const double* K, const double* V, const double* zz, int h, int64_t i) const {
        const int d = s.head_dim, g = h / (s.n_head / s.n_kv_head);
        std::vector<double> o(static_cast<size_t>(d));
        auto dot_r = [&] {
            double l = 0;
            for (int c = 0; c < d; ++c) l += R[size_t((i * s.n_head + h) * d + c)] * o[size_t(c)];
            return l;
        };
        const double w_sa = zz ? 1.0 - zz[g] : 1.0;
        double l = 0;
        if (zz && zz[g] != 0.0) {
            LayerPlan fa;
            fa.mode.assign(size_t(s.n_kv_head), HeadMode::FA);
            row(fa, Q, K, V, h, i, o.data());
            l += zz[g] * dot_r();
        }
        if (w_sa != 0.0) {
            row(plan, Q, K, V, h, i, o.data());
            l += w_sa * dot_r();
        }
        return l;
    }

    // The part of the loss that element e of tensor `which` (0 q, 1 k, 2 v, 3 z) affects.
    double affected(int which, const std::vector<double>& x, size_t e) const {
        const double* Q = which == 0 ? x.data() : qd.data();
        const double* K = which == 1 ? x.data() : kd.data();
        const double* V = which == 2 ? x.data() : vd.data();
        const double* zz = which == 3 ? x.data() : (z.empty() ? nullptr : z.data());
        const int d = s.head_dim, group = s.n_head / s.n_kv_head;
        if (which == 0) return row_loss(Q, K, V, zz, int(e / d % s.n_head), int64_t(e / d / s.n_head));
        const int g = which == 3 ? int(e) : int(e / d % s.n_kv_head);
        const int64_t j0 = which == 3 ? 0 : int64_t(e / d / s.n_kv_head);
        double l = 0;
        for (int h = g * group; h < (g + 1) * group; ++h)
            for (int64_t i = j0; i < s.T; ++i) l += row_loss(Q, K, V, zz, h, i);
        return l;
    }
};

struct Grads {
    std::vector<float> o, lse, dq, dk, dv;
};

Grads run_plain(const Problem& P) {
    Grads r;
    r.o = poisoned(P.q.size());
    r.lse = poisoned(size_t(P.s.T * P.s.n_head));
    attn_forward_lse(P.s, P.plan, P.q.data(), P.k.data(), P.v.data(), r.o.data(), r.lse.data());
    r.dq.assign(P.q.size(), 0.0f);
    r.dk.assign(P.k.size(), 0.0f);
    r.dv.assign(P.v.size(), 0.0f);
    attn_backward(P.s, P.plan, P.q.data(), P.k.data(), P.v.data(), r.o.data(), r.lse.data(), P.R.data(), r.dq.data(),
                  r.dk.data(), r.dv.data());
    return r;
}

void check_qkv(const Problem& P, const Grads& r, const std::string& name, std::mt19937_64& rng, size_t n = 160) {
    const char* what[3] = {" dq", " dk", " dv"};
    const std::vector<float>* x[3] = {&P.q, &P.k, &P.v};
    const std::vector<float>* g[3] = {&r.dq, &r.dk, &r.dv};
    for (int w = 0; w < 3; ++w)
        EXPECT_TRUE(fd_check(
            name + what[w], *x[w], *g[w], [&](const std::vector<double>& xd, size_t e) { return P.affected(w, xd, e); },
            rng, n));
}

struct Case {
    const char* name;
    int64_t T;
    int n_head, n_kv_head, head_dim;
    std::vector<HeadMode> modes;
    StreamingWindow win;
    int64_t xa_block, tile;
};

const HeadMode FA = HeadMode::FA, SSA = HeadMode::SSA, XA = HeadMode::XA;

std::vector<Case> cases() {
    return {
        {"fa g1 d8 T37", 37, 2, 2, 8, {FA, FA}, {}, 16, 16},
        {"fa+ssa g3 d16 T50", 50, 6, 2, 16, {FA, SSA}, {4, 10}, 16, 16},
        {"ssa g4 d64 T90 local24", 90, 4, 1, 64, {SSA}, {5, 24}, 16, 16},
        {"ssa g3 d32 T20<sink32", 20, 3, 1, 32, {SSA}, {32, 8}, 16, 8},
        {"xa g3 d16 T75 block16 tile12", 75, 6, 2, 16, {XA, XA}, {}, 16, 12},
        {"fa+ssa+xa g4 d8 T70", 70, 12, 3, 8, {FA, SSA, XA}, {3, 9}, 16, 32},
    };
}

Problem make(const Case& c, std::mt19937_64& rng) {
    AttnShape s;
    s.T = c.T;
    s.n_head = c.n_head;
    s.n_kv_head = c.n_kv_head;
    s.head_dim = c.head_dim;
    s.win = c.win;
    s.xa_block = c.xa_block;
    s.tile = c.tile;
    return Problem(s, c.modes, rng);
}

class BackwardAttention : public BackwardTest {};

}  // namespace

TEST_F(BackwardAttention, ForwardMatchesReference) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (const Case& c : cases()) {
        const Problem P = make(c, rng);
        const Grads r = run_plain(P);
        std::vector<float> o(P.q.size()), lse(r.lse.size());
        std::vector<double> od(static_cast<size_t>(c.head_dim));
        for (int64_t i = 0; i < c.T; ++i)
            for (int h = 0; h < c.n_head; ++h) {
                lse[size_t(i * c.n_head + h)] =
                    float(P.row(P.plan, P.qd.data(), P.kd.data(), P.vd.data(), h, i, od.data()));
                for (int x = 0; x < c.head_dim; ++x)
                    o[size_t((i * c.n_head + h) * c.head_dim + x)] = float(od[size_t(x)]);
            }
        EXPECT_TRUE(close_enough(r.o, o, nullptr, 1e-5)) << c.name;
        EXPECT_TRUE(close_enough(r.lse, lse, nullptr, 1e-5)) << c.name;
    }
}

TEST_F(BackwardAttention, AllModesAndGroups) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (const Case& c : cases()) {
        const Problem P = make(c, rng);
        check_qkv(P, run_plain(P), c.name, rng);
    }
}

TEST_F(BackwardAttention, TileSizeDoesNotMatter) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (const Case& c : {cases()[2], cases()[5]}) {
        Problem P = make(c, rng);
        P.s.tile = 16;
        const Grads ref = run_plain(P);
        for (int64_t tile : {5, 64, 200}) {
            P.s.tile = tile;
            const Grads r = run_plain(P);
            const std::string at = std::string(c.name) + " tile " + std::to_string(tile);
            EXPECT_TRUE(close_enough(r.o, ref.o, nullptr, 1e-5)) << at;
            EXPECT_TRUE(close_enough(r.lse, ref.lse, nullptr, 1e-5)) << at;
            EXPECT_TRUE(close_enough(r.dq, ref.dq, nullptr, 1e-5)) << at;
            EXPECT_TRUE(close_enough(r.dk, ref.dk, nullptr, 1e-5)) << at;
            EXPECT_TRUE(close_enough(r.dv, ref.dv, nullptr, 1e-5)) << at;
        }
    }
}

TEST_F(BackwardAttention, MixedHardAndContinuousZ) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const Case c{"mixed", 60, 6, 3, 16, {SSA, XA, SSA}, {4, 12}, 16, 16};
    for (const std::vector<double>& z : {std::vector<double>{1, 0, 1}, std::vector<double>{0.3, 0.8, 0.55}}) {
        Problem P = make(c, rng);
        P.z = z;
        const std::vector<float> zf(z.begin(), z.end());
        const size_t n = P.q.size(), nl = size_t(c.T * c.n_head);
        auto o_fa = poisoned(n), o_sa = poisoned(n), out = poisoned(n), l_fa = poisoned(nl), l_sa = poisoned(nl);
        mixed_attention_forward(P.s, P.plan, P.q.data(), P.k.data(), P.v.data(), zf.data(), o_fa.data(), o_sa.data(),
                                l_fa.data(), l_sa.data(), out.data());
        std::vector<float> ref(n);
        std::vector<double> a(static_cast<size_t>(c.head_dim)), b(a);
        LayerPlan fa;
        fa.mode.assign(3, HeadMode::FA);
        for (int64_t i = 0; i < c.T; ++i)
            for (int h = 0; h < c.n_head; ++h) {
                P.row(fa, P.qd.data(), P.kd.data(), P.vd.data(), h, i, a.data());
                P.row(P.plan, P.qd.data(), P.kd.data(), P.vd.data(), h, i, b.data());
                const double zg = z[size_t(h / 2)];
                for (int x = 0; x < c.head_dim; ++x)
                    ref[size_t((i * c.n_head + h) * c.head_dim + x)] =
                        float(zg * a[size_t(x)] + (1 - zg) * b[size_t(x)]);
            }
        const std::string name = std::string("mixed z ") + (z[0] == 1 ? "hard" : "continuous");
        EXPECT_TRUE(close_enough(out, ref, nullptr, 1e-5)) << name;

        Grads r;
        r.dq.assign(n, 0.0f);
        r.dk.assign(P.k.size(), 0.0f);
        r.dv.assign(P.v.size(), 0.0f);
        auto dz = poisoned(3);
        mixed_attention_backward(P.s, P.plan, P.q.data(), P.k.data(), P.v.data(), zf.data(), o_fa.data(), o_sa.data(),
                                 l_fa.data(), l_sa.data(), P.R.data(), r.dq.data(), r.dk.data(), r.dv.data(),
                                 dz.data());
        check_qkv(P, r, name, rng, 120);
        EXPECT_TRUE(fd_check(
            name + " dz", zf, dz, [&](const std::vector<double>& zd, size_t g) { return P.affected(3, zd, g); }, rng));
    }
}
