// Naive references of the CPU attention ops: explicit plan_allows() masks and fp64 sums, no
// tiling. They are the specification every fast path (CPU and CUDA) is tested against.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "cpu/attention.h"

namespace elastic::cpu {

void attn_hybrid_naive_rows(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                            int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                            int64_t xa_block, float scale, const std::vector<int64_t>& rows) {
    check_prefill_args(T, n_head, n_kv_head, head_dim, plan, win, xa_block);
    const int group = n_head / n_kv_head;
#pragma omp parallel
    {
        std::vector<double> p, acc(static_cast<size_t>(head_dim));
        std::vector<int64_t> keys;
#pragma omp for schedule(dynamic, 1)
        for (size_t x = 0; x < rows.size(); ++x) {
            const int64_t i = rows[x];
            for (int h = 0; h < n_head; ++h) {
                const int g = h / group;
                const HeadMode mode = plan.mode[size_t(g)];
                const BlockList* xa = mode == HeadMode::XA ? &plan.xa[size_t(g)] : nullptr;
                const float* qr = q + (i * n_head + h) * head_dim;
                keys.clear();
                p.clear();
                double mx = -1e300;
                for (int64_t j = 0; j <= i; ++j) {
                    if (!plan_allows(mode, win, xa, xa_block, i, j)) continue;
                    const float* kr = k + (j * n_kv_head + g) * head_dim;
                    double d = 0;
                    for (int c = 0; c < head_dim; ++c) d += double(qr[c]) * kr[c];
                    keys.push_back(j);
                    p.push_back(d * scale);
                    mx = std::max(mx, p.back());
                }
                ELASTIC_ASSERT(!keys.empty());
                double sum = 0;
                for (double& e : p) sum += (e = std::exp(e - mx));
                std::fill(acc.begin(), acc.end(), 0.0);
                for (size_t a = 0; a < keys.size(); ++a) {
                    const float* vr = v + (keys[a] * n_kv_head + g) * head_dim;
                    for (int c = 0; c < head_dim; ++c) acc[size_t(c)] += p[a] * vr[c];
                }
                float* o = out + (i * n_head + h) * head_dim;
                for (int c = 0; c < head_dim; ++c) o[c] = float(acc[size_t(c)] / sum);
            }
        }
    }
}

void attn_hybrid_naive(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                       int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                       int64_t xa_block, float scale) {
    std::vector<int64_t> rows(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) rows[size_t(i)] = i;
    attn_hybrid_naive_rows(q, k, v, out, T, n_head, n_kv_head, head_dim, plan, win, xa_block, scale, rows);
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

std::vector<double> xa_block_scores_naive(const float* q, const float* k, int64_t T, int n_head, int n_kv_head,
                                          int head_dim, int g, const XAParams& p) {
    check_xa_args(T, n_head, n_kv_head, g, p);
    const int group = n_head / n_kv_head;
    const int64_t S = p.stride, rb = p.block / S, d = head_dim;
    const int64_t R = (T + S - 1) / S, nb = (T + p.block - 1) / p.block;
    const double scale = 1.0 / (std::sqrt(double(d)) * double(S));
    std::vector<double> score(size_t(nb * nb), 0.0), a(static_cast<size_t>(R));
    for (int hh = 0; hh < group; ++hh) {
        const int h = g * group + hh;
        for (int64_t r = 0; r < R; ++r) {
            double mx = -1e300;
            for (int64_t c = 0; c <= r; ++c) {
                double dot = 0;
                for (int64_t t = 0; t < S; ++t) {
                    const int64_t qi = S * r + S - 1 - t, ki = S * c + t;
                    if (qi >= T || ki >= T) continue;
                    for (int64_t x = 0; x < d; ++x) dot += double(q[(qi * n_head + h) * d + x]) * k[(ki * n_kv_head + g) * d + x];
                }
                a[size_t(c)] = dot * scale;
                mx = std::max(mx, a[size_t(c)]);
            }
            double sum = 0;
            for (int64_t c = 0; c <= r; ++c) sum += (a[size_t(c)] = std::exp(a[size_t(c)] - mx));
            for (int64_t c = 0; c <= r; ++c) score[size_t((r / rb) * nb + c / rb)] += a[size_t(c)] / sum;
        }
    }
    return score;
}

BlockList xa_estimate_head_naive(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                                 int g, const XAParams& p) {
    const int64_t nb = (T + p.block - 1) / p.block;
    const std::vector<double> score = xa_block_scores_naive(q, k, T, n_head, n_kv_head, head_dim, g, p);
    BlockList bl;
    bl.offsets.push_back(0);
    std::vector<int32_t> order;
    for (int64_t qb = 0; qb < nb; ++qb) {
        xa_select_blocks(score.data() + qb * nb, qb, p.threshold, bl.blocks, order);
        bl.offsets.push_back(int64_t(bl.blocks.size()));
    }
    return bl;
}

}  // namespace elastic::cpu
