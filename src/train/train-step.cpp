// One router-training step on a backend (see train-step.h). Layer by layer:
//   h1 = rms_norm(x) → q, k, v → [q/k norm] → router(k pre-RoPE) → z → rope → att = z·O_1 + (1−z)·O_2
//   → x2 = x + att·Wo^T → x3 = x2 + FFN(rms_norm(x2))
// where O_1 is the mode of FA-routed heads (FA, or XA for xa-ssa) and O_2 that of SA-routed heads.
// The backward walks the same chain in reverse from dL/dx3 with the ops of backward.h.
#include "train/train-step.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "train/backward.h"

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

namespace {
uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
}  // namespace

float router_noise(uint64_t key, int layer, int head) {
    const uint64_t r = splitmix64(splitmix64(key ^ (uint64_t(layer) << 32)) ^ uint64_t(head));
    const double u = (double(r >> 11) + 0.5) * 0x1.0p-53;  // in (0, 1)
    return float(std::log(u) - std::log1p(-u));
}

const char* category_name(int c) { return c == kSensitive ? "sensitive" : c == kRobust ? "robust" : "?"; }

TrainSample make_sample(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer, int category) {
    ELASTIC_ASSERT(!prompt.empty() && !answer.empty());
    TrainSample s;
    s.category = category;
    s.tokens = prompt;
    s.tokens.insert(s.tokens.end(), answer.begin(), answer.end());
    s.prompt_len = int64_t(prompt.size());
    s.targets.assign(s.tokens.size(), -1);
    for (size_t t = prompt.size() - 1; t + 1 < s.tokens.size(); ++t) s.targets[t] = s.tokens[t + 1];
    return s;
}

