// Hybrid prefill attention, CPU: one OpenMP pass over work items (up to 4 query heads of one GQA
// group × 64 query rows), each running its KV head's mode (FA / SSA / XA) as a flash-attention
// loop over the key ranges the mode attends. Per work item:
//   - key ranges are token-exact and ascending (FA: [0, i1); SSA: sink ∪ window; XA: the kept
//     blocks, merged when adjacent), split evenly into chunks of at most kChunkK keys;
//   - per chunk: S = Q K^T (one sgemm over the packed query rows, pre-scaled by scale·log2 e),
//     -inf outside the mask in partial chunks only, online softmax in base 2 (running max m and
//     sum l per row), O = α O + P V (one sgemm); finally out = O / l.
// Items are sorted by cost (rows × keys) so FA tiles at the end of the sequence start first and
// short SSA tiles fill the tail (DESIGN.md §1.5).
#include "cpu/attention.h"
#include "cpu/softmax.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace elastic::cpu {

namespace {

// Tiles: 64 query rows (per head; a partial SSA window costs local + 63 keys per row) × up to 4
// heads of a GQA group packed together × key chunks of up to 512: the score tile (<= 512 KiB) and
// the K/V chunk stay in the 2 MiB L2, and long chunks amortise OpenBLAS's per-call packing.
// Measured on one core, all-FA, T 4096, 9/3 heads, d 64: chunk 128 / 256 / 512 / 1024 keys gave
// 54 / 62 / 65 / 67 GFLOP/s; 512 keeps the tile in L2 at d = 128 too.
constexpr int64_t kTileQ = 64;
constexpr int64_t kChunkK = 512;
constexpr int kPackHeads = 4;  // query heads of a GQA group per work item (up to 256 packed rows)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct KeyRange {
    int64_t begin, end;
};

struct WorkItem {
    int32_t head;        // first query head
    int32_t n_heads;     // query heads of the same group packed into the item
    int64_t row0, row1;  // query positions [row0, row1)
    int64_t cost;        // rows × keys computed
};

// Token-exact key ranges that rows [i0, i1) of a head can attend (clipped causally to < i1).
void key_ranges(HeadMode m, const StreamingWindow& w, const BlockList* xa, int64_t block, int64_t i0, int64_t i1,
                std::vector<KeyRange>& out) {
    out.clear();
    switch (m) {
        case HeadMode::FA: out.push_back({0, i1}); break;
        case HeadMode::SSA: {
            const int64_t sink_end = std::min(w.sink, i1);
            const int64_t win_begin = std::max<int64_t>(0, i0 - w.local + 1);
            if (win_begin <= sink_end) {
                out.push_back({0, i1});
            } else {
                if (sink_end > 0) out.push_back({0, sink_end});
                out.push_back({win_begin, i1});
            }
            break;
        }
        case HeadMode::XA: {
            const int64_t qb = i0 / block;
            for (int64_t x = xa->offsets[size_t(qb)]; x < xa->offsets[size_t(qb) + 1]; ++x) {
                const int64_t b0 = int64_t(xa->blocks[size_t(x)]) * block, b1 = std::min(b0 + block, i1);
                if (b0 >= b1) continue;
                if (!out.empty() && out.back().end == b0)
                    out.back().end = b1;
                else
                    out.push_back({b0, b1});
            }
            break;
        }
    }
}

int64_t range_keys(const std::vector<KeyRange>& r) {
    int64_t n = 0;
    for (const KeyRange& x : r) n += x.end - x.begin;
    return n;
}

// Sets s[r][j] = -inf for keys j in [c0, c0 + n) that row i0 + r may not see.
void mask_chunk(float* s, int64_t ld, int64_t nq, int64_t i0, int64_t c0, int64_t n, HeadMode m,
                const StreamingWindow& w) {
    const int64_t c1 = c0 + n;
    const bool ssa = m == HeadMode::SSA;
    // Fully visible for every row: all keys causal for the first row, and (SSA) all inside the
    // sink or inside the window of the last row.
    const bool causal_ok = c1 - 1 <= i0;
    const bool window_ok = !ssa || c1 <= w.sink || c0 > i0 + nq - 1 - w.local;
    if (causal_ok && window_ok) return;
    for (int64_t r = 0; r < nq; ++r) {
        const int64_t i = i0 + r;
        float* row = s + r * ld;
        for (int64_t j = std::max(c0, i + 1); j < c1; ++j) row[j - c0] = kNegInf;  // causal
        if (ssa) {  // keys in [sink, i - local] are outside both the sink and the window
            const int64_t a = std::max(c0, w.sink), b = std::min(c1, i - w.local + 1);
            for (int64_t j = a; j < b; ++j) row[j - c0] = kNegInf;
        }
    }
}

