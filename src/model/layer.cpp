// The layer function: one transformer layer over the n new tokens of a forward() call, whatever n
// and wherever they start. Prefill (the first call) routes, plans and runs the hybrid attention
// over the whole prompt and fills the layer's KV cache; later calls append each token to the cache
// and decode it. The attention step records its own statistics (AttentionStats). The steps
// themselves (layer.h) are shared with the tensor-parallel forward (src/dist/tensor-parallel.cpp).
#include "model/layer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/model.h"

namespace elastic {

void project_qkv(Backend& be, const Backend::Matrix& wq, const Backend::Matrix& wk, const Backend::Matrix& wv,
                 const Backend::Vector* q_norm, const Backend::Vector* k_norm, float eps, Buf h, Buf q, Buf k, Buf v,
                 int64_t n, const HeadShape& s) {
    be.matmul(wq, h, q, n);  // q [n, n_head, hd]
    be.matmul(wk, h, k, n);  // k [n, n_kv_head, hd]
    be.matmul(wv, h, v, n);  // v [n, n_kv_head, hd]
    qk_norms(be, q_norm, k_norm, eps, q, k, n, s);
}

RouterDecision route_layer(Backend& be, const Backend::RouterWeights* rw, int window, Buf k, int64_t T, int n_kv_head,
                           int head_dim, AttentionStats& stats) {
    RouterDecision decision;
    if (!rw) {  // a layer without router weights keeps full attention
        decision.full.assign(size_t(n_kv_head), 1);
        decision.margin.assign(size_t(n_kv_head), 1e30f);
        return decision;
    }
    be.sync();  // the time below is the router's own, not the queued projections'
    const double t0 = stats_clock();
    const RouterLayer& rl = *rw->layer;
    std::vector<float> logits(size_t(n_kv_head) * size_t(rl.rh4.out));
    be.router_logits(*rw, k, T, n_kv_head, head_dim, window, logits.data());
    decision = Router::decision(rl, std::move(logits), n_kv_head);
    stats.router_seconds += stats_clock() - t0;
    return decision;
}

std::unique_ptr<Backend::LayerCache> prefill_attention(Backend& be, const Backend::Vector& inv_freq, Buf q, Buf k, Buf v,
                                                       Buf att, int64_t T, const int32_t* pos, const HeadShape& s,
                                                       LayerPlan& plan, const AttentionSpec& spec, int64_t capacity,
                                                       AttentionStats& stats) {
    const int hd = s.head_dim;
    const float scale = 1.0f / std::sqrt(float(hd));
    be.rope(q, T, s.n_head, hd, pos, inv_freq);
    be.rope(k, T, s.n_kv_head, hd, pos, inv_freq);
    const bool any_xa = std::find(plan.mode.begin(), plan.mode.end(), HeadMode::XA) != plan.mode.end();
    be.sync();  // (GPU: the times below are of the attention's own kernels)
    const double t0 = stats_clock();
    if (any_xa) {
        be.xa_prefill_plan(q, k, T, s.n_head, s.n_kv_head, hd, spec.xa, plan);
        be.sync();  // for the time below only: on the GPU the plan stays on the device either way
    }
    const double t1 = stats_clock();
    be.attn_hybrid_prefill(q, k, v, att, T, s.n_head, s.n_kv_head, hd, plan, spec.win, spec.xa.block, scale);
    be.sync();
    if (any_xa) be.xa_finish_plan(plan);
    stats.xa_seconds += t1 - t0;
    stats.attention_seconds += stats_clock() - t1;
    std::unique_ptr<Backend::LayerCache> cache = be.new_layer_cache(plan, spec.win, capacity, s.n_kv_head, hd);
    be.cache_store_prefill(*cache, k, v, T);
    return cache;
}

std::unique_ptr<Backend::LayerCache> prefill_attention_routed(Backend& be, const Backend::Vector& inv_freq,
                                                              const Backend::RouterWeights& rw, int window,
                                                              const Backend::RouteRule& rule, Buf q, Buf k, Buf v,
                                                              Buf att, int64_t T, const int32_t* pos, const HeadShape& s,
                                                              LayerPlan& plan, RouterDecision& decision,
                                                              const AttentionSpec& spec, int64_t capacity,
                                                              AttentionStats& stats,
                                                              std::vector<std::pair<int, int>>& attn_marks) {
    const int hd = s.head_dim;
    const float scale = 1.0f / std::sqrt(float(hd));
    be.route_prefill(rw, k, T, s.n_kv_head, hd, window, rule, plan);  // reads the pre-RoPE keys
    be.rope(q, T, s.n_head, hd, pos, inv_freq);
    be.rope(k, T, s.n_kv_head, hd, pos, inv_freq);
    const int a0 = be.mark();
    be.attn_hybrid_prefill(q, k, v, att, T, s.n_head, s.n_kv_head, hd, plan, spec.win, spec.xa.block, scale);
    attn_marks.push_back({a0, be.mark()});
    stats.router_seconds += be.route_result(plan, decision);  // the attention runs on meanwhile
    std::unique_ptr<Backend::LayerCache> cache = be.new_layer_cache(plan, spec.win, capacity, s.n_kv_head, hd);
    be.cache_store_prefill(*cache, k, v, T);
    return cache;
}

void qk_norms(Backend& be, const Backend::Vector* q_norm, const Backend::Vector* k_norm, float eps, Buf q, Buf k,
              int64_t n, const HeadShape& s) {
    if (!q_norm) return;
    be.rms_norm(q, *q_norm, q, n * s.n_head, s.head_dim, eps);
    be.rms_norm(k, *k_norm, k, n * s.n_kv_head, s.head_dim, eps);
}

void decode_attention(Backend& be, const Backend::Vector& inv_freq, Buf q, Buf k, Buf v, Buf att, int64_t n,
                      const int32_t* pos, Backend::LayerCache* const* caches, const HeadShape& s,
                      const Backend::Vector* q_norm, const Backend::Vector* k_norm, float eps) {
    const int hd = s.head_dim;
    const int64_t qd = int64_t(s.n_head) * hd, kvd = int64_t(s.n_kv_head) * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    // Rows of one sequence must each attend before the next is appended (a later row may take an
    // SSA ring slot an earlier one still sees); rows of distinct sequences may all be appended first.
    bool distinct = true;
    for (int64_t t = 1; t < n && distinct; ++t)
        for (int64_t u = 0; u < t; ++u) distinct = distinct && caches[t] != caches[u];
    if (distinct) {
        be.qk_norm_rope_append(q, k, v, q_norm, k_norm, eps, n, s.n_head, s.n_kv_head, hd, pos, inv_freq, caches);
        for (int64_t t = 0; t < n; ++t) be.attn_decode(q.at(t * qd), *caches[t], pos[t], att.at(t * qd), s.n_head, scale);
        return;
    }
    be.qk_norm_rope(q, k, q_norm, k_norm, eps, n, s.n_head, s.n_kv_head, hd, pos, inv_freq);
    for (int64_t t = 0; t < n; ++t) {
        be.cache_append(*caches[t], k.at(t * kvd), v.at(t * kvd), pos[t]);
        be.attn_decode(q.at(t * qd), *caches[t], pos[t], att.at(t * qd), s.n_head, scale);
    }
}

void ffn_rows(Backend& be, const Backend::Vector& norm, const Backend::Matrix& w_gate, const Backend::Matrix& w_up,
              const Backend::Matrix& w_down, float eps, Buf x, Buf h, Buf gate, Buf up, int64_t n, int64_t D,
              int64_t chunk, const std::function<void(Buf, int64_t)>& reduce) {
    for (int64_t r = 0; r < n; r += chunk) {  // FFN in chunks of rows
        const int64_t m = std::min(chunk, n - r);
        const Buf xr = x.at(r * D), hr = h.at(r * D);
        be.norm_swiglu(xr, norm, eps, hr, w_gate, w_up, gate, up, m, D);  // gate [m, d_ff]
        if (reduce) {
            be.matmul(w_down, gate, hr, m);
            reduce(hr, m);
            be.add(xr, hr, m * D);
        } else {
            be.matmul_add(w_down, gate, xr, hr, m);
        }
    }
}

namespace {

HeadShape heads_of(const ModelConfig& c) { return {c.n_head, c.n_kv_head, c.head_dim}; }

// The layer function: one transformer layer over n rows. `attend` turns q, k, v into att (the
// prefill's hybrid attention, or decode against the KV caches); everything else is per row.
template <class Attend, class Hook>
void layer_rows(const Engine& e, int l, const RowBuffers& b, int64_t n, int64_t chunk, Attend&& attend, Hook&& hook) {
    const ModelConfig& c = e.model.config;
    Backend& be = e.backend;
    const Engine::Layer& L = e.layers[size_t(l)];
    const int64_t D = c.d_model, hd = c.head_dim;
    const Backend::MatmulOut qkv[3] = {{L.wq.get(), b.q}, {L.wk.get(), b.k}, {L.wv.get(), b.v}};
    be.norm_matmuls(b.x, *L.attn_norm, c.rms_eps, b.h, n, D, qkv, 3);  // q, k, v before the per-head norms
    attend();  // att [n, n_head, hd]
    hook("attn_out", b.att, int64_t(c.n_head) * hd);
    be.matmul_add(*L.wo, b.att, b.x, b.h, n);  // x += att @ wo^T
    ffn_rows(be, *L.ffn_norm, *L.w_gate, *L.w_up, *L.w_down, c.rms_eps, b.x, b.h, b.gate, b.up, n, D, chunk, nullptr);
    hook("layer_out", b.x, D);
}

}  // namespace

void Session::layer(int l, int64_t n, const int32_t* pos) {
    layer_rows(e_, l, b_, n, chunk_, [&] { attention(l, n, pos); },
               [&](const char* name, Buf buf, int64_t width) {
                   if (hook_) hook_(l, name, buf, n, width);
               });
}

void Session::attention(int l, int64_t n, const int32_t* pos) {
    const int H = c_.n_kv_head, hd = c_.head_dim;
    const Engine::Layer& L = e_.layers[size_t(l)];
    if (pos_ > 0) {  // decode: each new token joins the cache, then attends to it
        const std::vector<Backend::LayerCache*> caches(size_t(n), caches_[size_t(l)].get());
        decode_attention(be_, *e_.inv_freq, b_.q, b_.k, b_.v, b_.att, n, pos, caches.data(), heads_of(c_),
                         L.q_norm.get(), L.k_norm.get(), c_.rms_eps);
        return;
    }
    // Prefill. The router reads the pre-RoPE keys (DESIGN.md §1.1), after the per-head norms.
    qk_norms(be_, L.q_norm.get(), L.k_norm.get(), c_.rms_eps, b_.q, b_.k, n, heads_of(c_));
    RouterDecision decision;
    const bool routed = spec_.needs_router() && L.router;
    LayerPlan& plan = plans_[size_t(l)];
    const auto fa_or_ssa = [](HeadMode m) { return m == HeadMode::FA || m == HeadMode::SSA; };
    if (routed && fa_or_ssa(spec_.full_mode) && fa_or_ssa(spec_.sparse_mode) && H <= 64 && be_.routes_on_device()) {
        Backend::RouteRule rule;
        rule.full_mode = spec_.full_mode;
        rule.sparse_mode = spec_.sparse_mode;
        if (spec_.kind == AttentionSpec::Kind::MSR) rule.n_sparse = msr_sparse_heads(spec_.msr, H, sparse_so_far_, int64_t(l) * H);
        caches_.push_back(prefill_attention_routed(be_, *e_.inv_freq, *L.router, e_.router->window(), rule, b_.q, b_.k,
                                                   b_.v, b_.att, n, pos, heads_of(c_), plan, decision, spec_, cap_,
                                                   stats_, attn_marks_));
    } else {
        if (spec_.needs_router()) decision = route_layer(be_, L.router.get(), e_.router->window(), b_.k, n, H, hd, stats_);
        plan.mode = choose_modes(spec_, l, H, c_.n_layer, spec_.needs_router() ? &decision : nullptr, sparse_so_far_,
                                 int64_t(l) * H);
        caches_.push_back(prefill_attention(be_, *e_.inv_freq, b_.q, b_.k, b_.v, b_.att, n, pos, heads_of(c_), plan,
                                            spec_, cap_, stats_));
    }
    for (HeadMode m : plan.mode) sparse_so_far_ += spec_.counts_as_sparse(m);
    stats_.record_layer(plan, spec_, n, routed ? decision.prob_fa : std::vector<float>{});
}

DecodeBatch::DecodeBatch(const Engine& engine)
    : e_(engine), max_rows_(std::max(1, engine.backend.max_stable_decode_rows())) {}

DecodeBatch::~DecodeBatch() {
    b_.release(e_.backend);
    if (logits_) e_.backend.release(logits_);
}

void DecodeBatch::run(const std::vector<Session*>& ss, const int32_t* ids) {
    const int64_t n = int64_t(ss.size());
    if (n == 0) return;
    if (n > max_rows_) fail("DecodeBatch: %lld sessions, more than %d", (long long)n, max_rows_);
    const ModelConfig& c = e_.model.config;
    Backend& be = e_.backend;
    for (int64_t i = 0; i < n; ++i) {
        const Session& s = *ss[size_t(i)];
        if (&s.e_ != &e_) fail("DecodeBatch: a session of another engine");
        if (s.pos_ == 0) fail("DecodeBatch: a session has not been prefilled");
        if (s.pos_ + 1 > s.cap_) fail("%lld tokens exceed the session's context of %lld", (long long)(s.pos_ + 1), (long long)s.cap_);
        if (ids[i] < 0 || ids[i] >= c.vocab) fail("token id %d is outside the vocabulary (%d)", ids[i], c.vocab);
    }
    if (n == 1 && be.graphs()) {  // the session's own step, recorded once and replayed (same bits)
        ss[0]->forward(ids, 1);
        return;
    }
    if (!logits_) {  // sized once, for the largest batch
        b_.alloc(be, c, max_rows_, max_rows_);
        logits_ = be.alloc(size_t(int64_t(max_rows_) * c.vocab), DType::F32);
    }
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(ss[size_t(i)]->pos_);
    be.embedding(*e_.tok_embd, ids, n, b_.x);
    std::vector<Backend::LayerCache*> caches(static_cast<size_t>(n));
    const HeadShape heads = heads_of(c);
    for (int l = 0; l < c.n_layer; ++l) {
        for (int64_t i = 0; i < n; ++i) caches[size_t(i)] = ss[size_t(i)]->caches_[size_t(l)].get();
        layer_rows(
            e_, l, b_, n, n,
            [&] {
                const Engine::Layer& L = e_.layers[size_t(l)];
                decode_attention(be, *e_.inv_freq, b_.q, b_.k, b_.v, b_.att, n, pos.data(), caches.data(), heads,
                                 L.q_norm.get(), L.k_norm.get(), c.rms_eps);
            },
            [](const char*, Buf, int64_t) {});
    }
    be.rms_norm(b_.x, *e_.out_norm, b_.h, n, c.d_model, c.rms_eps);
    be.matmul(*e_.output, b_.h, logits_, n);
    for (int64_t i = 0; i < n; ++i) {
        Session& s = *ss[size_t(i)];
        s.pos_ += 1;
        s.sample_logits_ = logits_.at(i * c.vocab);
        if (s.host_logits_) be.download(s.last_logits_.data(), s.sample_logits_, size_t(c.vocab));
    }
}

}  // namespace elastic
