// One router-training step on the CPU (see train-step.h). Layer by layer:
//   h1 = rms_norm(x) → q, k, v → [q/k norm] → router(k pre-RoPE) → z → rope → att = z·O_1 + (1−z)·O_2
//   → x2 = x + att·Wo^T → x3 = x2 + FFN(rms_norm(x2))
// where O_1 is the mode of FA-routed heads (FA, or XA for xa-ssa) and O_2 that of SA-routed heads.
// The backward walks the same chain in reverse from dL/dx3 with the ops of backward.h.
#include "train/train-step.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "cpu/attention.h"
#include "cpu/ops.h"
#include "train/backward.h"

extern "C" void openblas_set_num_threads(int);

namespace elastic::train {

TrainConfig parse_train_config(const std::string& s) {
    if (s == "fa-ssa") return TrainConfig::FA_SSA;
    if (s == "fa-xa") return TrainConfig::FA_XA;
    if (s == "xa-ssa") return TrainConfig::XA_SSA;
    fail("unknown training config '%s' (expected fa-ssa, fa-xa or xa-ssa)", s.c_str());
}

const char* train_config_name(TrainConfig c) {
    switch (c) {
        case TrainConfig::FA_SSA: return "fa-ssa";
        case TrainConfig::FA_XA: return "fa-xa";
        case TrainConfig::XA_SSA: return "xa-ssa";
    }
    return "?";
}

const char* category_name(int c) { return c == kSensitive ? "sensitive" : c == kRobust ? "robust" : "?"; }

TrainSample make_sample(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer, int category) {
    ELASTIC_ASSERT(!prompt.empty() && !answer.empty());
    TrainSample s;
    s.category = category;
    s.tokens = prompt;
    s.tokens.insert(s.tokens.end(), answer.begin(), answer.end());
    s.targets.assign(s.tokens.size(), -1);
    for (size_t t = prompt.size() - 1; t + 1 < s.tokens.size(); ++t) s.targets[t] = s.tokens[t + 1];
    return s;
}

namespace {

using Vec = std::vector<float>;

// Everything one layer's forward computes; rebuilt from x in the backward.
struct LayerActs {
    Vec h1;          // [T, D] rms_norm(x)
    Vec q, k, v;     // [T, Hq, d], [T, H, d], [T, H, d] projections (before q/k norm)
    Vec qn, kn;      // after q/k norm (= q, k without it); kn is the router's input
    Vec qr, kr;      // after RoPE
    RouterActs ra;
    Vec z;           // [H] forward value of z
    LayerPlan p1, p2;            // modes of the z = 1 and z = 0 sides
    Vec o1, o2, lse1, lse2, att; // [T, Hq, d], [T, Hq], att = mixed output
    Vec x2, h2;      // [T, D] residual after attention, rms_norm(x2)
    Vec gate, up, s; // [T, F]
};

struct Ctx {
    const Model& m;
    const ModelConfig& c;
    const StepOptions& o;
    int64_t T;
    std::vector<int32_t> pos;
    AttnShape shape;
};

// both = false (the checkpointing forward, hard z only): one attention call with each head in the
// mode its z selects, as the mix of two paths with weights exactly 0 and 1 is that path.
void layer_forward(const Ctx& cx, const RouterLayer& r, int l, const float* x, float* out, LayerActs& a,
                   bool both) {
    const ModelConfig& c = cx.c;
    const LayerWeights& W = cx.m.weights.layers[size_t(l)];
    const int64_t T = cx.T, D = c.d_model, F = c.d_ff;
    const int Hq = c.n_head, H = c.n_kv_head, hd = c.head_dim;
    a.h1.resize(size_t(T * D));
    cpu::rms_norm(x, W.attn_norm.data(), a.h1.data(), T, D, c.rms_eps);
    a.q.resize(size_t(T) * Hq * hd);
    a.k.resize(size_t(T) * H * hd);
    a.v.resize(size_t(T) * H * hd);
    cpu::matmul(W.wq, a.h1.data(), a.q.data(), T);
    cpu::matmul(W.wk, a.h1.data(), a.k.data(), T);
    cpu::matmul(W.wv, a.h1.data(), a.v.data(), T);
    a.qn = a.q;
    a.kn = a.k;
    if (c.qk_norm) {
        cpu::rms_norm(a.q.data(), W.q_norm.data(), a.qn.data(), T * Hq, hd, c.rms_eps);
        cpu::rms_norm(a.k.data(), W.k_norm.data(), a.kn.data(), T * H, hd, c.rms_eps);
    }
    a.ra = router_forward(r, a.kn.data(), T, H, hd, Router::kDefaultWindow);
    a.z = cx.o.soft_forward ? a.ra.soft : a.ra.z;
    a.qr = a.qn;
    a.kr = a.kn;
    cpu::rope(a.qr.data(), T, Hq, hd, cx.pos.data(), cx.m.inv_freq.data());
    cpu::rope(a.kr.data(), T, H, hd, cx.pos.data(), cx.m.inv_freq.data());
    const TrainConfig tc = cx.o.config;
    a.p1 = LayerPlan{};
    a.p2 = LayerPlan{};
    a.p1.mode.assign(size_t(H), tc == TrainConfig::XA_SSA ? HeadMode::XA : HeadMode::FA);
    a.p2.mode.assign(size_t(H), tc == TrainConfig::FA_XA ? HeadMode::XA : HeadMode::SSA);
    for (LayerPlan* p : {&a.p1, &a.p2})
        if (p->mode[0] == HeadMode::XA) cpu::xa_fill_plan(a.qr.data(), a.kr.data(), T, Hq, H, hd, cx.o.xa, *p);
    const size_t nq = size_t(T) * Hq * hd;
    a.att.resize(nq);
    a.lse1.resize(size_t(T) * Hq);
    if (!both) {
        ELASTIC_ASSERT(!cx.o.soft_forward);
        LayerPlan sel;
        sel.mode.resize(size_t(H));
        sel.xa.resize(size_t(H));
        for (int g = 0; g < H; ++g) {
            const LayerPlan& p = a.z[size_t(g)] != 0.0f ? a.p1 : a.p2;
            sel.mode[size_t(g)] = p.mode[size_t(g)];
            if (!p.xa.empty()) sel.xa[size_t(g)] = p.xa[size_t(g)];
        }
        attn_forward_lse(cx.shape, sel, a.qr.data(), a.kr.data(), a.v.data(), a.att.data(), a.lse1.data());
    } else {
        a.o1.resize(nq);
        a.o2.resize(nq);
        a.lse2.resize(size_t(T) * Hq);
        attn_forward_lse(cx.shape, a.p1, a.qr.data(), a.kr.data(), a.v.data(), a.o1.data(), a.lse1.data());
        attn_forward_lse(cx.shape, a.p2, a.qr.data(), a.kr.data(), a.v.data(), a.o2.data(), a.lse2.data());
        const int group = Hq / H;
        for (int64_t i = 0; i < T; ++i)
            for (int h = 0; h < Hq; ++h) {
                const float zg = a.z[size_t(h / group)];
                const size_t base = size_t((i * Hq + h) * hd);
                for (int e = 0; e < hd; ++e) a.att[base + e] = zg * a.o1[base + e] + (1.0f - zg) * a.o2[base + e];
            }
    }
    a.x2.resize(size_t(T * D));
    cpu::matmul(W.wo, a.att.data(), a.x2.data(), T);
    cpu::add(a.x2.data(), x, T * D);
    a.h2.resize(size_t(T * D));
    cpu::rms_norm(a.x2.data(), W.ffn_norm.data(), a.h2.data(), T, D, c.rms_eps);
    a.gate.resize(size_t(T * F));
    a.up.resize(size_t(T * F));
    a.s.resize(size_t(T * F));
    cpu::matmul(W.w_gate, a.h2.data(), a.gate.data(), T);
    cpu::matmul(W.w_up, a.h2.data(), a.up.data(), T);
    cpu::swiglu(a.gate.data(), a.up.data(), a.s.data(), T * F);
    cpu::matmul(W.w_down, a.s.data(), out, T);
    cpu::add(out, a.x2.data(), T * D);
}

// dx: in dL/d(layer output), out dL/d(layer input). dz_reg: the λ terms' gradient per z.
void layer_backward(const Ctx& cx, const RouterLayer& r, int l, const float* x, const LayerActs& a, float dz_reg,
                    float* dx, RouterLayer& grad) {
    const ModelConfig& c = cx.c;
    const LayerWeights& W = cx.m.weights.layers[size_t(l)];
    const int64_t T = cx.T, D = c.d_model, F = c.d_ff;
    const int Hq = c.n_head, H = c.n_kv_head, hd = c.head_dim, group = Hq / H;
    // FFN: x3 = x2 + down(swiglu(gate(h2), up(h2)))
    Vec ds(size_t(T * F)), dg(size_t(T * F)), du(size_t(T * F)), dh(size_t(T * D));
    matmul_dx(W.w_down, dx, ds.data(), T);
    swiglu_backward(a.gate.data(), a.up.data(), ds.data(), dg.data(), du.data(), T * F);
    matmul_dx(W.w_gate, dg.data(), dh.data(), T);
    matmul_dx(W.w_up, du.data(), dh.data(), T, true);
    rms_norm_backward(a.x2.data(), W.ffn_norm.data(), dh.data(), dx, T, D, c.rms_eps, true);  // dx = dL/dx2
    // Attention: x2 = x + att·Wo^T, att = z·o1 + (1 − z)·o2
    const size_t nq = size_t(T) * Hq * hd, nk = size_t(T) * H * hd;
    Vec datt(nq);
    matmul_dx(W.wo, dx, datt.data(), T);
    Vec dz(size_t(H), 0.0f);
    {
        std::vector<double> acc(size_t(H), 0.0);
        for (int64_t i = 0; i < T; ++i)
            for (int h = 0; h < Hq; ++h) {
                const size_t base = size_t((i * Hq + h) * hd);
                double s = 0;
                for (int e = 0; e < hd; ++e) s += double(datt[base + e]) * (double(a.o1[base + e]) - double(a.o2[base + e]));
                acc[size_t(h / group)] += s;
            }
        for (int g = 0; g < H; ++g) dz[size_t(g)] = float(acc[size_t(g)]) + dz_reg;
    }
    Vec dq(nq, 0.0f), dk(nk, 0.0f), dv(nk, 0.0f), dside(nq);
    for (int side = 0; side < 2; ++side) {
        bool any = false;
        for (int g = 0; g < H; ++g) any |= (side == 0 ? a.z[size_t(g)] : 1.0f - a.z[size_t(g)]) != 0.0f;
        if (!any) continue;  // every head weights this side by exactly 0
        for (int64_t i = 0; i < T; ++i)
            for (int h = 0; h < Hq; ++h) {
                const float zg = a.z[size_t(h / group)], w = side == 0 ? zg : 1.0f - zg;
                const size_t base = size_t((i * Hq + h) * hd);
                for (int e = 0; e < hd; ++e) dside[base + e] = w * datt[base + e];
            }
        const LayerPlan& p = side == 0 ? a.p1 : a.p2;
        const Vec& o = side == 0 ? a.o1 : a.o2;
        const Vec& lse = side == 0 ? a.lse1 : a.lse2;
        attn_backward(cx.shape, p, a.qr.data(), a.kr.data(), a.v.data(), o.data(), lse.data(), dside.data(), dq.data(),
                      dk.data(), dv.data());
    }
    rope_backward(dq.data(), T, Hq, hd, cx.pos.data(), cx.m.inv_freq.data());
    rope_backward(dk.data(), T, H, hd, cx.pos.data(), cx.m.inv_freq.data());
    router_backward(r, a.ra, dz.data(), grad, dk.data());  // dk += the router pooling's share
    if (c.qk_norm) {
        Vec t(nq);
        rms_norm_backward(a.q.data(), W.q_norm.data(), dq.data(), t.data(), T * Hq, hd, c.rms_eps);
        dq.swap(t);
        Vec u(nk);
        rms_norm_backward(a.k.data(), W.k_norm.data(), dk.data(), u.data(), T * H, hd, c.rms_eps);
        dk.swap(u);
    }
    matmul_dx(W.wq, dq.data(), dh.data(), T);
    matmul_dx(W.wk, dk.data(), dh.data(), T, true);
    matmul_dx(W.wv, dv.data(), dh.data(), T, true);
    rms_norm_backward(x, W.attn_norm.data(), dh.data(), dx, T, D, c.rms_eps, true);
}

StepResult run(const Model& m, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
               double lambda2, double target, const StepOptions& o, std::vector<RouterLayer>* grads) {
    const ModelConfig& c = m.config;
    const int L = c.n_layer, H = c.n_kv_head;
    const int64_t T = int64_t(s.tokens.size()), D = c.d_model;
    if (T < 2) fail("training sample of %lld tokens: need at least 2", (long long)T);
    if (int(routers.size()) != L) fail("training: %zu routers for a model of %d layers", routers.size(), L);
    ELASTIC_ASSERT(s.targets.size() == s.tokens.size());
    for (int32_t t : s.tokens)
        if (t < 0 || t >= c.vocab)
            fail("training sample%s: token id %d outside the model's vocabulary of %d (tokenizer and model differ?)",
                 s.line > 0 ? strprintf(" of line %lld", (long long)s.line).c_str() : "", t, c.vocab);
    openblas_set_num_threads(1);  // BLAS is called inside OpenMP regions (as cpu::matmul)
    Ctx cx{m, c, o, T, {}, {}};
    cx.pos.resize(size_t(T));
    for (int64_t t = 0; t < T; ++t) cx.pos[size_t(t)] = int32_t(t);
    cx.shape.T = T;
    cx.shape.n_head = c.n_head;
    cx.shape.n_kv_head = H;
    cx.shape.head_dim = c.head_dim;
    cx.shape.scale = 1.0f / std::sqrt(float(c.head_dim));
    cx.shape.win = o.win;
    cx.shape.xa_block = o.xa.block;

    // Forward, keeping each layer's input residual only.
    std::vector<Vec> xs(size_t(L) + 1, Vec(size_t(T * D)));
    cpu::embedding(m.weights.tok_embd, s.tokens.data(), T, xs[0].data());
    double zsum = 0;
    {
        LayerActs a;
        for (int l = 0; l < L; ++l) {
            layer_forward(cx, routers[size_t(l)], l, xs[size_t(l)].data(), xs[size_t(l) + 1].data(), a,
                          o.soft_forward);
            for (float z : a.z) zsum += z;
        }
    }
    StepResult r;
    const double n_heads = double(L) * H;
    r.omega = 1.0 - zsum / n_heads;
    const double dev = r.omega - target;
    r.dlambda1 = std::fabs(dev);
    r.dlambda2 = dev * dev;
    r.reg_loss = lambda1 * r.dlambda1 + lambda2 * r.dlambda2;
    Vec hN(size_t(T * D)), dhN(size_t(T * D));
    cpu::rms_norm(xs[size_t(L)].data(), m.weights.out_norm.data(), hN.data(), T, D, c.rms_eps);
    const CrossEntropy ce = cross_entropy_chunked(m.weights.output, hN.data(), s.targets.data(), T, dhN.data());
    r.lm_loss = ce.loss;
    r.answer_tokens = ce.count;
    if (!grads) return r;

    // Backward. dΩ/dz = −1/(L·H); d reg/dΩ = λ1·sign(Ω − t) + 2·λ2·(Ω − t).
    const double dreg = lambda1 * double((dev > 0) - (dev < 0)) + 2.0 * lambda2 * dev;
    const float dz_reg = float(-dreg / n_heads);
    Vec dx(size_t(T * D));
    rms_norm_backward(xs[size_t(L)].data(), m.weights.out_norm.data(), dhN.data(), dx.data(), T, D, c.rms_eps);
    LayerActs a;
    for (int l = L - 1; l >= 0; --l) {
        Vec out(size_t(T * D));
        layer_forward(cx, routers[size_t(l)], l, xs[size_t(l)].data(), out.data(), a, true);
        // The recomputation (both paths, mixed) must reproduce the checkpointing forward (one path).
        float diff = 0, mag = 0;
        for (size_t i = 0; i < out.size(); ++i) {
            diff = std::max(diff, std::fabs(out[i] - xs[size_t(l) + 1][i]));
            mag = std::max(mag, std::fabs(out[i]));
        }
        ELASTIC_ASSERT_MSG(diff <= 1e-4f * (1.0f + mag), "train_step: the recomputed layer differs from its forward");
        layer_backward(cx, routers[size_t(l)], l, xs[size_t(l)].data(), a, dz_reg, dx.data(), (*grads)[size_t(l)]);
    }
    return r;
}

}  // namespace

StepResult train_step(const Model& model, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
                      double lambda2, double target, const StepOptions& o, std::vector<RouterLayer>& grads) {
    ELASTIC_ASSERT(grads.size() == routers.size());
    return run(model, routers, s, lambda1, lambda2, target, o, &grads);
}

StepResult train_loss(const Model& model, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
                      double lambda2, double target, const StepOptions& o) {
    return run(model, routers, s, lambda1, lambda2, target, o, nullptr);
}

}  // namespace elastic::train
