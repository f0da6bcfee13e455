// XAttention block estimation, CPU. The antidiagonal sum over t of q[S r + S-1-t] · k[S c + t] is
// one dot product of two length-S·d vectors (the S query rows concatenated in reverse, the S key
// rows in order), so the strided scores of a run of strided query rows are one sgemm against the
// strided K of the head. Work items are (query head of the group, 64 strided rows).
#include "cpu/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "cpu/softmax.h"
#include "core/error.h"

namespace elastic::cpu {

namespace {

constexpr int64_t kItemRows = 64;  // strided query rows per sgemm

}  // namespace

void check_xa_args(int64_t T, int n_head, int n_kv_head, int g, const XAParams& p) {
    ELASTIC_ASSERT(T > 0 && n_kv_head > 0 && n_head % n_kv_head == 0 && g >= 0 && g < n_kv_head);
    ELASTIC_ASSERT(p.stride > 0 && p.block > 0 && p.block % p.stride == 0 && p.chunk_rows > 0);
    ELASTIC_ASSERT(p.threshold > 0.0 && p.threshold <= 1.0);
}

BlockList xa_estimate_head(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim, int g,
                           const XAParams& p) {
    check_xa_args(T, n_head, n_kv_head, g, p);
    const int group = n_head / n_kv_head;
    const int64_t S = p.stride, rb = p.block / S, d = head_dim, W = S * d;
    const int64_t R = (T + S - 1) / S, nb = (T + p.block - 1) / p.block;
    const int64_t chunk_blocks = std::max<int64_t>(1, p.chunk_rows / p.block);
    const int64_t item_blocks = std::max<int64_t>(1, kItemRows / rb);
    const float alpha = float(1.4426950408889634 / (std::sqrt(double(d)) * double(S)));  // base-2 softmax

    // ks [R, S·d]: strided K of head g, zero past T.
    std::vector<float> ks(size_t(R * W), 0.0f);
#pragma omp parallel for
    for (int64_t c = 0; c < R; ++c)
        for (int64_t t = 0; t < S && S * c + t < T; ++t)
            std::copy_n(k + ((S * c + t) * n_kv_head + g) * d, d, ks.begin() + c * W + t * d);

    BlockList bl;
    bl.offsets.push_back(0);
    std::vector<double> score;  // [group, chunk query blocks, nb]
    std::vector<int32_t> order;
    for (int64_t qb0 = 0; qb0 < nb; qb0 += chunk_blocks) {
        const int64_t qb1 = std::min(nb, qb0 + chunk_blocks), ncb = qb1 - qb0;
        score.assign(size_t(group * ncb * nb), 0.0);
        const int64_t per_head = (ncb + item_blocks - 1) / item_blocks, n_items = group * per_head;
#pragma omp parallel
        {
            std::vector<float> qs, a;
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < n_items; ++it) {
                const int hh = int(it % group);
                const int64_t ib = per_head - 1 - it / group;  // longest (latest) rows first
                const int64_t qbA = qb0 + ib * item_blocks, qbB = std::min(qb1, qbA + item_blocks);
                const int64_t r0 = qbA * rb, r1 = std::min(qbB * rb, R), nr = r1 - r0, ncol = r1;
                const int h = g * group + hh;
                // qs [nr, S·d]: row r holds q[S r + S-1-t], t = 0..S-1, zero past T.
                qs.assign(size_t(nr * W), 0.0f);
                for (int64_t r = 0; r < nr; ++r)
                    for (int64_t t = 0; t < S; ++t) {
                        const int64_t pos = S * (r0 + r) + S - 1 - t;
                        if (pos < T) std::copy_n(q + (pos * n_head + h) * d, d, qs.begin() + r * W + t * d);
                    }
                a.resize(size_t(nr * ncol));
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nr), int(ncol), int(W), alpha, qs.data(),
                            int(W), ks.data(), int(W), 0.0f, a.data(), int(ncol));
                for (int64_t r = 0; r < nr; ++r) {
                    const int64_t rr = r0 + r, n = rr + 1;  // causal strided columns [0, rr]
                    float* row = a.data() + r * ncol;
                    const float mx = row_max(row, n, -std::numeric_limits<float>::infinity());
                    const float sum = exp2_row(row, n, mx);
                    const double inv = 1.0 / double(sum);
                    double* srow = score.data() + (hh * ncb + rr / rb - qb0) * nb;
                    for (int64_t kb = 0; kb * rb < n; ++kb) {
                        float bs = 0.0f;
                        for (int64_t c = kb * rb; c < std::min(n, (kb + 1) * rb); ++c) bs += row[c];
                        srow[kb] += double(bs) * inv;
                    }
                }
            }
        }
        std::vector<double> tot(static_cast<size_t>(nb));
        for (int64_t qb = qb0; qb < qb1; ++qb) {
            std::fill(tot.begin(), tot.end(), 0.0);
            for (int hh = 0; hh < group; ++hh)
                for (int64_t kb = 0; kb <= qb; ++kb) tot[size_t(kb)] += score[size_t((hh * ncb + qb - qb0) * nb + kb)];
            xa_select_blocks(tot.data(), qb, p.threshold, bl.blocks, order);
            bl.offsets.push_back(int64_t(bl.blocks.size()));
        }
    }
    return bl;
}

void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                  const XAParams& p, LayerPlan& plan) {
    ELASTIC_ASSERT(plan.mode.size() == size_t(n_kv_head));
    plan.xa.resize(size_t(n_kv_head));
    plan.xa_on_device = false;
    plan.xa_pairs.clear();
    for (int g = 0; g < n_kv_head; ++g)
        if (plan.mode[size_t(g)] == HeadMode::XA) plan.xa[size_t(g)] = xa_estimate_head(q, k, T, n_head, n_kv_head, head_dim, g, p);
}

}  // namespace elastic::cpu
