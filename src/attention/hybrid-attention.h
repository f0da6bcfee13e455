// Hybrid (elastic) prefill attention on the CPU: every KV head of a layer runs in its own mode
// (FA dense causal, SSA sink + local window, XA block-sparse; DESIGN.md §1.2), all heads in one
// parallel pass (§1.5). The naive versions are the specification the fast path and the CUDA
// kernels are checked against.
#pragma once
#include <cstdint>
#include <vector>

#include "attention/plan.h"

namespace elastic::cpu {

// Layer-major prefill of one sequence, positions 0..T-1.
//   q, out [T, n_head, head_dim]; k, v [T, n_kv_head, head_dim]
// Query head h reads KV head h / (n_head / n_kv_head) (GQA, K/V never repeated). XA heads read
// plan.xa[g] with blocks of xa_block tokens. Tiled with online softmax: memory per thread is
// O(tile), and key tiles a head does not attend are skipped. Parallel with OpenMP over (query
// tile, query heads of one group packed together), longest items first; OpenBLAS must be
// single-threaded (backend-cpu.cpp).
void attn_hybrid_prefill(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                         int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                         int64_t xa_block, float scale);

// Reference: an explicit plan_allows() mask for every (i, j), fp64 accumulation. Same arguments.
void attn_hybrid_naive(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                       int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                       int64_t xa_block, float scale);

// The reference for a subset of query positions only (rows of out not listed are left untouched):
// lets long sequences be checked on a sample. Parallel over rows.
void attn_hybrid_naive_rows(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                            int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                            int64_t xa_block, float scale, const std::vector<int64_t>& rows);

// Number of (query, key) pairs one KV head's plan attends over positions 0..T-1 (per query head
// of its group); T(T+1)/2 for FA. For FLOP counts and densities.
int64_t attended_pairs(HeadMode m, const StreamingWindow& win, const BlockList* xa, int64_t xa_block, int64_t T);

// 2^x for x <= 0 (x = -inf gives 0; results below 2^-126 flush to 0), relative error ~1e-7.
// Written so that loops over it vectorise (no libm call); shared by the softmax loops here.
inline float exp2_nonpos(float x) {
    const float xc = x < -127.0f ? -127.0f : x;               // also maps -inf to -127
    const float n = (xc + 12582912.0f) - 12582912.0f;        // round to nearest (1.5 * 2^23 trick)
    const float f = xc - n;                                   // [-0.5, 0.5]
    // Taylor series of 2^f = e^(f ln2) to degree 7: truncation error < 1e-8 on [-0.5, 0.5].
    float p = 1.5252734e-5f;
    p = p * f + 1.5403530e-4f;
    p = p * f + 1.3333558e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022651e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;           // 2^n; n = -127 gives +0
    return p * __builtin_bit_cast(float, bits);
}

// max(init, x[0..n)).
float row_max(const float* x, int64_t n, float init);
// x[j] = 2^(x[j] - m) in place (m >= every x[j]; -inf entries give 0); returns the sum.
float exp2_row(float* x, int64_t n, float m);

}  // namespace elastic::cpu