namespace {

// Backend buffers of one step, released together.
class Buffers {
public:
    explicit Buffers(Backend& be) : be_(be) {}
    ~Buffers() {
        for (Buf b : all_) be_.release(b);
    }
    Buffers(const Buffers&) = delete;
    Buffers& operator=(const Buffers&) = delete;
    Buf get(size_t n) {
        all_.push_back(be_.alloc(std::max<size_t>(n, 1), DType::F32));
        return all_.back();
    }

private:
    Backend& be_;
    std::vector<Buf> all_;
};

// Everything one layer's forward computes; rebuilt from x in the backward.
struct LayerActs {
    Buf h1;              // [T, D] rms_norm(x)
    Buf q, k, v;         // [T, Hq, d], [T, H, d], [T, H, d] projections (before q/k norm)
    Buf qn, kn;          // after q/k norm (= q, k without it); kn is the router's input
    Buf qr, kr;          // after RoPE
    RouterActs ra;
    std::vector<float> z;          // [H] forward value of z
    LayerPlan p1, p2;              // modes of the z = 1 and z = 0 sides
    Buf o1, o2, lse1, lse2, att;   // [T, Hq, d], [T, Hq], att = mixed output
    Buf x2, h2;          // [T, D] residual after attention, rms_norm(x2)
    Buf gate, up, s;     // [T, F]
};

// Gradient scratch of the backward.
struct GradBufs {
    Buf ds, dg, du, dh, datt, dq, dk, dv, tq, tk;
};

struct Ctx {
    const Engine& e;
    Backend& be;
    const ModelConfig& c;
    const StepOptions& o;
    int64_t T;
    int64_t router_T;  // rows the router pools over (the prompt's)
    std::vector<int32_t> pos;
    AttnShape shape;
};

void alloc_acts(Buffers& B, const Ctx& cx, LayerActs& a) {
    const ModelConfig& c = cx.c;
    const size_t T = size_t(cx.T), D = size_t(c.d_model), F = size_t(c.d_ff);
    const size_t nq = T * size_t(c.n_head) * size_t(c.head_dim), nk = T * size_t(c.n_kv_head) * size_t(c.head_dim);
    a.h1 = B.get(T * D);
    a.q = B.get(nq);
    a.k = B.get(nk);
    a.v = B.get(nk);
    a.qn = c.qk_norm ? B.get(nq) : a.q;
    a.kn = c.qk_norm ? B.get(nk) : a.k;
    a.qr = B.get(nq);
    a.kr = B.get(nk);
    a.o1 = B.get(nq);
    a.o2 = B.get(nq);
    a.att = B.get(nq);
    a.lse1 = B.get(T * size_t(c.n_head));
    a.lse2 = B.get(T * size_t(c.n_head));
    a.x2 = B.get(T * D);
    a.h2 = B.get(T * D);
    a.gate = B.get(T * F);
    a.up = B.get(T * F);
    a.s = B.get(T * F);
}

// both = false (the checkpointing forward, hard z only): one attention call with each head in the
// mode its z selects, as the mix of two paths with weights exactly 0 and 1 is that path.
void layer_forward(const Ctx& cx, const RouterLayer& r, int l, Buf x, Buf out, LayerActs& a, bool both) {
    const ModelConfig& c = cx.c;
    Backend& be = cx.be;
    const Engine::Layer& W = cx.e.layers[size_t(l)];
    const int64_t T = cx.T, D = c.d_model, F = c.d_ff;
    const int Hq = c.n_head, H = c.n_kv_head, hd = c.head_dim;
    const size_t nq = size_t(T) * Hq * hd, nk = size_t(T) * H * hd;
    be.rms_norm(x, *W.attn_norm, a.h1, T, D, c.rms_eps);
    be.matmul(*W.wq, a.h1, a.q, T);
    be.matmul(*W.wk, a.h1, a.k, T);
    be.matmul(*W.wv, a.h1, a.v, T);
    if (c.qk_norm) {
        be.rms_norm(a.q, *W.q_norm, a.qn, T * Hq, hd, c.rms_eps);
        be.rms_norm(a.k, *W.k_norm, a.kn, T * H, hd, c.rms_eps);
    }
    {  // the router runs on the host: it reads 2·window key rows and is a few small GEMVs
        const size_t nr = size_t(cx.router_T) * H * hd;
        std::vector<float> kh(nr);
        be.download(kh.data(), a.kn, nr);
        RouterNoise noise;
        noise.tau = cx.o.tau;
        if (cx.o.noise_key != 0)
            for (int h = 0; h < H; ++h) noise.logistic.push_back(router_noise(cx.o.noise_key, l, h));
        a.ra = router_forward(r, kh.data(), cx.router_T, H, hd, Router::kDefaultWindow, noise);
    }
    a.z = cx.o.soft_forward ? a.ra.soft : a.ra.z;
    if (cx.o.forced_full) {
        ELASTIC_ASSERT(size_t(l) < cx.o.forced_full->size() && (*cx.o.forced_full)[size_t(l)].size() == size_t(H));
        for (int h = 0; h < H; ++h) a.z[size_t(h)] = (*cx.o.forced_full)[size_t(l)][size_t(h)] ? 1.0f : 0.0f;
    }
    be.copy(a.qr, a.qn, nq);
    be.copy(a.kr, a.kn, nk);
    be.rope(a.qr, T, Hq, hd, cx.pos.data(), *cx.e.inv_freq);
    be.rope(a.kr, T, H, hd, cx.pos.data(), *cx.e.inv_freq);
    const TrainConfig tc = cx.o.config;
    a.p1 = LayerPlan{};
    a.p2 = LayerPlan{};
    a.p1.mode.assign(size_t(H), tc == TrainConfig::XA_SSA ? HeadMode::XA : HeadMode::FA);
    a.p2.mode.assign(size_t(H), tc == TrainConfig::FA_XA ? HeadMode::XA : HeadMode::SSA);
    for (LayerPlan* p : {&a.p1, &a.p2})
        if (p->mode[0] == HeadMode::XA) be.xa_fill_plan(a.qr, a.kr, T, Hq, H, hd, cx.o.xa, *p);
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
        be.attn_forward_lse(cx.shape, sel, a.qr, a.kr, a.v, a.att, a.lse1);
    } else {
        be.attn_forward_lse(cx.shape, a.p1, a.qr, a.kr, a.v, a.o1, a.lse1);
        be.attn_forward_lse(cx.shape, a.p2, a.qr, a.kr, a.v, a.o2, a.lse2);
        be.mix_heads(a.o1, a.o2, a.z.data(), a.att, T, Hq, H, hd);
    }
    be.matmul(*W.wo, a.att, a.x2, T);
    be.add(a.x2, x, T * D);
    be.rms_norm(a.x2, *W.ffn_norm, a.h2, T, D, c.rms_eps);
    be.matmul(*W.w_gate, a.h2, a.gate, T);
    be.matmul(*W.w_up, a.h2, a.up, T);
    be.swiglu(a.gate, a.up, a.s, T * F);
    be.matmul(*W.w_down, a.s, out, T);
    be.add(out, a.x2, T * D);
}

