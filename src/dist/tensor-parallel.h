// Tensor-parallel inference (issue 14): N ranks run one sequence together, each on its own backend,
// and meet in two all-reduces per layer (Megatron's split).
//   - Attention is split by KV head. Every rank runs the norm and the router (replicated: the
//     router reads at most 200 rows of keys), so all ranks hold the same plan; the layer's KV heads
//     are then placed on ranks by their attended pairs at this prompt length (placement.h: balanced
//     or contiguous), since an FA head at 128K costs ~30x a streaming one; balanced placement also
//     gives each layer's heaviest share to the rank with the least so far (spread_over_layers), so
//     the work and KV memory summed over layers stay even too. A rank projects q, k, v
//     only for its heads' groups (rows of wq, wk, wv), runs their hybrid attention, keeps their KV
//     caches, multiplies by its columns of wo, and the partial outputs are summed. The placement is
//     made once per sequence at prefill; decode keeps it (each cache stays with its rank).
//   - The FFN is split statically by intermediate columns (rows of w_gate and w_up, columns of
//     w_down), summed after w_down.
//   - Weights: the attention projections are on every rank (the placement changes per request);
//     the FFN is sharded; embeddings, norms, router and output projection are replicated, and every
//     rank computes the logits.
// The steps are those of the single-process forward (model/layer.h); the results equal it up to the
// order of summation inside the wo and w_down products (the partial sums and the all-reduce).
// LocalTensorParallel runs the ranks as threads over a LocalGroup on CPU backends: the code path of
// N GPUs with an in-process communicator, for tests and `elastic bench tp`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attention/elastic.h"
#include "dist/comm.h"
#include "model/model.h"

namespace elastic::dist {

enum class Placement { Contiguous, Balanced };
const char* placement_name(Placement p);
Placement parse_placement(const std::string& s);  // balanced | contiguous; elastic::Error otherwise

// What each KV head of a layer will cost once its mode is chosen, before any attention runs:
// attended (query, key) pairs per query head over positions 0..T-1. FA: T(T+1)/2; SSA: exact for
// the window; XA: counted as FA (its blocks are chosen by the rank that owns it, after placement).
std::vector<double> mode_costs(const std::vector<HeadMode>& modes, const StreamingWindow& win, int64_t T);

// The model's matrices cut for N ranks on the host, once (ranks of one process share it).
// Attention by KV group g (query heads g·G .. g·G+G-1, G = n_head / n_kv_head): rows of wq, wk, wv
// (views) and columns of wo (a copy, in the stored type where the group's columns fall on its
// block boundaries). FFN by rank: intermediate columns [begin, end) in whole blocks of w_down's type.
struct TpSlices {
    TpSlices(const Model& m, int ranks);
    struct Group {
        Weight wq, wk, wv, wo;
    };
    struct Layer {
        std::vector<Group> groups;                // [n_kv_head]
        std::vector<Weight> w_gate, w_up, w_down;  // [rank]
    };
    int ranks;
    std::vector<Layer> layers;
    std::vector<int64_t> ffn_begin;  // [ranks + 1] intermediate columns of each rank (all layers alike)
};

// One rank's weights on its backend (the tensor-parallel Engine).
class TpEngine {
public:
    TpEngine(const Model& model, const TpSlices& slices, int rank, Backend& backend, const Router* router = nullptr);
    TpEngine(const TpEngine&) = delete;
    TpEngine& operator=(const TpEngine&) = delete;

    using MatrixRef = Engine::MatrixRef;
    using VectorRef = Engine::VectorRef;
    struct Group {
        MatrixRef wq, wk, wv, wo;
    };
    struct Layer {
        VectorRef attn_norm, ffn_norm, q_norm, k_norm;
        MatrixRef wk;               // every KV head: the router's keys
        std::vector<Group> groups;  // [n_kv_head]: every group (the placement is per request)
        MatrixRef w_gate, w_up, w_down;  // this rank's intermediate columns
        std::unique_ptr<const Backend::RouterWeights> router;
    };

    const Model& model;
    Backend& backend;
    const Router* router;
    int rank, ranks;
    MatrixRef tok_embd, output;
    VectorRef out_norm, inv_freq;
    std::vector<Layer> layers;
};

// One rank's share of one sequence. forward() is collective: every rank of the communicator calls
// it with the same tokens, in the same order.
class TpSession {
public:
    TpSession(const TpEngine& engine, Communicator& comm, int64_t capacity, const AttentionSpec& spec = AttentionSpec{},
              Placement placement = Placement::Balanced, int64_t chunk = 512);
    ~TpSession();
    TpSession(const TpSession&) = delete;
    TpSession& operator=(const TpSession&) = delete;

