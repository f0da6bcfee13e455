// Per-head KV cache of one layer, CPU (storage layout in cpu/attention.h).
#include <algorithm>

#include "core/error.h"
#include "cpu/attention.h"

namespace elastic::cpu {

void LayerKVCache::init(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity, int n_kv_head,
                        int head_dim) {
    ELASTIC_ASSERT(plan.mode.size() == size_t(n_kv_head) && capacity > 0 && head_dim > 0);
    ELASTIC_ASSERT(win.sink >= 0 && win.local >= 1);
    win_ = win;
    capacity_ = capacity;
    head_dim_ = head_dim;
    heads_.assign(size_t(n_kv_head), Head{});
    for (int g = 0; g < n_kv_head; ++g) {
        Head& h = heads_[size_t(g)];
        h.mode = plan.mode[size_t(g)];
        int64_t slots = capacity;
        if (h.mode == HeadMode::SSA) {
            h.n_sink = std::min(win.sink, capacity);
            h.n_ring = std::min(win.local, capacity - h.n_sink);
            slots = h.n_sink + h.n_ring;
        }
        h.k.assign(size_t(slots * head_dim), 0.0f);
        h.v.assign(size_t(slots * head_dim), 0.0f);
    }
}

int64_t LayerKVCache::slot(const Head& h, int64_t pos) const {
    if (h.mode != HeadMode::SSA) return pos;
    if (pos < win_.sink) return pos;
    return h.n_sink + (pos - win_.sink) % win_.local;
}

void LayerKVCache::store_prefill(const float* k, const float* v, int64_t T) {
    ELASTIC_ASSERT(T <= capacity_);
    const int n_kv = n_kv_head();
    for (int g = 0; g < n_kv; ++g) {
        Head& h = heads_[size_t(g)];
        for (int64_t j = 0; j < T; ++j) {
            // An SSA head only needs the sink and the positions a later query can still see.
            if (h.mode == HeadMode::SSA && j >= win_.sink && j < T - win_.local) continue;
            const int64_t s = slot(h, j);
            std::copy_n(k + (j * n_kv + g) * head_dim_, head_dim_, h.k.begin() + s * head_dim_);
            std::copy_n(v + (j * n_kv + g) * head_dim_, head_dim_, h.v.begin() + s * head_dim_);
        }
    }
}

void LayerKVCache::append(const float* k_tok, const float* v_tok, int64_t pos) {
    ELASTIC_ASSERT(pos >= 0 && pos < capacity_);
    for (int g = 0; g < n_kv_head(); ++g) {
        Head& h = heads_[size_t(g)];
        const int64_t s = slot(h, pos);
        std::copy_n(k_tok + int64_t(g) * head_dim_, head_dim_, h.k.begin() + s * head_dim_);
        std::copy_n(v_tok + int64_t(g) * head_dim_, head_dim_, h.v.begin() + s * head_dim_);
    }
}

int LayerKVCache::spans(int g, int64_t pos, Span out[3]) const {
    const Head& h = heads_[size_t(g)];
    if (h.mode != HeadMode::SSA) {
        out[0] = {0, pos + 1};
        return 1;
    }
    int n = 0;
    const int64_t sink_end = std::min(win_.sink, pos + 1);
    if (sink_end > 0) out[n++] = {0, sink_end};
    const int64_t w0 = std::max(win_.sink, pos - win_.local + 1);
    if (w0 <= pos) {
        const int64_t len = pos - w0 + 1, s0 = (w0 - win_.sink) % win_.local;
        if (s0 + len <= win_.local) {
            out[n++] = {h.n_sink + s0, h.n_sink + s0 + len};
        } else {
            out[n++] = {h.n_sink + s0, h.n_sink + win_.local};
            out[n++] = {h.n_sink, h.n_sink + s0 + len - win_.local};
        }
    }
    return n;
}

size_t LayerKVCache::bytes() const {
    size_t b = 0;
    for (const Head& h : heads_) b += (h.k.size() + h.v.size()) * sizeof(float);
    return b;
}

}  // namespace elastic::cpu
