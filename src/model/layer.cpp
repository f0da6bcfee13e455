// The layer function: one transformer layer over the n new tokens of a forward() call, whatever n
// and wherever they start. Prefill (the first call) routes, plans and runs the hybrid attention
// over the whole prompt and fills the layer's KV cache; later calls append each token to the cache
// and decode it. The attention step records its own statistics (AttentionStats).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/model.h"

namespace elastic {

namespace {

// The layer function: one transformer layer over n rows. `attend` turns q, k, v into att (the
// prefill's hybrid attention, or decode against the KV caches); everything else is per row.
template <class Attend, class Hook>
void layer_rows(const Engine& e, int l, const RowBuffers& b, int64_t n, int64_t chunk, Attend&& attend, Hook&& hook) {
    const ModelConfig& c = e.model.config;
    Backend& be = e.backend;
    const Engine::Layer& L = e.layers[size_t(l)];
    const int64_t D = c.d_model, hd = c.head_dim;
    be.rms_norm(b.x, *L.attn_norm, b.h, n, D, c.rms_eps);
    be.matmul(*L.wq, b.h, b.q, n);  // q [n, n_head, hd]
    be.matmul(*L.wk, b.h, b.k, n);  // k [n, n_kv_head, hd]
    be.matmul(*L.wv, b.h, b.v, n);  // v [n, n_kv_head, hd]
    if (c.qk_norm) {
        be.rms_norm(b.q, *L.q_norm, b.q, n * c.n_head, hd, c.rms_eps);
        be.rms_norm(b.k, *L.k_norm, b.k, n * c.n_kv_head, hd, c.rms_eps);
    }
    attend();  // att [n, n_head, hd]
    hook("attn_out", b.att, int64_t(c.n_head) * hd);
    be.matmul(*L.wo, b.att, b.h, n);  // h [n, D]
    be.add(b.x, b.h, n * D);
    for (int64_t r = 0; r < n; r += chunk) {  // FFN in chunks of rows
        const int64_t m = std::min(chunk, n - r);
        const Buf xr = b.x.at(r * D), hr = b.h.at(r * D);
        be.rms_norm(xr, *L.ffn_norm, hr, m, D, c.rms_eps);
        be.matmul(*L.w_gate, hr, b.gate, m);  // [m, d_ff]
        be.matmul(*L.w_up, hr, b.up, m);
        be.swiglu(b.gate, b.up, b.gate, m * c.d_ff);
        be.matmul(*L.w_down, b.gate, hr, m);
        be.add(xr, hr, m * D);
    }
    hook("layer_out", b.x, D);
}

// Decode attention: row t (at position pos[t]) joins the cache caches[t] and attends to it. The
// rows of one sequence share a cache; a DecodeBatch gives each row its own sequence's.
void decode_rows(const Engine& e, const RowBuffers& b, int64_t n, const int32_t* pos, Backend::LayerCache* const* caches) {
    const ModelConfig& c = e.model.config;
    Backend& be = e.backend;
    const int H = c.n_kv_head, hd = c.head_dim;
    const int64_t qd = int64_t(c.n_head) * hd, kvd = int64_t(H) * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    be.rope(b.q, n, c.n_head, hd, pos, *e.inv_freq);
    be.rope(b.k, n, H, hd, pos, *e.inv_freq);
    for (int64_t t = 0; t < n; ++t) {
        be.cache_append(*caches[t], b.k.at(t * kvd), b.v.at(t * kvd), pos[t]);
        be.attn_decode(b.q.at(t * qd), *caches[t], pos[t], b.att.at(t * qd), c.n_head, scale);
    }
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
    const float scale = 1.0f / std::sqrt(float(hd));
    if (pos_ > 0) {  // decode: each new token joins the cache, then attends to it
        const std::vector<Backend::LayerCache*> caches(size_t(n), caches_[size_t(l)].get());
        decode_rows(e_, b_, n, pos, caches.data());
        return;
    }
    // Prefill. The router reads the pre-RoPE keys (DESIGN.md §1.1).
    const Engine::Layer& L = e_.layers[size_t(l)];
    RouterDecision decision;
    const bool routed = spec_.needs_router() && L.router;
    if (routed) {
        be_.sync();  // the time below is the router's own, not the queued projections'
        const double t0 = stats_clock();
        const RouterLayer& rl = *L.router->layer;
        std::vector<float> logits(size_t(H) * size_t(rl.rh4.out));
        be_.router_logits(*L.router, b_.k, n, H, hd, e_.router->window(), logits.data());
        decision = Router::decision(rl, std::move(logits), H);
        stats_.router_seconds += stats_clock() - t0;
    } else if (spec_.needs_router()) {  // a layer without router weights keeps full attention
        decision.full.assign(size_t(H), 1);
        decision.margin.assign(size_t(H), 1e30f);
    }
    LayerPlan& plan = plans_[size_t(l)];
    plan.mode = choose_modes(spec_, l, H, c_.n_layer, spec_.needs_router() ? &decision : nullptr, sparse_so_far_,
                             int64_t(l) * H);
    for (HeadMode m : plan.mode) sparse_so_far_ += spec_.counts_as_sparse(m);

    be_.rope(b_.q, n, c_.n_head, hd, pos, *e_.inv_freq);
    be_.rope(b_.k, n, H, hd, pos, *e_.inv_freq);
    const bool any_xa = std::find(plan.mode.begin(), plan.mode.end(), HeadMode::XA) != plan.mode.end();
    be_.sync();  // (GPU: the times below are of the attention's own kernels)
    const double t0 = stats_clock();
    if (any_xa) be_.xa_fill_plan(b_.q, b_.k, n, c_.n_head, H, hd, spec_.xa, plan);
    const double t1 = stats_clock();
    be_.attn_hybrid_prefill(b_.q, b_.k, b_.v, b_.att, n, c_.n_head, H, hd, plan, spec_.win, spec_.xa.block, scale);
    be_.sync();
    stats_.xa_seconds += t1 - t0;
    stats_.attention_seconds += stats_clock() - t1;
    caches_.push_back(be_.new_layer_cache(plan, spec_.win, cap_, H, hd));
    be_.cache_store_prefill(*caches_.back(), b_.k, b_.v, n);
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
    if (!logits_) {  // sized once, for the largest batch
        b_.alloc(be, c, max_rows_, max_rows_);
        logits_ = be.alloc(size_t(int64_t(max_rows_) * c.vocab), DType::F32);
    }
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(ss[size_t(i)]->pos_);
    be.embedding(*e_.tok_embd, ids, n, b_.x);
    std::vector<Backend::LayerCache*> caches(static_cast<size_t>(n));
    for (int l = 0; l < c.n_layer; ++l) {
        for (int64_t i = 0; i < n; ++i) caches[size_t(i)] = ss[size_t(i)]->caches_[size_t(l)].get();
        layer_rows(e_, l, b_, n, n, [&] { decode_rows(e_, b_, n, pos.data(), caches.data()); },
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
