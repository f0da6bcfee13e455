// Hybrid attention for training, CPU reference: a tiled forward that keeps each row's log-sum-exp,
// its FlashAttention-2-style backward, and the mixed FA/SA attention of router training
// (DESIGN.md §1.4). The mask of a head is plan_allows() of its KV head's mode; tiles the mask
// leaves empty are skipped, so the work follows the plan's density. Memory is O(tile) per thread:
// scores are recomputed from q, k and the log-sum-exp, never stored as [T, T].
// The backward runs in two passes so that every output element has one writer (no atomics, the
// result is deterministic): pass 1 over (KV head, key tile) sums dk and dv over the group's query
// heads and every query row; pass 2 over (query head, query tile) sums dq over the key tiles.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "train/backward.h"

namespace elastic::train {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The mask of one KV head.
struct HeadMask {
    HeadMode mode;
    StreamingWindow win;
    const BlockList* xa;
    int64_t block;

    bool allows(int64_t i, int64_t j) const { return plan_allows(mode, win, xa, block, i, j); }

    // False only when no (i, j) of rows [i0, i1) x keys [j0, j1) is allowed (may say true for an
    // empty XA tile: its scores are then all masked).
    bool any(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
        if (j0 > i1 - 1) return false;
        switch (mode) {
            case HeadMode::FA:
                return true;
            case HeadMode::SSA:
                if (j0 < win.sink || j1 - 1 >= i0) return true;
                return i0 - (j1 - 1) < win.local;
            case HeadMode::XA:
                for (int64_t qb = i0 / block; qb <= (i1 - 1) / block; ++qb)
                    for (int64_t kb = j0 / block; kb <= std::min((j1 - 1) / block, qb); ++kb) {
                        auto b = xa->blocks.begin() + xa->offsets[size_t(qb)];
                        auto e = xa->blocks.begin() + xa->offsets[size_t(qb) + 1];
                        if (std::binary_search(b, e, int32_t(kb))) return true;
                    }
                return false;
        }
        return true;
    }
};

HeadMask head_mask(const AttnShape& s, const LayerPlan& plan, int g) {
    const HeadMode m = plan.mode[size_t(g)];
    return {m, s.win, m == HeadMode::XA ? &plan.xa[size_t(g)] : nullptr, s.xa_block};
}

void check_args(const AttnShape& s, const LayerPlan& plan) {
    ELASTIC_ASSERT(s.T >= 0 && s.n_kv_head > 0 && s.n_head % s.n_kv_head == 0 && s.head_dim > 0 && s.tile > 0);
    ELASTIC_ASSERT(plan.mode.size() == size_t(s.n_kv_head));
    ELASTIC_ASSERT(s.win.sink >= 0 && s.win.local >= 1);
    for (int g = 0; g < s.n_kv_head; ++g)
        if (plan.mode[size_t(g)] == HeadMode::XA) {
            ELASTIC_ASSERT(s.xa_block > 0 && plan.xa.size() == size_t(s.n_kv_head));
            ELASTIC_ASSERT(plan.xa[size_t(g)].n_query_blocks() == (s.T + s.xa_block - 1) / s.xa_block);
        }
}

float dot(const float* a, const float* b, int64_t n) {
    float r = 0.0f;
#pragma omp simd reduction(+ : r)
    for (int64_t c = 0; c < n; ++c) r += a[c] * b[c];
    return r;
}

void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) y[c] += a * x[c];
}

// Probabilities p = exp(scale q_i.k_j - lse_i) and ds = p (dO_i.v_j - delta_i) of one query row
// against keys [j0, j1), written to p[0..n), ds[0..n) (0 where masked).
void row_grads(const HeadMask& mk, int64_t i, int64_t j0, int64_t j1, const float* qi, const float* doi, float lse,
               float delta, const float* kg, const float* vg, int64_t ldk, int64_t d, float scale, float* p,
               float* ds) {
    for (int64_t j = j0; j < j1; ++j) {
        const int64_t x = j - j0;
        if (!mk.allows(i, j)) {
            p[x] = ds[x] = 0.0f;
            continue;
        }
        p[x] = std::exp(scale * dot(qi, kg + j * ldk, d) - lse);
        ds[x] = p[x] * (dot(doi, vg + j * ldk, d) - delta);
    }
}