    // Appends n tokens at positions pos()..pos()+n-1 (the first call is the prefill). Afterwards
    // last_logits() holds the last position's logits, the same on every rank.
    void forward(const int32_t* ids, int64_t n);
    // What forward() checks first (room in the context, token ids), with the same elastic::Error.
    // Every rank checks the same tokens alike, so a mistake stops them all before any collective.
    void check(const int32_t* ids, int64_t n) const;
    const std::vector<float>& last_logits() const { return last_logits_; }
    int64_t pos() const { return pos_; }
    int rank() const { return e_.rank; }

    // Of the last prefill, over all ranks: modes, router P(FA), pruned shares of every head (each
    // rank contributes its heads'), KV bytes of all ranks; the times are this rank's.
    const AttentionStats& stats() const { return stats_; }
    // [layer]: modes of every head (replicated); XA block lists only for this rank's heads.
    const std::vector<LayerPlan>& plans() const { return plans_; }
    // [layer][kv_head]: the rank that owns each head, from the last prefill.
    const std::vector<std::vector<int>>& rank_of() const { return rank_of_; }
    size_t kv_bytes() const;  // this rank's caches

    // This rank's attention work. Times are CPU time of the calling thread (the rank's own work when
    // it runs with one OpenMP thread, as LocalTensorParallel does by default): RoPE, XAttention
    // estimation and the attention kernels of its heads, not the projections.
    struct Load {
        std::vector<double> pairs;            // [layer] attended (q, k) pairs per query head, summed over its KV heads (prefill)
        std::vector<double> prefill_seconds;  // [layer]
        double decode_seconds = 0;            // all decode steps so far
    };
    const Load& load() const { return load_; }

private:
    void layer(int l, int64_t n, const int32_t* pos);
    void plan_layer(int l, int64_t n);  // prefill: route, choose modes, place heads
    void ensure_scratch(int64_t rows);
    void release_scratch();

    const TpEngine& e_;
    const ModelConfig& c_;
    Backend& be_;
    Communicator& comm_;
    int64_t cap_, chunk_;
    AttentionSpec spec_;
    Placement placement_;
    int64_t pos_ = 0;
    int64_t sparse_so_far_ = 0;
    std::vector<LayerPlan> plans_;
    std::vector<std::vector<int>> rank_of_;
    std::vector<double> placed_;  // [rank] predicted pairs placed on each rank by the layers so far
    std::vector<std::vector<float>> prob_fa_;  // [layer] router P(FA) (empty: not routed)
    std::vector<std::vector<std::unique_ptr<Backend::LayerCache>>> caches_;  // [layer][kv_head], null where not ours
    AttentionStats stats_;
    Load load_;
    // Scratch: x, h (residual stream and normed rows), part, tmp (partial outputs) [rows, D] f32;
    // q, att [rows, G·d], k, v [rows, d] (one group at a time) and kr [min(rows, 2·window), n_kv_head·d]
    // (the router's keys) in the attention type; gate, up [chunk, this rank's intermediate columns].
    int64_t rows_ = 0;
    Buf x_, h_, part_, tmp_, q_, k_, v_, att_, kr_, gate_, up_, logits_;
    std::vector<float> last_logits_;
};

// N ranks as threads of this process, each with a CPU backend, its TpEngine and TpSession, over a
// LocalGroup: the multi-GPU code path with the fake communicator. forward() runs every rank on its
// own thread (with `threads_per_rank` OpenMP threads) and returns when all are done; an error on one
// rank is rethrown here (the group is then unusable).
class LocalTensorParallel {
public:
    LocalTensorParallel(const Model& model, const Router* router, int ranks, int64_t capacity,
                        const AttentionSpec& spec = AttentionSpec{}, Placement placement = Placement::Balanced,
                        int threads_per_rank = 1);
    ~LocalTensorParallel();
    void forward(const int32_t* ids, int64_t n);
    int ranks() const { return int(sessions_.size()); }
    const TpSession& rank(int r) const { return *sessions_[size_t(r)]; }
    const std::vector<float>& last_logits() const { return sessions_[0]->last_logits(); }

private:
    LocalGroup group_;
    int threads_;
    TpSlices slices_;
    std::vector<std::unique_ptr<Communicator>> comms_;
    std::vector<std::unique_ptr<Backend>> backends_;
    std::vector<std::unique_ptr<TpEngine>> engines_;
    std::vector<std::unique_ptr<TpSession>> sessions_;
};

}  // namespace elastic::dist
