// The forward pass, written once against the Backend op interface.
#include <sys/resource.h>

#include <algorithm>

#include "core/error.h"
#include "model/model.h"

namespace elastic {

namespace {
constexpr int64_t kLogitRows = 64;  // rows of logits computed at once when all are requested
}

Session::Session(const Model& model, Backend& backend, int64_t capacity, int64_t chunk)
    : m_(model), be_(backend), cap_(capacity), chunk_(std::max<int64_t>(1, chunk)) {
    const ModelConfig& c = m_.config;
    if (capacity <= 0) fail("context capacity must be positive");
    if (capacity > c.max_ctx)
        fail("%lld tokens exceed the model's context length of %d", (long long)capacity, c.max_ctx);
    const int64_t kvd = int64_t(c.n_kv_head) * c.head_dim;
    for (int l = 0; l < c.n_layer; ++l) {
        k_cache_.push_back(be_.alloc(size_t(kvd * cap_)));
        v_cache_.push_back(be_.alloc(size_t(kvd * cap_)));
    }
    const int64_t C = chunk_;
    x_ = be_.alloc(size_t(C * c.d_model));
    h_ = be_.alloc(size_t(C * c.d_model));
    q_ = be_.alloc(size_t(C * c.n_head * c.head_dim));
    att_ = be_.alloc(size_t(C * c.n_head * c.head_dim));
    k_ = be_.alloc(size_t(C * kvd));
    v_ = be_.alloc(size_t(C * kvd));
    gate_ = be_.alloc(size_t(C * c.d_ff));
    up_ = be_.alloc(size_t(C * c.d_ff));
    logits_ = be_.alloc(size_t(kLogitRows * c.vocab));
    last_logits_.resize(size_t(c.vocab));
}

Session::~Session() {
    for (float* p : k_cache_) be_.release(p);
    for (float* p : v_cache_) be_.release(p);
    for (float* p : {x_, h_, q_, att_, k_, v_, gate_, up_, logits_}) be_.release(p);
}

size_t Session::kv_bytes() const {
    return size_t(2) * m_.config.n_layer * size_t(pos_) * m_.config.n_kv_head * m_.config.head_dim * sizeof(float);
}

void Session::forward(const int32_t* ids, int64_t n, bool all_logits, const LogitsFn& on_logits) {
    if (n <= 0) return;
    if (pos_ + n > cap_)
        fail("%lld tokens exceed the session's context of %lld", (long long)(pos_ + n), (long long)cap_);
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= m_.config.vocab) fail("token id %d is outside the vocabulary (%d)", ids[i], m_.config.vocab);
    for (int64_t s = 0; s < n; s += chunk_) forward_chunk(ids + s, std::min(chunk_, n - s), all_logits, s, on_logits);
}

void Session::logits_rows(const float* h, int64_t rows, float* out) { be_.matmul(m_.weights.output, h, out, rows); }

void Session::forward_chunk(const int32_t* ids, int64_t T, bool all_logits, int64_t base, const LogitsFn& on_logits) {
    const ModelConfig& c = m_.config;
    const ModelWeights& w = m_.weights;
    const int64_t D = c.d_model, hd = c.head_dim;
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(pos_ + t);

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
        be_.rope(q_, T, c.n_head, int(hd), pos.data(), m_.inv_freq.data());
        be_.rope(k_, T, c.n_kv_head, int(hd), pos.data(), m_.inv_freq.data());
        be_.kv_store(k_cache_[size_t(l)], k_, T, pos_, c.n_kv_head, int(hd), cap_);
        be_.kv_store(v_cache_[size_t(l)], v_, T, pos_, c.n_kv_head, int(hd), cap_);
        be_.attention(q_, k_cache_[size_t(l)], v_cache_[size_t(l)], att_, T, pos_, c.n_head, c.n_kv_head, int(hd), cap_);
        be_.matmul(L.wo, att_, h_, T);  // h [T, D]
        be_.add(x_, h_, T * D);
        be_.rms_norm(x_, L.ffn_norm.data(), h_, T, D, c.rms_eps);
        be_.matmul(L.w_gate, h_, gate_, T);  // [T, d_ff]
        be_.matmul(L.w_up, h_, up_, T);
        be_.swiglu(gate_, up_, gate_, T * c.d_ff);
        be_.matmul(L.w_down, gate_, h_, T);
        be_.add(x_, h_, T * D);
    }
    pos_ += T;

    if (all_logits) {
        be_.rms_norm(x_, w.out_norm.data(), h_, T, D, c.rms_eps);
        std::vector<float> host(static_cast<size_t>(kLogitRows * c.vocab));
        for (int64_t r = 0; r < T; r += kLogitRows) {
            const int64_t nr = std::min(kLogitRows, T - r);
            logits_rows(h_ + r * D, nr, logits_);
            be_.download(host.data(), logits_, size_t(nr * c.vocab));
            for (int64_t i = 0; i < nr; ++i)
                if (on_logits) on_logits(base + r + i, host.data() + i * c.vocab);
            if (r + nr == T) std::copy(host.begin() + (nr - 1) * c.vocab, host.begin() + nr * c.vocab, last_logits_.begin());
        }
    } else {
        be_.rms_norm(x_ + (T - 1) * D, w.out_norm.data(), h_, 1, D, c.rms_eps);
        logits_rows(h_, 1, logits_);
        be_.download(last_logits_.data(), logits_, size_t(c.vocab));
    }
}

size_t peak_rss_bytes() {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return size_t(ru.ru_maxrss) * 1024;
}

}  // namespace elastic