// Gradients of attn_forward_lse under `plan`, scaled per KV head by coef[g] (nullptr: 1) and added
// to dq, dk, dv; heads with coef 0 are skipped.
void backward_impl(const AttnShape& s, const LayerPlan& plan, const float* q, const float* k, const float* v,
                   const float* o, const float* lse, const float* dout, const float* coef, float* dq, float* dk,
                   float* dv) {
    check_args(s, plan);
    const int64_t T = s.T, d = s.head_dim, B = s.tile, nt = (T + B - 1) / B;
    const int Hq = s.n_head, Hkv = s.n_kv_head, group = Hq / Hkv;
    const int64_t ldq = int64_t(Hq) * d, ldk = int64_t(Hkv) * d;
    auto c_of = [&](int g) { return coef ? coef[g] : 1.0f; };

    std::vector<float> delta(size_t(T * Hq));  // [T, Hq] rowsum(dO * O)
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < T; ++i) {
        for (int h = 0; h < Hq; ++h) delta[size_t(i * Hq + h)] = dot(dout + i * ldq + h * d, o + i * ldq + h * d, d);
    }

    // Pass 1: dk, dv of key tile kt of KV head g.
#pragma omp parallel
    {
        const size_t nb = static_cast<size_t>(B);
        std::vector<float> p(nb), ds(nb), dk_t(nb * size_t(d)), dv_t(nb * size_t(d));  // [B], [B, d]
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int g = 0; g < Hkv; ++g)
            for (int64_t kt = 0; kt < nt; ++kt) {
                if (c_of(g) == 0.0f) continue;
                const HeadMask mk = head_mask(s, plan, g);
                const int64_t j0 = kt * B, j1 = std::min(T, j0 + B);
                const float* kg = k + g * d;
                const float* vg = v + g * d;
                std::fill(dk_t.begin(), dk_t.end(), 0.0f);
                std::fill(dv_t.begin(), dv_t.end(), 0.0f);
                for (int h = g * group; h < (g + 1) * group; ++h)
                    for (int64_t qt = kt; qt < nt; ++qt) {
                        const int64_t i0 = qt * B, i1 = std::min(T, i0 + B);
                        if (!mk.any(i0, i1, j0, j1)) continue;
                        for (int64_t i = i0; i < i1; ++i) {
                            const float* qi = q + i * ldq + h * d;
                            const float* doi = dout + i * ldq + h * d;
                            row_grads(mk, i, j0, j1, qi, doi, lse[i * Hq + h], delta[size_t(i * Hq + h)], kg, vg, ldk,
                                      d, s.scale, p.data(), ds.data());
                            for (int64_t x = 0; x < j1 - j0; ++x) {
                                if (p[size_t(x)] == 0.0f) continue;
                                axpy(p[size_t(x)], doi, dv_t.data() + x * d, d);
                                axpy(ds[size_t(x)], qi, dk_t.data() + x * d, d);
                            }
                        }
                    }
                const float c = c_of(g);
                for (int64_t j = j0; j < j1; ++j) {
                    axpy(c * s.scale, dk_t.data() + (j - j0) * d, dk + j * ldk + g * d, d);
                    axpy(c, dv_t.data() + (j - j0) * d, dv + j * ldk + g * d, d);
                }
            }
    }

    // Pass 2: dq of query tile qt of query head h.
#pragma omp parallel
    {
        const size_t nb = static_cast<size_t>(B);
        std::vector<float> p(nb), ds(nb);
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int h = 0; h < Hq; ++h)
            for (int64_t qt = 0; qt < nt; ++qt) {
                const int g = h / group;
                if (c_of(g) == 0.0f) continue;
                const HeadMask mk = head_mask(s, plan, g);
                const int64_t i0 = qt * B, i1 = std::min(T, i0 + B);
                const float* kg = k + g * d;
                const float* vg = v + g * d;
                const float c = c_of(g) * s.scale;
                for (int64_t kt = 0; kt <= qt; ++kt) {
                    const int64_t j0 = kt * B, j1 = std::min(T, j0 + B);
                    if (!mk.any(i0, i1, j0, j1)) continue;
                    for (int64_t i = i0; i < i1; ++i) {
                        const float* qi = q + i * ldq + h * d;
                        row_grads(mk, i, j0, j1, qi, dout + i * ldq + h * d, lse[i * Hq + h], delta[size_t(i * Hq + h)],
                                  kg, vg, ldk, d, s.scale, p.data(), ds.data());
                        float* dqi = dq + i * ldq + h * d;
                        for (int64_t x = 0; x < j1 - j0; ++x)
                            if (ds[size_t(x)] != 0.0f) axpy(c * ds[size_t(x)], kg + (j0 + x) * ldk, dqi, d);
                    }
                }
            }
    }
}

}  // namespace