// dx: in dL/d(layer output), out dL/d(layer input). dz_reg: the λ terms' gradient per z.
void layer_backward(const Ctx& cx, const RouterLayer& r, int l, Buf x, const LayerActs& a, float dz_reg, Buf dx,
                    GradBufs& g, RouterLayer& grad) {
    const ModelConfig& c = cx.c;
    Backend& be = cx.be;
    const Engine::Layer& W = cx.e.layers[size_t(l)];
    const int64_t T = cx.T, D = c.d_model, F = c.d_ff;
    const int Hq = c.n_head, H = c.n_kv_head, hd = c.head_dim;
    const size_t nq = size_t(T) * Hq * hd, nk = size_t(T) * H * hd;
    // FFN: x3 = x2 + down(swiglu(gate(h2), up(h2)))
    be.matmul_dx(*W.w_down, dx, g.ds, T, false);
    be.swiglu_backward(a.gate, a.up, g.ds, g.dg, g.du, T * F);
    be.matmul_dx(*W.w_gate, g.dg, g.dh, T, false);
    be.matmul_dx(*W.w_up, g.du, g.dh, T, true);
    be.rms_norm_backward(a.x2, *W.ffn_norm, g.dh, dx, T, D, c.rms_eps, true);  // dx = dL/dx2
    // Attention: x2 = x + att·Wo^T, att = z·o1 + (1 − z)·o2
    be.matmul_dx(*W.wo, dx, g.datt, T, false);
    std::vector<double> dzd(static_cast<size_t>(H));
    be.mix_heads_dw(g.datt, a.o1, a.o2, T, Hq, H, hd, dzd.data());
    std::vector<float> dz(static_cast<size_t>(H));
    for (int h = 0; h < H; ++h) dz[size_t(h)] = float(dzd[size_t(h)]) + dz_reg;
    be.zero(g.dq, nq);
    be.zero(g.dk, nk);
    be.zero(g.dv, nk);
    for (int side = 0; side < 2; ++side) {
        std::vector<float> coef(static_cast<size_t>(H));
        bool any = false;
        for (int h = 0; h < H; ++h) {
            coef[size_t(h)] = side == 0 ? a.z[size_t(h)] : 1.0f - a.z[size_t(h)];
            any |= coef[size_t(h)] != 0.0f;
        }
        if (!any) continue;  // every head weights this side by exactly 0
        be.attn_backward(cx.shape, side == 0 ? a.p1 : a.p2, a.qr, a.kr, a.v, side == 0 ? a.o1 : a.o2,
                         side == 0 ? a.lse1 : a.lse2, g.datt, g.dq, g.dk, g.dv, coef.data());
    }
    be.rope_backward(g.dq, T, Hq, hd, cx.pos.data(), *cx.e.inv_freq);
    be.rope_backward(g.dk, T, H, hd, cx.pos.data(), *cx.e.inv_freq);
    {  // the router's share of dk (its pooled rows), computed on the host
        std::vector<float> dkr(nk, 0.0f);
        router_backward(r, a.ra, dz.data(), grad, dkr.data());
        be.upload(g.tk, dkr.data(), nk);
        be.add(g.dk, g.tk, int64_t(nk));
    }
    Buf dq = g.dq, dk = g.dk;
    if (c.qk_norm) {
        be.rms_norm_backward(a.q, *W.q_norm, g.dq, g.tq, T * Hq, hd, c.rms_eps, false);
        be.rms_norm_backward(a.k, *W.k_norm, g.dk, g.tk, T * H, hd, c.rms_eps, false);
        dq = g.tq;
        dk = g.tk;
    }
    be.matmul_dx(*W.wq, dq, g.dh, T, false);
    be.matmul_dx(*W.wk, dk, g.dh, T, true);
    be.matmul_dx(*W.wv, g.dv, g.dh, T, true);
    be.rms_norm_backward(x, *W.attn_norm, g.dh, dx, T, D, c.rms_eps, true);
}

