// XAttention block estimation (Xu et al. 2025; DESIGN.md §1.2), CPU: which key blocks each query
// block of an XA head attends. Antidiagonal scoring on strided Q/K, softmax per strided query
// row, block sums, then per query block the smallest set of key blocks reaching a threshold of the
// mass, always with block 0 (sink) and the diagonal block.
//
// Definitions (b = block, S = stride, R = ceil(T / S) strided positions, rows past T are zero):
//   A[r][c] = sum_{t<S} q[S r + S-1-t] · k[S c + t] / (sqrt(d) · S)      for c <= r (causal)
//   P[r][.] = softmax over c in [0, r] of A[r][.]
//   score[qb][kb] = sum over strided rows r of block qb and columns c of block kb of P[r][c]
// GQA: the scores of a KV head are the sum over its group's query heads of score_h, normalised
// per query block by their total (the group votes with its combined mass; one block list per KV
// head, as the kernel needs). Selection: blocks 0 and qb count first (as the reference
// find_blocks_chunked does), then the rest in descending score (ties: lower block id first) while
// the kept mass is below threshold · total.
#pragma once
#include <cstdint>
#include <vector>

#include "attention/plan.h"

namespace elastic::cpu {

// Block list of KV head g. q [T, n_head, d], k [T, n_kv_head, d]. Requires block % stride == 0.
// Works through query rows in chunks of p.chunk_rows (rounded to whole blocks): memory is the
// strided K of the head (T·d floats) plus chunk_rows / S × R scores.
BlockList xa_estimate_head(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim, int g,
                           const XAParams& p);

// Fills plan.xa[g] for every XA head of the plan (plan.xa is resized to n_kv_head).
void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                  const XAParams& p, LayerPlan& plan);

// The selection rule, shared by every backend: s [qb + 1] are the summed scores of query block
// qb; blocks 0 and qb first, then descending score (ties: lower id) while the kept mass is below
// threshold · total; appends the kept ids, ascending, to out. `order` is scratch.
void xa_select_blocks(const double* s, int64_t qb, double threshold, std::vector<int32_t>& out, std::vector<int32_t>& order);

// Reference: straightforward fp64 loops over the definition above.
BlockList xa_estimate_head_naive(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                                 int g, const XAParams& p);

}  // namespace elastic::cpu
