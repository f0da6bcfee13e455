// Per-head KV cache and split-KV decode attention, CPU. See kv-cache.h for the storage layout.
#include "attention/kv-cache.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/hybrid-attention.h"
#include "core/error.h"

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

namespace {

constexpr int64_t kChunk = 256;     // keys per score tile
constexpr int64_t kMinPiece = 512;  // split-KV pieces are at least this long
constexpr float kLog2e = 1.4426950408889634f;

struct Piece {
    int g;
    int64_t begin, end;  // slots
};

// Partial attention of the G query rows qg [G, d] over slots [begin, end) of one head:
// writes part = [G] max (base 2), [G] sum, [G, d] unnormalised output.
void decode_piece(const float* qg, int G, const float* kh, const float* vh, int64_t begin, int64_t end, int d,
                  float scale, float* part, std::vector<float>& s) {
    float* m = part;
    float* l = part + G;
    float* o = part + 2 * G;
    std::fill(m, m + G, -std::numeric_limits<float>::infinity());
    std::fill(l, l + G, 0.0f);
    s.resize(size_t(G * kChunk));
    bool first = true;
    for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
        const int64_t n = std::min(kChunk, end - c0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, G, int(n), d, scale * kLog2e, qg, d, kh + c0 * d, d, 0.0f,
                    s.data(), int(n));
        for (int r = 0; r < G; ++r) {
            float* row = s.data() + r * n;
            const float mx = row_max(row, n, m[r]);
            const float sum = exp2_row(row, n, mx);
            const float alpha = exp2_nonpos(m[r] - mx);
            l[r] = l[r] * alpha + sum;
            m[r] = mx;
            if (!first)
                for (int x = 0; x < d; ++x) o[r * d + x] *= alpha;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, G, d, int(n), 1.0f, s.data(), int(n), vh + c0 * d, d,
                    first ? 0.0f : 1.0f, o, d);
        first = false;
    }
}

}  // namespace

void attn_decode(const float* q, const LayerKVCache& cache, int64_t pos, float* out, int n_head, float scale) {
    const int n_kv = cache.n_kv_head(), d = cache.head_dim();
    ELASTIC_ASSERT(n_kv > 0 && n_head % n_kv == 0 && pos >= 0);
    const int G = n_head / n_kv;

    LayerKVCache::Span sp[3];
    int64_t total = 0;
    for (int g = 0; g < n_kv; ++g) {
        const int n = cache.spans(g, pos, sp);
        for (int x = 0; x < n; ++x) total += sp[x].end - sp[x].begin;
    }
    // Split only when the heads alone cannot keep every thread busy.
    const int threads = omp_get_max_threads();
    int64_t piece_len = std::numeric_limits<int64_t>::max();
    if (n_kv < 4 * threads) piece_len = std::max(kMinPiece, (total + 4 * threads - 1) / (4 * threads));
    std::vector<Piece> pieces;
    for (int g = 0; g < n_kv; ++g) {
        const int n = cache.spans(g, pos, sp);
        for (int x = 0; x < n; ++x)
            for (int64_t b = sp[x].begin; b < sp[x].end; b = std::min(sp[x].end, b + piece_len))
                pieces.push_back({g, b, std::min(sp[x].end, b + piece_len)});
    }
    const int64_t part_size = int64_t(G) * (d + 2);
    std::vector<float> parts(pieces.size() * size_t(part_size));
#pragma omp parallel
    {
        std::vector<float> s;
#pragma omp for schedule(dynamic, 1)
        for (size_t x = 0; x < pieces.size(); ++x) {
            const Piece& p = pieces[x];
            decode_piece(q + int64_t(p.g) * G * d, G, cache.k(p.g), cache.v(p.g), p.begin, p.end, d, scale,
                         parts.data() + x * size_t(part_size), s);
        }
    }
    // Merge the pieces of each head: pieces of one head are consecutive.
    for (size_t x0 = 0; x0 < pieces.size();) {
        size_t x1 = x0;
        while (x1 < pieces.size() && pieces[x1].g == pieces[x0].g) ++x1;
        const int g = pieces[x0].g;
        for (int r = 0; r < G; ++r) {
            float M = -std::numeric_limits<float>::infinity();
            for (size_t x = x0; x < x1; ++x) M = std::max(M, parts[x * size_t(part_size) + size_t(r)]);
            float L = 0.0f;
            float* o = out + (int64_t(g) * G + r) * d;
            std::fill(o, o + d, 0.0f);
            for (size_t x = x0; x < x1; ++x) {
                const float* part = parts.data() + x * size_t(part_size);
                const float w = exp2_nonpos(part[r] - M);
                L += part[G + r] * w;
                for (int c = 0; c < d; ++c) o[c] += part[2 * G + r * d + c] * w;
            }
            for (int c = 0; c < d; ++c) o[c] /= L;
        }
        x0 = x1;
    }
}

void attn_decode_naive(const float* q, const float* k, const float* v, int64_t pos, float* out, int n_head,
                       int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win, float scale) {
    const int G = n_head / n_kv_head;
    std::vector<double> p(static_cast<size_t>(pos + 1)), acc(static_cast<size_t>(head_dim));
    for (int h = 0; h < n_head; ++h) {
        const int g = h / G;
        const HeadMode m = plan.mode[size_t(g)] == HeadMode::SSA ? HeadMode::SSA : HeadMode::FA;
        const float* qr = q + int64_t(h) * head_dim;
        double mx = -1e300;
        for (int64_t j = 0; j <= pos; ++j) {
            if (!plan_allows(m, win, nullptr, 1, pos, j)) {
                p[size_t(j)] = -1e300;
                continue;
            }
            double dd = 0;
            for (int c = 0; c < head_dim; ++c) dd += double(qr[c]) * k[(j * n_kv_head + g) * head_dim + c];
            p[size_t(j)] = dd * scale;
            mx = std::max(mx, p[size_t(j)]);
        }
        double sum = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j <= pos; ++j) {
            if (p[size_t(j)] == -1e300) continue;
            const double e = std::exp(p[size_t(j)] - mx);
            sum += e;
            for (int c = 0; c < head_dim; ++c) acc[size_t(c)] += e * v[(j * n_kv_head + g) * head_dim + c];
        }
        for (int c = 0; c < head_dim; ++c) out[int64_t(h) * head_dim + c] = float(acc[size_t(c)] / sum);
    }
}

}  // namespace elastic::cpu