// The largest |a − b| and |a| over the last rows of two [T, D] buffers (the recompute check).
std::pair<float, float> tail_diff(Backend& be, Buf a, Buf b, int64_t T, int64_t D) {
    const int64_t rows = std::min<int64_t>(T, 8);
    std::vector<float> ha(size_t(rows * D)), hb(size_t(rows * D));
    be.download(ha.data(), a.at((T - rows) * D), ha.size());
    be.download(hb.data(), b.at((T - rows) * D), hb.size());
    float diff = 0, mag = 0;
    for (size_t i = 0; i < ha.size(); ++i) {
        diff = std::max(diff, std::fabs(ha[i] - hb[i]));
        mag = std::max(mag, std::fabs(hb[i]));
    }
    return {diff, mag};
}

// h extended (FNV-1a) by the XA block lists of plan: their offsets and block ids in order.
uint64_t hash_xa_lists(const LayerPlan& plan, uint64_t h) {
    if (plan.xa.empty()) return h;
    if (h == 0) h = 14695981039346656037ull;
    auto mix = [&h](int64_t v) {
        for (int i = 0; i < 8; ++i) {
            h ^= uint64_t(v >> (8 * i)) & 0xffu;
            h *= 1099511628211ull;
        }
    };
    for (const BlockList& b : plan.xa) {
        mix(int64_t(b.offsets.size()));
        for (int64_t o : b.offsets) mix(o);
        for (int32_t k : b.blocks) mix(k);
    }
    return h;
}