struct Scratch {
    std::vector<float> qp, op;  // packed queries / unnormalised outputs [rows, d]
    std::vector<float> s;       // scores / probabilities [rows, kChunkK]
    std::vector<float> m, l;    // running max (base-2 units) and sum per row [rows]
};

// One work item: query heads [h0, h0 + nh) of one GQA group (they share K/V, mode and masks), rows
// [i0, i1). The nh × nq query rows are packed into one matrix (row hh·nq + r is head h0 + hh at
// position i0 + r) so each K/V chunk is packed by OpenBLAS once for the whole group.
void run_item(const WorkItem& it, const float* q, const float* k, const float* v, float* out, int n_head,
              int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win, int64_t xa_block,
              float scale, std::vector<KeyRange>& ranges, Scratch& st) {
    const int group = n_head / n_kv_head;
    const int g = it.head / group, nh = it.n_heads;
    const HeadMode mode = plan.mode[size_t(g)];
    const int64_t ldq = int64_t(n_head) * head_dim, ldk = int64_t(n_kv_head) * head_dim, d = head_dim;
    const int64_t i0 = it.row0, nq = it.row1 - it.row0, M = nh * nq;
    const float* kg = k + int64_t(g) * d;
    const float* vg = v + int64_t(g) * d;
    key_ranges(mode, win, mode == HeadMode::XA ? &plan.xa[size_t(g)] : nullptr, xa_block, i0, it.row1, ranges);

    float* qp = st.qp.data();
    float* op = st.op.data();
    for (int hh = 0; hh < nh; ++hh)
        for (int64_t r = 0; r < nq; ++r)
            std::copy_n(q + (i0 + r) * ldq + (it.head + hh) * d, d, qp + (hh * nq + r) * d);
    std::fill(st.m.begin(), st.m.begin() + M, kNegInf);
    std::fill(st.l.begin(), st.l.begin() + M, 0.0f);
    bool first = true;
    for (const KeyRange& kr : ranges) {
        const int64_t len = kr.end - kr.begin;
        const int64_t n_chunks = (len + kChunkK - 1) / kChunkK;
        const int64_t step = (len + n_chunks - 1) / n_chunks;  // even chunks: no tiny remainder
        for (int64_t c0 = kr.begin; c0 < kr.end; c0 += step) {
            const int64_t n = std::min(step, kr.end - c0);
            float* s = st.s.data();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(n), int(d), scale * kLog2e, qp, int(d),
                        kg + c0 * ldk, int(ldk), 0.0f, s, int(n));
            for (int hh = 0; hh < nh; ++hh) mask_chunk(s + hh * nq * n, n, nq, i0, c0, n, mode, win);
            for (int64_t r = 0; r < M; ++r) {
                float* row = s + r * n;
                const float mx = row_max(row, n, kNegInf);
                const float m_old = st.m[size_t(r)], m_new = std::max(m_old, mx);
                if (m_new == kNegInf) {  // nothing visible yet for this row
                    std::fill(row, row + n, 0.0f);
                    continue;
                }
                const float sum = exp2_row(row, n, m_new);
                const float alpha = exp2_nonpos(m_old - m_new);
                st.m[size_t(r)] = m_new;
                st.l[size_t(r)] = st.l[size_t(r)] * alpha + sum;
                if (!first && alpha != 1.0f) {
                    float* o = op + r * d;
#pragma omp simd
                    for (int64_t x = 0; x < d; ++x) o[x] *= alpha;
                }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(d), int(n), 1.0f, s, int(n),
                        vg + c0 * ldk, int(ldk), first ? 0.0f : 1.0f, op, int(d));
            first = false;
        }
    }
    for (int hh = 0; hh < nh; ++hh)
        for (int64_t r = 0; r < nq; ++r) {
            const float inv = 1.0f / st.l[size_t(hh * nq + r)];
            const float* o = op + (hh * nq + r) * d;
            float* dst = out + (i0 + r) * ldq + (it.head + hh) * d;
#pragma omp simd
            for (int64_t x = 0; x < d; ++x) dst[x] = o[x] * inv;
        }
}


}  // namespace

