// Split-KV decode attention over the per-head KV cache, CPU (flash-decoding: pieces of a head's
// spans run in parallel, each for the whole GQA group, then merge).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "cpu/attention.h"
#include "cpu/softmax.h"

namespace elastic::cpu {

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
            for (int64_t b = sp[x].begin; b < sp[x].end;) {
                // (piece_len may be INT64_MAX: no b + piece_len, which would overflow)
                const int64_t e = sp[x].end - b > piece_len ? b + piece_len : sp[x].end;
                pieces.push_back({g, b, e});
                b = e;
            }
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

}  // namespace elastic::cpu
