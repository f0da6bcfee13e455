// The forward pass, written once against the Backend op interface.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "attention/hybrid-attention.h"
#include "attention/kv-cache.h"
#include "core/error.h"
#include "model/model.h"

namespace elastic {

namespace {
constexpr int64_t kLogitRows = 64;  // rows of logits computed at once when all are requested

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Session::Session(const Model& model, Backend& backend, int64_t capacity, const AttentionSpec& spec, const Router* router,
                 int64_t chunk)
    : m_(model), be_(backend), cap_(capacity), chunk_(std::max<int64_t>(1, chunk)), spec_(spec), router_(router) {
    const ModelConfig& c = m_.config;
    if (capacity <= 0) fail("context capacity must be positive");
    if (capacity > c.max_ctx) fail("%lld tokens exceed the model's context length of %d", (long long)capacity, c.max_ctx);
    if (spec_.needs_router() && !router_) fail("attention mode '%s' needs a router (--router PATH)", spec_.name.c_str());
    if (router_ && router_->n_layer() != c.n_layer)
        fail("the router has %d layers, the model %d", router_->n_layer(), c.n_layer);
    if (spec_.kind == AttentionSpec::Kind::Static) (void)choose_modes(spec_, 0, c.n_kv_head, c.n_layer, nullptr, 0, 0);
    last_logits_.resize(size_t(c.vocab));
}

Session::~Session() {
    for (float* p : {x_, h_, q_, k_, v_, att_, gate_, up_, logits_})
        if (p) be_.release(p);
}

void Session::reset() {
    pos_ = 0;
    plans_.clear();
    caches_.clear();
    stats_ = AttentionStats{};
}

size_t Session::kv_bytes() const {
    size_t n = 0;
    for (const auto& c : caches_) n += c->bytes();
    return n;
}

void Session::ensure_scratch(int64_t rows, int64_t chunk_rows) {
    const ModelConfig& c = m_.config;
    if (rows > rows_) {
        for (float** p : {&x_, &h_, &q_, &k_, &v_, &att_})
            if (*p) be_.release(*p);
        const int64_t qd = int64_t(c.n_head) * c.head_dim, kvd = int64_t(c.n_kv_head) * c.head_dim;
        x_ = be_.alloc(size_t(rows * c.d_model));
        h_ = be_.alloc(size_t(rows * c.d_model));
        q_ = be_.alloc(size_t(rows * qd));
        att_ = be_.alloc(size_t(rows * qd));
        k_ = be_.alloc(size_t(rows * kvd));
        v_ = be_.alloc(size_t(rows * kvd));
        rows_ = rows;
    }
    if (chunk_rows > chunk_rows_) {
        for (float** p : {&gate_, &up_})
            if (*p) be_.release(*p);
        gate_ = be_.alloc(size_t(chunk_rows * c.d_ff));
        up_ = be_.alloc(size_t(chunk_rows * c.d_ff));
        chunk_rows_ = chunk_rows;
    }
    if (!logits_) logits_ = be_.alloc(size_t(kLogitRows * c.vocab));
}

void Session::forward(const int32_t* ids, int64_t n, bool all_logits, const LogitsFn& on_logits) {
    if (n <= 0) return;
    if (pos_ + n > cap_) fail("%lld tokens exceed the session's context of %lld", (long long)(pos_ + n), (long long)cap_);
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= m_.config.vocab) fail("token id %d is outside the vocabulary (%d)", ids[i], m_.config.vocab);
    int64_t i = 0;
    if (pos_ == 0) {
        prefill(ids, n, all_logits, on_logits);
        i = n;
    }
    for (; i < n; ++i) decode(ids[i], all_logits || i + 1 == n, i, on_logits);
}

void Session::prefill(const int32_t* ids, int64_t T, bool all_logits, const LogitsFn& on_logits) {
    const ModelConfig& c = m_.config;
    const ModelWeights& w = m_.weights;
    const int64_t D = c.d_model, hd = c.head_dim, H = c.n_kv_head;
    const int64_t kvd = H * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    const int64_t C = std::min(chunk_, T);
    ensure_scratch(T, C);
    stats_ = AttentionStats{};
    stats_.tokens = T;
    const double t_start = now_seconds();
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(t);
    plans_.assign(size_t(c.n_layer), LayerPlan{});
    caches_.clear();
    ref_k_.assign(reference_decode_ ? size_t(c.n_layer) : 0, {});
    ref_v_.assign(reference_decode_ ? size_t(c.n_layer) : 0, {});
    int64_t sparse_so_far = 0;

    be_.embedding(w.tok_embd, ids, T, x_);  // x [T, D]
    for (int l = 0; l < c.n_layer; ++l) {
        const LayerWeights& L = w.layers[size_t(l)];
        be_.rms_norm(x_, L.attn_norm.data(), h_, T, D, c.rms_eps);
        be_.matmul(L.wq, h_, q_, T);  // q [T, n_head, hd]
        be_.matmul(L.wk, h_, k_, T);  // k [T, n_kv_head, hd]
        be_.matmul(L.wv, h_, v_, T);  // v [T, n_kv_head, hd]
        if (c.qk_norm) {
            be_.rms_norm(q_, L.q_norm.data(), q_, T * c.n_head, hd, c.rms_eps);
            be_.rms_norm(k_, L.k_norm.data(), k_, T * c.n_kv_head, hd, c.rms_eps);
        }
        // Router on the pre-RoPE keys (DESIGN.md §1.1), then this layer's plan.
        RouterDecision decision;
        const bool routed = router_ && router_->has_layer(l) && spec_.needs_router();
        if (routed) {
            // Pooling and MLPs on the backend (on a GPU nothing but the logits leaves it).
            be_.sync();  // the time below is the router's own, not the queued projections'
            const double t0 = now_seconds();
            const RouterLayer& rl = router_->checked_layer(l, T, c.n_kv_head, int(hd));
            std::vector<float> logits(size_t(c.n_kv_head) * size_t(rl.rh4.out));
            be_.router_logits(rl, k_, T, c.n_kv_head, int(hd), router_->window(), logits.data());
            decision = Router::decision(rl, std::move(logits), c.n_kv_head);
            stats_.router_seconds += now_seconds() - t0;
        } else if (spec_.needs_router()) {  // a layer without router weights keeps full attention
            decision.full.assign(size_t(H), 1);
            decision.margin.assign(size_t(H), 1e30f);
        }
        LayerPlan& plan = plans_[size_t(l)];
        plan.mode = choose_modes(spec_, l, c.n_kv_head, c.n_layer, spec_.needs_router() ? &decision : nullptr, sparse_so_far,
                                 int64_t(l) * H);
        for (int64_t g = 0; g < H; ++g) {
            bool sparse;
            switch (spec_.kind) {
                case AttentionSpec::Kind::Full: sparse = false; break;
                case AttentionSpec::Kind::SSA: case AttentionSpec::Kind::XA: sparse = true; break;
                default: sparse = plan.mode[size_t(g)] == spec_.sparse_mode && spec_.sparse_mode != spec_.full_mode;
            }
            sparse_so_far += sparse;
        }
        stats_.modes.push_back(plan.mode);
        stats_.prob_fa.push_back(routed ? decision.prob_fa : std::vector<float>{});

        be_.rope(q_, T, c.n_head, int(hd), pos.data(), m_.inv_freq.data());
        be_.rope(k_, T, c.n_kv_head, int(hd), pos.data(), m_.inv_freq.data());
        const bool any_xa = std::find(plan.mode.begin(), plan.mode.end(), HeadMode::XA) != plan.mode.end();
        be_.sync();  // (GPU: the times below are of the attention's own kernels)
        double t0 = now_seconds();
        if (any_xa) be_.xa_fill_plan(q_, k_, T, c.n_head, c.n_kv_head, int(hd), spec_.xa, plan);
        const double t1 = now_seconds();
        be_.attn_hybrid_prefill(q_, k_, v_, att_, T, c.n_head, c.n_kv_head, int(hd), plan, spec_.win, spec_.xa.block, scale);
        be_.sync();
        stats_.xa_seconds += t1 - t0;
        stats_.attention_seconds += now_seconds() - t1;
        caches_.push_back(be_.new_layer_cache(plan, spec_.win, cap_, c.n_kv_head, int(hd)));
        be_.cache_store_prefill(*caches_.back(), k_, v_, T);
        if (reference_decode_) {
            ref_k_[size_t(l)].resize(size_t(T * kvd));
            ref_v_[size_t(l)].resize(size_t(T * kvd));
            be_.download(ref_k_[size_t(l)].data(), k_, size_t(T * kvd));
            be_.download(ref_v_[size_t(l)].data(), v_, size_t(T * kvd));
        }
        std::vector<double> pruned(static_cast<size_t>(H));
        const double causal = double(T) * double(T + 1) / 2.0;
        for (int64_t g = 0; g < H; ++g) {
            const BlockList* xa = plan.mode[size_t(g)] == HeadMode::XA ? &plan.xa[size_t(g)] : nullptr;
            pruned[size_t(g)] = 1.0 - double(cpu::attended_pairs(plan.mode[size_t(g)], spec_.win, xa, spec_.xa.block, T)) / causal;
        }
        stats_.pruned.push_back(pruned);

        be_.matmul(L.wo, att_, h_, T);  // h [T, D]
        be_.add(x_, h_, T * D);
        for (int64_t r = 0; r < T; r += C) {  // FFN in chunks of C rows
            const int64_t n = std::min(C, T - r);
            float* xr = x_ + r * D;
            float* hr = h_ + r * D;
            be_.rms_norm(xr, L.ffn_norm.data(), hr, n, D, c.rms_eps);
            be_.matmul(L.w_gate, hr, gate_, n);  // [n, d_ff]
            be_.matmul(L.w_up, hr, up_, n);
            be_.swiglu(gate_, up_, gate_, n * c.d_ff);
            be_.matmul(L.w_down, gate_, hr, n);
            be_.add(xr, hr, n * D);
        }
        if (progress_) progress_(l, c.n_layer);
    }
    pos_ = T;
    logits_of(x_, T, all_logits, on_logits);

    const int64_t total_heads = int64_t(c.n_layer) * H;
    stats_.omega_msr = double(sparse_so_far) / double(total_heads);
    double last = 0, all = 0;
    for (size_t l = 0; l < stats_.pruned.size(); ++l)
        for (double p : stats_.pruned[l]) {
            all += p;
            if (l + 1 == stats_.pruned.size()) last += p;
        }
    stats_.omega_esr = last / double(H);
    stats_.omega_esr_all = all / double(total_heads);
    stats_.kv_bytes = kv_bytes();
    stats_.prefill_seconds = now_seconds() - t_start;
}

void Session::decode(int32_t id, bool want_logits, int64_t index, const LogitsFn& on_logits) {
    const ModelConfig& c = m_.config;
    const ModelWeights& w = m_.weights;
    const int64_t D = c.d_model, hd = c.head_dim;
    const float scale = 1.0f / std::sqrt(float(hd));
    ensure_scratch(1, 1);
    const int32_t p = int32_t(pos_);
    be_.embedding(w.tok_embd, &id, 1, x_);
    for (int l = 0; l < c.n_layer; ++l) {
        const LayerWeights& L = w.layers[size_t(l)];
        be_.rms_norm(x_, L.attn_norm.data(), h_, 1, D, c.rms_eps);
        be_.matmul(L.wq, h_, q_, 1);
        be_.matmul(L.wk, h_, k_, 1);
        be_.matmul(L.wv, h_, v_, 1);
        if (c.qk_norm) {
            be_.rms_norm(q_, L.q_norm.data(), q_, c.n_head, hd, c.rms_eps);
            be_.rms_norm(k_, L.k_norm.data(), k_, c.n_kv_head, hd, c.rms_eps);
        }
        be_.rope(q_, 1, c.n_head, int(hd), &p, m_.inv_freq.data());
        be_.rope(k_, 1, c.n_kv_head, int(hd), &p, m_.inv_freq.data());
        be_.cache_append(*caches_[size_t(l)], k_, v_, pos_);
        if (reference_decode_) {
            const int64_t kvd = int64_t(c.n_kv_head) * hd, qd = int64_t(c.n_head) * hd;
            std::vector<float>& rk = ref_k_[size_t(l)];
            std::vector<float>& rv = ref_v_[size_t(l)];
            rk.resize(size_t((pos_ + 1) * kvd));
            rv.resize(size_t((pos_ + 1) * kvd));
            be_.download(rk.data() + pos_ * kvd, k_, size_t(kvd));
            be_.download(rv.data() + pos_ * kvd, v_, size_t(kvd));
            std::vector<float> q(static_cast<size_t>(qd)), o(static_cast<size_t>(qd));
            be_.download(q.data(), q_, size_t(qd));
            if (decode_observer_) decode_observer_(l, q.data(), rk.data(), pos_ + 1);
            cpu::attn_decode_naive(q.data(), rk.data(), rv.data(), pos_, o.data(), c.n_head, c.n_kv_head, int(hd),
                                   plans_[size_t(l)], spec_.win, scale);
            be_.upload(att_, o.data(), size_t(qd));
        } else {
            be_.attn_decode(q_, *caches_[size_t(l)], pos_, att_, c.n_head, scale);
        }
        be_.matmul(L.wo, att_, h_, 1);
        be_.add(x_, h_, D);
        be_.rms_norm(x_, L.ffn_norm.data(), h_, 1, D, c.rms_eps);
        be_.matmul(L.w_gate, h_, gate_, 1);
        be_.matmul(L.w_up, h_, up_, 1);
        be_.swiglu(gate_, up_, gate_, c.d_ff);
        be_.matmul(L.w_down, gate_, h_, 1);
        be_.add(x_, h_, D);
    }
    ++pos_;
    if (want_logits) {
        be_.rms_norm(x_, w.out_norm.data(), h_, 1, D, c.rms_eps);
        be_.matmul(w.output, h_, logits_, 1);
        last_row_ = 0;
        if (host_logits_ || on_logits) be_.download(last_logits_.data(), logits_, size_t(c.vocab));
        if (on_logits) on_logits(index, last_logits_.data());
    }
}

void Session::logits_of(const float* x, int64_t T, bool all_logits, const LogitsFn& on_logits) {
    const ModelConfig& c = m_.config;
    const ModelWeights& w = m_.weights;
    const int64_t D = c.d_model;
    if (!all_logits) {
        be_.rms_norm(x + (T - 1) * D, w.out_norm.data(), h_, 1, D, c.rms_eps);
        be_.matmul(w.output, h_, logits_, 1);
        last_row_ = 0;
        if (host_logits_) be_.download(last_logits_.data(), logits_, size_t(c.vocab));
        return;
    }
    be_.rms_norm(x, w.out_norm.data(), h_, T, D, c.rms_eps);
    std::vector<float> host(static_cast<size_t>(kLogitRows * c.vocab));
    for (int64_t r = 0; r < T; r += kLogitRows) {
        const int64_t nr = std::min(kLogitRows, T - r);
        be_.matmul(w.output, h_ + r * D, logits_, nr);
        be_.download(host.data(), logits_, size_t(nr * c.vocab));
        for (int64_t i = 0; i < nr; ++i)
            if (on_logits) on_logits(r + i, host.data() + i * c.vocab);
        if (r + nr == T) {
            std::copy(host.begin() + (nr - 1) * c.vocab, host.begin() + nr * c.vocab, last_logits_.begin());
            last_row_ = nr - 1;
        }
    }
}

int32_t Session::sample_next(Sampler& sampler, int32_t limit) {
    const int32_t vocab = m_.config.vocab;
    if (limit <= 0 || limit > vocab) limit = vocab;
    if (pos_ == 0) fail("sample_next: nothing has been run yet");
    if (sampler.uses_candidates(Backend::kMaxCandidates)) {
        be_.top_candidates(logits_ + last_row_ * vocab, limit, std::min(sampler.candidates_needed(), int(limit)), cand_);
        return sampler.sample_candidates(cand_);
    }
    if (!host_logits_) be_.download(last_logits_.data(), logits_ + last_row_ * vocab, size_t(vocab));
    return sampler.sample(last_logits_.data(), limit);
}

size_t peak_rss_bytes() {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return size_t(ru.ru_maxrss) * 1024;
}

}  // namespace elastic