void attn_forward_lse(const AttnShape& s, const LayerPlan& plan, const float* q, const float* k, const float* v,
                      float* out, float* lse) {
    check_args(s, plan);
    const int64_t T = s.T, d = s.head_dim, B = s.tile, nt = (T + B - 1) / B;
    const int Hq = s.n_head, group = Hq / s.n_kv_head;
    const int64_t ldq = int64_t(Hq) * d, ldk = int64_t(s.n_kv_head) * d;
#pragma omp parallel
    {
        std::vector<float> sc(static_cast<size_t>(B));   // [B] scores of one row against one key tile
        std::vector<float> acc(static_cast<size_t>(d));  // [d] unnormalised output row
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int h = 0; h < Hq; ++h)
            for (int64_t qt = 0; qt < nt; ++qt) {
                const int g = h / group;
                const HeadMask mk = head_mask(s, plan, g);
                const float* kg = k + g * d;
                const float* vg = v + g * d;
                const int64_t i0 = qt * B, i1 = std::min(T, i0 + B);
                for (int64_t i = i0; i < i1; ++i) {
                    const float* qi = q + i * ldq + h * d;
                    float m = kNegInf, l = 0.0f;
                    std::fill(acc.begin(), acc.end(), 0.0f);
                    for (int64_t kt = 0; kt <= qt; ++kt) {
                        const int64_t j0 = kt * B, j1 = std::min(T, j0 + B);
                        if (!mk.any(i, i + 1, j0, j1)) continue;
                        float mt = kNegInf;
                        for (int64_t j = j0; j < j1; ++j) {
                            float& x = sc[size_t(j - j0)];
                            x = mk.allows(i, j) ? s.scale * dot(qi, kg + j * ldk, d) : kNegInf;
                            mt = std::max(mt, x);
                        }
                        if (mt == kNegInf) continue;
                        const float m_new = std::max(m, mt), alpha = std::exp(m - m_new);
                        l *= alpha;
                        for (float& a : acc) a *= alpha;
                        for (int64_t j = j0; j < j1; ++j) {
                            const float x = sc[size_t(j - j0)];
                            if (x == kNegInf) continue;
                            const float pj = std::exp(x - m_new);
                            l += pj;
                            axpy(pj, vg + j * ldk, acc.data(), d);
                        }
                        m = m_new;
                    }
                    ELASTIC_ASSERT(l > 0.0f);  // the diagonal is visible in every mode
                    float* oi = out + i * ldq + h * d;
                    for (int64_t c = 0; c < d; ++c) oi[c] = acc[size_t(c)] / l;
                    lse[i * Hq + h] = m + std::log(l);
                }
            }
    }
}

void attn_backward(const AttnShape& s, const LayerPlan& plan, const float* q, const float* k, const float* v,
                   const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv,
                   const float* coef) {
    backward_impl(s, plan, q, k, v, o, lse, dout, coef, dq, dk, dv);
}

void mixed_attention_forward(const AttnShape& s, const LayerPlan& sparse, const float* q, const float* k,
                             const float* v, const float* z, float* o_fa, float* o_sa, float* lse_fa, float* lse_sa,
                             float* out) {
    LayerPlan fa;
    fa.mode.assign(size_t(s.n_kv_head), HeadMode::FA);
    attn_forward_lse(s, fa, q, k, v, o_fa, lse_fa);
    attn_forward_lse(s, sparse, q, k, v, o_sa, lse_sa);
    const int64_t d = s.head_dim;
    const int group = s.n_head / s.n_kv_head;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < s.T; ++i)
        for (int h = 0; h < s.n_head; ++h) {
            const float zg = z[h / group];
            const int64_t base = (i * s.n_head + h) * d;
            for (int64_t c = 0; c < d; ++c) out[base + c] = zg * o_fa[base + c] + (1.0f - zg) * o_sa[base + c];
        }
}

void mixed_attention_backward(const AttnShape& s, const LayerPlan& sparse, const float* q, const float* k,
                              const float* v, const float* z, const float* o_fa, const float* o_sa, const float* lse_fa,
                              const float* lse_sa, const float* dout, float* dq, float* dk, float* dv, float* dz) {
    const int64_t d = s.head_dim;
    const int Hkv = s.n_kv_head, group = s.n_head / Hkv;
    for (int g = 0; g < Hkv; ++g) {
        double acc = 0;
#pragma omp parallel for schedule(static) reduction(+ : acc)
        for (int64_t i = 0; i < s.T; ++i)
            for (int h = g * group; h < (g + 1) * group; ++h) {
                const int64_t base = (i * s.n_head + h) * d;
                for (int64_t c = 0; c < d; ++c)
                    acc += double(dout[base + c]) * (double(o_fa[base + c]) - double(o_sa[base + c]));
            }
        dz[g] = float(acc);
    }
    LayerPlan fa;
    fa.mode.assign(size_t(Hkv), HeadMode::FA);
    std::vector<float> w_sa(static_cast<size_t>(Hkv));  // [Hkv] 1 - z
    for (int g = 0; g < Hkv; ++g) w_sa[size_t(g)] = 1.0f - z[g];
    backward_impl(s, fa, q, k, v, o_fa, lse_fa, dout, z, dq, dk, dv);
    backward_impl(s, sparse, q, k, v, o_sa, lse_sa, dout, w_sa.data(), dq, dk, dv);
}

}  // namespace elastic::train
