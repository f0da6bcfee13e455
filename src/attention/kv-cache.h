// Per-head KV cache of one layer and the decode attention that reads it, CPU (DESIGN.md §1.6).
// Each KV head stores what its mode needs: FA and XA heads every token (XA heads decode densely,
// as the paper's reference does: block selection is a prefill-time decision and a single query
// row has no blocks to choose between); SSA heads the first `sink` tokens plus a ring buffer of
// the last `local` tokens (position j >= sink lives in ring slot j % local). KV memory therefore
// falls roughly by the share of SSA heads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "attention/plan.h"

namespace elastic::cpu {

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

}  // namespace elastic::cpu
