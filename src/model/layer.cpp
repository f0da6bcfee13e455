// The layer function: one transformer layer over the n new tokens of a forward() call, whatever n
// and wherever they start. Prefill (the first call) routes, plans and runs the hybrid attention
// over the whole prompt and fills the layer's KV cache; later calls append each token to the cache
// and decode it. The attention step records its own statistics (AttentionStats).
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/model.h"

namespace elastic {

void Session::layer(int l, int64_t n, const int32_t* pos) {
    const Engine::Layer& L = e_.layers[size_t(l)];
    const int64_t D = c_.d_model, hd = c_.head_dim;
    be_.rms_norm(x_, *L.attn_norm, h_, n, D, c_.rms_eps);
    be_.matmul(*L.wq, h_, q_, n);  // q [n, n_head, hd]
    be_.matmul(*L.wk, h_, k_, n);  // k [n, n_kv_head, hd]
    be_.matmul(*L.wv, h_, v_, n);  // v [n, n_kv_head, hd]
    if (c_.qk_norm) {
        be_.rms_norm(q_, *L.q_norm, q_, n * c_.n_head, hd, c_.rms_eps);
        be_.rms_norm(k_, *L.k_norm, k_, n * c_.n_kv_head, hd, c_.rms_eps);
    }
    attention(l, n, pos);  // att [n, n_head, hd]
    if (hook_) hook_(l, "attn_out", att_, n, int64_t(c_.n_head) * hd);
    be_.matmul(*L.wo, att_, h_, n);  // h [n, D]
    be_.add(x_, h_, n * D);
    for (int64_t r = 0; r < n; r += chunk_) {  // FFN in chunks of rows
        const int64_t m = std::min(chunk_, n - r);
        const Buf xr = x_.at(r * D), hr = h_.at(r * D);
        be_.rms_norm(xr, *L.ffn_norm, hr, m, D, c_.rms_eps);
        be_.matmul(*L.w_gate, hr, gate_, m);  // [m, d_ff]
        be_.matmul(*L.w_up, hr, up_, m);
        be_.swiglu(gate_, up_, gate_, m * c_.d_ff);
        be_.matmul(*L.w_down, gate_, hr, m);
        be_.add(xr, hr, m * D);
    }
    if (hook_) hook_(l, "layer_out", x_, n, D);
}

void Session::attention(int l, int64_t n, const int32_t* pos) {
    const int H = c_.n_kv_head, hd = c_.head_dim;
    const int64_t qd = int64_t(c_.n_head) * hd, kvd = int64_t(H) * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    if (pos_ > 0) {  // decode: each new token joins the cache, then attends to it
        be_.rope(q_, n, c_.n_head, hd, pos, *e_.inv_freq);
        be_.rope(k_, n, H, hd, pos, *e_.inv_freq);
        Backend::LayerCache& cache = *caches_[size_t(l)];
        for (int64_t t = 0; t < n; ++t) {
            be_.cache_append(cache, k_.at(t * kvd), v_.at(t * kvd), pos[t]);
            be_.attn_decode(q_.at(t * qd), cache, pos[t], att_.at(t * qd), c_.n_head, scale);
        }
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
        be_.router_logits(*L.router, k_, n, H, hd, e_.router->window(), logits.data());
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

    be_.rope(q_, n, c_.n_head, hd, pos, *e_.inv_freq);
    be_.rope(k_, n, H, hd, pos, *e_.inv_freq);
    const bool any_xa = std::find(plan.mode.begin(), plan.mode.end(), HeadMode::XA) != plan.mode.end();
    be_.sync();  // (GPU: the times below are of the attention's own kernels)
    const double t0 = stats_clock();
    if (any_xa) be_.xa_fill_plan(q_, k_, n, c_.n_head, H, hd, spec_.xa, plan);
    const double t1 = stats_clock();
    be_.attn_hybrid_prefill(q_, k_, v_, att_, n, c_.n_head, H, hd, plan, spec_.win, spec_.xa.block, scale);
    be_.sync();
    stats_.xa_seconds += t1 - t0;
    stats_.attention_seconds += stats_clock() - t1;
    caches_.push_back(be_.new_layer_cache(plan, spec_.win, cap_, H, hd));
    be_.cache_store_prefill(*caches_.back(), k_, v_, n);
    stats_.record_layer(plan, spec_, n, routed ? decision.prob_fa : std::vector<float>{});
}

}  // namespace elastic
