// How a run chooses each KV head's attention mode (DESIGN.md §1.2): the named configurations of
// routed heads (fa-ssa, fa-xa, xa-ssa), the baselines on the same code path (full, ssa, xa,
// static:FILE, msr:X), and the per-request statistics (Ω_MSR, Ω_ESR).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "attention/plan.h"
#include "attention/router.h"

namespace elastic {

struct AttentionSpec {
    enum class Kind { Full, SSA, XA, Routed, Static, MSR };
    Kind kind = Kind::Full;
    HeadMode full_mode = HeadMode::FA;    // mode of heads routed to full attention (Routed/Static/MSR)
    HeadMode sparse_mode = HeadMode::SSA; // mode of heads routed to sparse attention
    StreamingWindow win;
    XAParams xa;
    double msr = -1;  // MSR: the forced Ω_MSR; Static: share of lowest-scoring heads made sparse (-1: 0/1 set)
    std::vector<std::vector<float>> static_scores;  // Static: [layer][kv_head], higher = keep full
    std::string name;  // as given on the command line

    bool needs_router() const { return kind == Kind::Routed || kind == Kind::MSR; }
    // Whether a head in mode m counts toward Ω_MSR: SSA and XA in the all-sparse baselines; the
    // sparse mode of a routed configuration otherwise (fa-xa's XA heads, xa-ssa's SSA heads).
    bool counts_as_sparse(HeadMode m) const;
    // MODE: full | ssa | xa | fa-ssa | fa-xa | xa-ssa | static:FILE | msr:X. `msr` (from --msr) applies
    // to static:FILE. Throws Error for an unknown mode or a bad file.
    static AttentionSpec parse(const std::string& mode, double msr = -1);
};

// Reads per-head scores for static:FILE: JSON {"scores": [[...per kv head...] per layer]} or a
// text file with one line per layer of whitespace-separated numbers (0/1 sets work the same).
std::vector<std::vector<float>> read_head_scores(const std::string& path);
// The same from the file's text; `path` names it in errors.
std::vector<std::vector<float>> parse_head_scores(const std::string& text, const std::string& path);

// Chooses the modes of one layer. decision: the router's output for this layer (Routed / MSR);
// for MSR, sparse_so_far / heads_so_far carry the running count so the global Ω_MSR lands on the
// target: layer l makes round(X·(heads_so_far + H)) − sparse_so_far of its lowest-margin heads sparse.
std::vector<HeadMode> choose_modes(const AttentionSpec& spec, int layer, int n_kv_head, int n_layer,
                                   const RouterDecision* decision, int64_t sparse_so_far, int64_t heads_so_far);
// MSR's count of sparse heads for a layer of n_kv_head heads after heads_so_far heads of which
// sparse_so_far were sparse (the rule above, clamped to 0..n_kv_head).
int msr_sparse_heads(double msr, int n_kv_head, int64_t sparse_so_far, int64_t heads_so_far);

// Per-request statistics of one prefill.
struct AttentionStats {
    std::vector<std::vector<HeadMode>> modes;   // [layer][kv_head]
    std::vector<std::vector<float>> prob_fa;    // [layer][kv_head] router probability of FA (empty: no router)
    std::vector<std::vector<double>> pruned;    // [layer][kv_head] share of causal (q,k) pairs skipped
    int64_t tokens = 0;
    double omega_msr = 0;      // share of KV heads (all layers) in a sparse mode (SSA, or XA when XA is the sparse mode)
    double omega_esr = 0;      // paper: mean pruned share over the last layer's heads
    double omega_esr_all = 0;  // the same over every layer
    size_t kv_bytes = 0;
    double router_seconds = 0, xa_seconds = 0, attention_seconds = 0, prefill_seconds = 0;
    std::string to_json(bool per_layer) const;

    // Appends one prefill layer's modes, router P(FA) (empty: no router) and pruned shares.
    void record_layer(const LayerPlan& plan, const AttentionSpec& spec, int64_t T, std::vector<float> prob_fa);
    // After the last layer: Ω_MSR from the count of sparse heads, Ω_ESR from the pruned shares.
    void finish(int n_layer, int n_kv_head, int64_t sparse_heads, size_t kv_cache_bytes);
};

// Seconds on a monotonic clock, for the statistics' times.
double stats_clock();

}  // namespace elastic