StepResult run(const Engine& e, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
               double lambda2, double target, const StepOptions& o, std::vector<RouterLayer>* grads) {
    const Model& m = e.model;
    const ModelConfig& c = m.config;
    Backend& be = e.backend;
    const int L = c.n_layer, H = c.n_kv_head;
    const int64_t T = int64_t(s.tokens.size()), D = c.d_model;
    if (T < 2) fail("training sample of %lld tokens: need at least 2", (long long)T);
    if (int(routers.size()) != L) fail("training: %zu routers for a model of %d layers", routers.size(), L);
    if (be.attn_type() != DType::F32)
        fail("training runs in fp32: the %s backend holds the model in another precision (use --precision f32)",
             be.name());
    ELASTIC_ASSERT(s.targets.size() == s.tokens.size());
    for (int32_t t : s.tokens)
        if (t < 0 || t >= c.vocab)
            fail("training sample%s: token id %d outside the model's vocabulary of %d (tokenizer and model differ?)",
                 s.line > 0 ? strprintf(" of line %lld", (long long)s.line).c_str() : "", t, c.vocab);
    if (s.prompt_len < 0 || s.prompt_len > T)
        fail("training sample: a prompt of %lld tokens in %lld", (long long)s.prompt_len, (long long)T);
    Ctx cx{e, be, c, o, T, s.prompt_len > 0 ? s.prompt_len : T, {}, {}};
    cx.pos.resize(size_t(T));
    for (int64_t t = 0; t < T; ++t) cx.pos[size_t(t)] = int32_t(t);
    cx.shape.T = T;
    cx.shape.n_head = c.n_head;
    cx.shape.n_kv_head = H;
    cx.shape.head_dim = c.head_dim;
    cx.shape.scale = 1.0f / std::sqrt(float(c.head_dim));
    cx.shape.win = o.win;
    cx.shape.xa_block = o.xa.block;

    Buffers B(be);
    LayerActs a;
    alloc_acts(B, cx, a);
    // Forward, keeping each layer's input residual only.
    std::vector<Buf> xs(size_t(L) + 1);
    for (Buf& x : xs) x = B.get(size_t(T * D));
    be.embedding(*e.tok_embd, s.tokens.data(), T, xs[0]);
    double zsum = 0;
    uint64_t xa_hash = 0;
    for (int l = 0; l < L; ++l) {
        layer_forward(cx, routers[size_t(l)], l, xs[size_t(l)], xs[size_t(l) + 1], a, o.soft_forward);
        for (float z : a.z) zsum += z;
        for (const LayerPlan* p : {&a.p1, &a.p2}) xa_hash = hash_xa_lists(*p, xa_hash);
        if (o.pooled) {
            if (o.pooled->size() < size_t(L)) o.pooled->resize(size_t(L));
            std::vector<float>& p = (*o.pooled)[size_t(l)];
            p.insert(p.end(), a.ra.x.begin(), a.ra.x.end());
        }
    }
    StepResult r;
    r.xa_selection = xa_hash;
    const double n_heads = double(L) * H;
    r.omega = 1.0 - zsum / n_heads;
    const double dev = r.omega - target;
    r.dlambda1 = std::fabs(dev);
    r.dlambda2 = dev * dev;
    r.reg_loss = lambda1 * r.dlambda1 + lambda2 * r.dlambda2;
    Buf hN = a.h1, dhN = a.h2;  // free until the backward's first layer
    be.rms_norm(xs[size_t(L)], *e.out_norm, hN, T, D, c.rms_eps);
    const CrossEntropy ce = be.cross_entropy(*e.output, hN, s.targets.data(), T, dhN);
    r.lm_loss = ce.loss;
    r.answer_tokens = ce.count;
    if (!grads) return r;

    // Backward. dΩ/dz = −1/(L·H); d reg/dΩ = λ1·sign(Ω − t) + 2·λ2·(Ω − t).
    const double dreg = lambda1 * double((dev > 0) - (dev < 0)) + 2.0 * lambda2 * dev;
    const float dz_reg = float(-dreg / n_heads);
    const size_t F = size_t(c.d_ff), nq = size_t(T) * c.n_head * c.head_dim, nk = size_t(T) * H * c.head_dim;
    GradBufs g;
    g.ds = B.get(size_t(T) * F);
    g.dg = B.get(size_t(T) * F);
    g.du = B.get(size_t(T) * F);
    g.dh = B.get(size_t(T * D));
    g.datt = B.get(nq);
    g.dq = B.get(nq);
    g.dk = B.get(nk);
    g.dv = B.get(nk);
    g.tq = B.get(nq);
    g.tk = B.get(nk);
    Buf dx = B.get(size_t(T * D)), out = B.get(size_t(T * D));
    be.rms_norm_backward(xs[size_t(L)], *e.out_norm, dhN, dx, T, D, c.rms_eps, false);
    for (int l = L - 1; l >= 0; --l) {
        layer_forward(cx, routers[size_t(l)], l, xs[size_t(l)], out, a, true);
        // The recomputation (both paths, mixed) must reproduce the checkpointing forward (one path).
        const auto [diff, mag] = tail_diff(be, out, xs[size_t(l) + 1], T, D);
        ELASTIC_ASSERT_MSG(diff <= 1e-4f * (1.0f + mag), "train_step: the recomputed layer differs from its forward");
        layer_backward(cx, routers[size_t(l)], l, xs[size_t(l)], a, dz_reg, dx, g, (*grads)[size_t(l)]);
    }
    return r;
}

}  // namespace

StepResult train_step(const Engine& engine, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
                      double lambda2, double target, const StepOptions& o, std::vector<RouterLayer>& grads) {
    ELASTIC_ASSERT(grads.size() == routers.size());
    return run(engine, routers, s, lambda1, lambda2, target, o, &grads);
}

StepResult train_loss(const Engine& engine, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
                      double lambda2, double target, const StepOptions& o) {
    return run(engine, routers, s, lambda1, lambda2, target, o, nullptr);
}

}  // namespace elastic::train
