// Elastic attention on the CPU: the hybrid prefill (every KV head in its own mode, one parallel
// pass; DESIGN.md §1.2, §1.5), the per-head lean KV cache with split-KV decode (§1.6), and the
// XAttention block estimation. src/cuda/attention.h holds the same ops under the same names; the
// naive versions here (attention-reference.cpp) are the specification both are tested against.
// Files: attention-prefill.cpp, attention-decode.cpp, kv-cache.cpp, xattention.cpp,
// attention-reference.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "attention/plan.h"

namespace elastic::cpu {

// ---- Prefill ----
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

// Argument checks (ELASTIC_ASSERT) shared by the fast and the reference kernels.
void check_prefill_args(int64_t T, int n_head, int n_kv_head, int head_dim, const LayerPlan& plan,
                        const StreamingWindow& win, int64_t xa_block);
void check_xa_args(int64_t T, int n_head, int n_kv_head, int g, const XAParams& p);

// ---- KV cache and decode ----
// Per-head KV cache of one layer and the decode attention that reads it, CPU (DESIGN.md §1.6).
// Each KV head stores what its mode needs: FA and XA heads every token (XA heads decode densely,
// as the paper's reference does: block selection is a prefill-time decision and a single query
// row has no blocks to choose between); SSA heads the first `sink` tokens plus a ring buffer of
// the last `local` tokens (position j >= sink lives in ring slot j % local). KV memory therefore
// falls roughly by the share of SSA heads.
class LayerKVCache {
public:
    struct Span {
        int64_t begin, end;  // slot range in k(g) / v(g)
    };

    // capacity: the most positions the sequence will reach (prompt + generated).
    void init(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity, int n_kv_head, int head_dim);
    // k, v [T, n_kv_head, head_dim]: positions 0..T-1 of the prompt.
    void store_prefill(const float* k, const float* v, int64_t T);
    // k_tok, v_tok [n_kv_head, head_dim]: the token at position pos.
    void append(const float* k_tok, const float* v_tok, int64_t pos);

    // Slot ranges of head g a query at position pos attends (all stored positions <= pos that
    // the head's mode keeps); at most three (sink, ring tail, ring head).
    int spans(int g, int64_t pos, Span out[3]) const;
    const float* k(int g) const { return heads_[size_t(g)].k.data(); }  // [slots, head_dim]
    const float* v(int g) const { return heads_[size_t(g)].v.data(); }
    HeadMode mode(int g) const { return heads_[size_t(g)].mode; }
    int n_kv_head() const { return int(heads_.size()); }
    int head_dim() const { return head_dim_; }
    size_t bytes() const;  // K and V storage of all heads

private:
    struct Head {
        HeadMode mode = HeadMode::FA;
        int64_t n_sink = 0, n_ring = 0;  // SSA: slots [0, n_sink) sink, [n_sink, n_sink + n_ring) ring
        std::vector<float> k, v;         // [slots, head_dim]
    };
    int64_t slot(const Head& h, int64_t pos) const;  // -1: not kept
    std::vector<Head> heads_;
    StreamingWindow win_;
    int64_t capacity_ = 0;
    int head_dim_ = 0;
};

// Decode attention of one token at position pos (already appended): q, out [n_head, head_dim].
// Split-KV (flash-decoding): each KV head's spans are cut into pieces when there is more key work
// than threads; each piece handles the whole GQA group (G query rows) and leaves (max, sum, o);
// the pieces of a head are merged at the end.
void attn_decode(const float* q, const LayerKVCache& cache, int64_t pos, float* out, int n_head, float scale);

// Reference: fp64 over a full cache k, v [pos + 1, n_kv_head, head_dim] with the decode masks
// (SSA heads: sink + window; FA and XA heads: every position <= pos).
void attn_decode_naive(const float* q, const float* k, const float* v, int64_t pos, float* out, int n_head,
                       int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win, float scale);

// ---- XAttention estimation ----
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
// Block list of KV head g. q [T, n_head, d], k [T, n_kv_head, d]. Requires block % stride == 0.
// Works through query rows in chunks of p.chunk_rows (rounded to whole blocks): memory is the
// strided K of the head (T·d floats) plus chunk_rows / S × R scores.
BlockList xa_estimate_head(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim, int g,
                           const XAParams& p);

// Fills plan.xa[g] for every XA head of the plan (plan.xa is resized to n_kv_head).
void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                  const XAParams& p, LayerPlan& plan);

// Reference block scores of KV head g: [nb, nb] row-major (query block, key block), summed over the
// group's query heads, fp64 straight from the definition above; entries kb > qb are zero.
std::vector<double> xa_block_scores_naive(const float* q, const float* k, int64_t T, int n_head, int n_kv_head,
                                          int head_dim, int g, const XAParams& p);

// Reference: straightforward fp64 loops over the definition above.
BlockList xa_estimate_head_naive(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                                 int g, const XAParams& p);

}  // namespace elastic::cpu
