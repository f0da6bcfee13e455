// Causal GQA attention over a KV cache, fp32.
// Tiled by 64 query rows per (query head, block) task: scores for the block against every key it
// can see come from one sgemm, then a masked softmax, then one sgemm against V. Memory per thread
// is 64 x (visible keys) floats; K/V are read in place from the cache (GQA: the query heads of a
// group read the same K/V rows, never a repeated copy).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/ops.h"

namespace elastic::cpu {

namespace {
constexpr int64_t kQueryBlock = 64;

void softmax_causal_rows(float* s, int64_t nq, int64_t ld, int64_t first_visible_end) {
    // Row r sees keys [0, first_visible_end + r).
    for (int64_t r = 0; r < nq; ++r) {
        float* row = s + r * ld;
        const int64_t n = first_visible_end + r;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; ++j) row[j] *= inv;
        for (int64_t j = n; j < ld; ++j) row[j] = 0.0f;
    }
}
}  // namespace

void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0, int n_head,
               int n_kv_head, int head_dim, int64_t cap) {
    const int group = n_head / n_kv_head;
    const int64_t n_blocks = (T + kQueryBlock - 1) / kQueryBlock;
    const int64_t ldq = int64_t(n_head) * head_dim;
    const float scale = 1.0f / std::sqrt(float(head_dim));
#pragma omp parallel
    {
        std::vector<float> s;
#pragma omp for schedule(dynamic) collapse(2)
        for (int64_t b = n_blocks - 1; b >= 0; --b) {  // longest blocks first
            for (int h = 0; h < n_head; ++h) {
                const int g = h / group;
                const int64_t t0 = b * kQueryBlock, nq = std::min(kQueryBlock, T - t0);
                const int64_t kend = pos0 + t0 + nq;  // keys visible to the last row of the block
                s.resize(size_t(nq * kend));
                const float* kg = k + int64_t(g) * cap * head_dim;
                const float* vg = v + int64_t(g) * cap * head_dim;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nq), int(kend), head_dim, scale,
                            q + t0 * ldq + int64_t(h) * head_dim, int(ldq), kg, head_dim, 0.0f, s.data(), int(kend));
                softmax_causal_rows(s.data(), nq, kend, pos0 + t0 + 1);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(nq), head_dim, int(kend), 1.0f, s.data(),
                            int(kend), vg, head_dim, 0.0f, out + t0 * ldq + int64_t(h) * head_dim, int(ldq));
            }
        }
    }
}

void attention_naive(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0, int n_head,
                     int n_kv_head, int head_dim, int64_t cap) {
    const int group = n_head / n_kv_head;
    const double scale = 1.0 / std::sqrt(double(head_dim));
    std::vector<double> p;
    for (int64_t t = 0; t < T; ++t)
        for (int h = 0; h < n_head; ++h) {
            const int g = h / group;
            const float* qr = q + (t * n_head + h) * head_dim;
            const int64_t n = pos0 + t + 1;
            p.assign(size_t(n), 0.0);
            double mx = -1e300;
            for (int64_t j = 0; j < n; ++j) {
                const float* kr = k + (int64_t(g) * cap + j) * head_dim;
                double d = 0;
                for (int i = 0; i < head_dim; ++i) d += double(qr[i]) * kr[i];
                p[size_t(j)] = d * scale;
                mx = std::max(mx, p[size_t(j)]);
            }
            double sum = 0;
            for (int64_t j = 0; j < n; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
            float* o = out + (t * n_head + h) * head_dim;
            for (int i = 0; i < head_dim; ++i) {
                double acc = 0;
                for (int64_t j = 0; j < n; ++j) acc += p[size_t(j)] * v[(int64_t(g) * cap + j) * head_dim + i];
                o[i] = float(acc / sum);
            }
        }
}

}  // namespace elastic::cpu