void check_prefill_args(int64_t T, int n_head, int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                int64_t xa_block) {
    ELASTIC_ASSERT(T >= 0 && n_kv_head > 0 && n_head % n_kv_head == 0 && head_dim > 0);
    ELASTIC_ASSERT(plan.mode.size() == size_t(n_kv_head));
    ELASTIC_ASSERT(win.sink >= 0 && win.local >= 1);
    for (int g = 0; g < n_kv_head; ++g)
        if (plan.mode[size_t(g)] == HeadMode::XA) {
            ELASTIC_ASSERT(xa_block > 0 && plan.xa.size() == size_t(n_kv_head));
            ELASTIC_ASSERT(plan.xa[size_t(g)].n_query_blocks() == (T + xa_block - 1) / xa_block);
        }
}

// The softmax row loops are ~25 % of prefill time at d = 64. GCC's default for -march=native on
// AVX-512 machines is 256-bit vectors; 512 bits here cut exp2_row's share of full prefill from
// ~16 % to ~12 % of the samples. The max must be written `r > x ? r : x` under omp simd: with
// std::max GCC 12 leaves the reduction scalar (it was 60 % of the softmax time).
__attribute__((target("prefer-vector-width=512"))) float row_max(const float* x, int64_t n, float init) {
    float r = init;
#pragma omp simd reduction(max : r)
    for (int64_t j = 0; j < n; ++j) r = r > x[j] ? r : x[j];
    return r;
}

__attribute__((target("prefer-vector-width=512"))) float exp2_row(float* x, int64_t n, float m) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {
        const float p = exp2_nonpos(x[j] - m);
        x[j] = p;
        sum += p;
    }
    return sum;
}

void attn_hybrid_prefill(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                         int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                         int64_t xa_block, float scale) {
    check_prefill_args(T, n_head, n_kv_head, head_dim, plan, win, xa_block);
    const int group = n_head / n_kv_head;

    // Work items: query tiles of kTileQ rows × up to kPackHeads query heads of one group; XA tiles
    // never straddle a query block.
    const int pack = std::min(group, kPackHeads);
    std::vector<WorkItem> items;
    std::vector<KeyRange> ranges;
    for (int g = 0; g < n_kv_head; ++g)
        for (int h = g * group; h < (g + 1) * group; h += pack) {
            const int nh = std::min(pack, (g + 1) * group - h);
            const HeadMode mode = plan.mode[size_t(g)];
            const BlockList* xa = mode == HeadMode::XA ? &plan.xa[size_t(g)] : nullptr;
            for (int64_t r0 = 0; r0 < T;) {
                int64_t r1 = std::min(r0 + kTileQ, T);
                if (mode == HeadMode::XA) r1 = std::min(r1, (r0 / xa_block + 1) * xa_block);
                key_ranges(mode, win, xa, xa_block, r0, r1, ranges);
                items.push_back({int32_t(h), nh, r0, r1, nh * (r1 - r0) * range_keys(ranges)});
                r0 = r1;
            }
        }
    std::stable_sort(items.begin(), items.end(), [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });

#pragma omp parallel
    {
        Scratch st;
        const size_t rows = size_t(pack * kTileQ);
        st.qp.resize(rows * size_t(head_dim));
        st.op.resize(rows * size_t(head_dim));
        st.s.resize(rows * size_t(kChunkK));
        st.m.resize(rows);
        st.l.resize(rows);
        std::vector<KeyRange> rg;
#pragma omp for schedule(dynamic, 1)
        for (size_t x = 0; x < items.size(); ++x)
            run_item(items[x], q, k, v, out, n_head, n_kv_head, head_dim, plan, win, xa_block, scale, rg, st);
    }
}

}  // namespace elastic::cpu
