// The steps of one transformer layer, shared by the single-sequence forward (layer.cpp: Session,
// DecodeBatch) and the tensor-parallel forward (src/dist/tensor-parallel.cpp). Each step takes its
// weight handles and head counts explicitly, so a rank runs the same code over its share of the
// KV heads (and of the FFN's intermediate columns) that one process runs over all of them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "attention/elastic.h"
#include "model/backend.h"

namespace elastic {

// The heads of one attention call: n_head query heads over n_kv_head KV heads (GQA groups of
// n_head / n_kv_head), head_dim each.
struct HeadShape {
    int n_head = 0, n_kv_head = 0, head_dim = 0;
};

// q [n, n_head·d], k, v [n, n_kv_head·d] = the projections of the normed rows h [n, D], then
// Qwen3's per-head RMSNorms on q and k (q_norm, k_norm null: none).
void project_qkv(Backend& be, const Backend::Matrix& wq, const Backend::Matrix& wk, const Backend::Matrix& wv,
                 const Backend::Vector* q_norm, const Backend::Vector* k_norm, float eps, Buf h, Buf q, Buf k, Buf v,
                 int64_t n, const HeadShape& s);

// The router's decision for one layer from the pre-RoPE keys k [T, n_kv_head, d] (DESIGN.md §1.1);
// rw null (a layer the router does not cover): full attention for every head. The router's time
// goes to stats.router_seconds.
RouterDecision route_layer(Backend& be, const Backend::RouterWeights* rw, int window, Buf k, int64_t T, int n_kv_head,
                           int head_dim, AttentionStats& stats);

// Prefill attention of positions pos[0..T) (from 0) in the plan's modes: RoPE on q and k,
// XAttention block lists for the plan's XA heads, the hybrid prefill into att [T, n_head·d], and a
// new KV cache (room for `capacity` positions) holding k, v. Times go to stats (xa_seconds,
// attention_seconds).
std::unique_ptr<Backend::LayerCache> prefill_attention(Backend& be, const Backend::Vector& inv_freq, Buf q, Buf k, Buf v,
                                                       Buf att, int64_t T, const int32_t* pos, const HeadShape& s,
                                                       LayerPlan& plan, const AttentionSpec& spec, int64_t capacity,
                                                       AttentionStats& stats);

// The same for a layer routed on the device (Backend::route_prefill; rw: its router, rule: the
// modes of its decision): the router, its decision and the modes go straight into the device plan
// the attention reads, and the host waits for the router's kernels only once the attention is
// queued, to size the lean cache. The decision and plan.mode are filled; the router's device time
// goes to stats.router_seconds, and the attention's span (two Backend::mark()s) to attn_marks, read
// once the prefill is done.
std::unique_ptr<Backend::LayerCache> prefill_attention_routed(Backend& be, const Backend::Vector& inv_freq,
                                                              const Backend::RouterWeights& rw, int window,
                                                              const Backend::RouteRule& rule, Buf q, Buf k, Buf v,
                                                              Buf att, int64_t T, const int32_t* pos, const HeadShape& s,
                                                              LayerPlan& plan, RouterDecision& decision,
                                                              const AttentionSpec& spec, int64_t capacity,
                                                              AttentionStats& stats,
                                                              std::vector<std::pair<int, int>>& attn_marks);

// Qwen3's per-head RMSNorms on q [n, n_head·d] and k [n, n_kv_head·d], in place (q_norm null: none).
void qk_norms(Backend& be, const Backend::Vector* q_norm, const Backend::Vector* k_norm, float eps, Buf q, Buf k,
              int64_t n, const HeadShape& s);

// Decode attention: the per-head norms (q_norm, k_norm null: none, or already applied) and RoPE of
// q and k, and row t (at position pos[t]) joining the cache caches[t], in one step
// (Backend::qk_norm_rope_append: one launch on CUDA); then each row attends to its cache.
// q, att [n, n_head·d]; k, v [n, n_kv_head·d].
void decode_attention(Backend& be, const Backend::Vector& inv_freq, Buf q, Buf k, Buf v, Buf att, int64_t n,
                      const int32_t* pos, Backend::LayerCache* const* caches, const HeadShape& s,
                      const Backend::Vector* q_norm = nullptr, const Backend::Vector* k_norm = nullptr, float eps = 0);

// The FFN block over n rows of the residual stream x [n, D], in chunks of `chunk` rows:
// h = rms_norm(x), x += w_down(silu(w_gate h) * (w_up h)). gate, up: scratch [chunk, w_gate.rows],
// h: scratch [n, D]. reduce (may be empty) sees each chunk's w_down output [m, D] before it is
// added: the tensor-parallel all-reduce of the ranks' partial products.
void ffn_rows(Backend& be, const Backend::Vector& norm, const Backend::Matrix& w_gate, const Backend::Matrix& w_up,
              const Backend::Matrix& w_down, float eps, Buf x, Buf h, Buf gate, Buf up, int64_t n, int64_t D,
              int64_t chunk, const std::function<void(Buf, int64_t)>& reduce);

}  // namespace elastic
