// The attention plan of one sequence: per (layer, KV head) the mode the head runs in, the
// streaming window, and XAttention's kept key blocks. Made once at prefill (router or baseline)
// and kept for the sequence's decode (DESIGN.md §1.2). The query heads of a GQA group share their
// KV head's plan.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace elastic {

enum class HeadMode : uint8_t { FA = 0, SSA = 1, XA = 2 };
const char* head_mode_name(HeadMode m);

struct StreamingWindow {
    int64_t sink = 128;    // query i sees key j if j < sink ...
    int64_t local = 2048;  // ... or i - j < local   (and j <= i)
};

struct XAParams {
    int64_t block = 128;       // query/key block size (64 or 128)
    int64_t stride = 16;       // antidiagonal stride S
    double threshold = 0.9;    // keep the smallest set of key blocks reaching this share of the mass
    int64_t chunk_rows = 16384;  // estimation works on this many query rows at a time
};

// Kept key blocks of one KV head, CSR over query blocks: the key blocks of query block qb are
// blocks[offsets[qb] .. offsets[qb+1]), ascending, always containing block 0 and block qb.
struct BlockList {
    std::vector<int64_t> offsets;
    std::vector<int32_t> blocks;
    int64_t n_query_blocks() const { return offsets.empty() ? 0 : int64_t(offsets.size()) - 1; }
};

struct LayerPlan {
    std::vector<HeadMode> mode;   // [n_kv_head]
    std::vector<BlockList> xa;    // [n_kv_head]; filled for XA heads only (see xa_on_device)
    // Set by Backend::xa_prefill_plan on a backend that keeps the XA selection in device memory
    // (CUDA): the lists of xa stay empty on the host, the next attn_hybrid_prefill of that backend
    // reads them where they are, and Backend::xa_finish_plan fills xa_pairs (attended (query, key)
    // pairs per KV head, 0 for others; what attended_pairs would give) for Ω_ESR;
    // Backend::xa_download copies the lists to the host when a caller needs them.
    bool xa_on_device = false;
    std::vector<int64_t> xa_pairs;  // [n_kv_head] when xa_on_device
    // Set by Backend::route_prefill on a backend that routes on the device (CUDA): the modes were
    // written into the device plan of the next attn_hybrid_prefill and `mode` is empty until
    // Backend::route_result reads them back (and clears this).
    bool modes_on_device = false;
};

// One sequence's attention problem in training (positions 0..T-1; src/train and
// Backend::attn_forward_lse / attn_backward). Query head h reads KV head h / (n_head / n_kv_head).
struct AttnShape {
    int64_t T = 0;
    int n_head = 0, n_kv_head = 0, head_dim = 0;
    float scale = 0;         // usually 1/sqrt(head_dim)
    StreamingWindow win;     // SSA heads
    int64_t xa_block = 128;  // XA heads: block size of plan.xa
    int64_t tile = 64;       // CPU: query and key rows per tile; results do not depend on it beyond rounding
};

// Whether query position i may attend key position j under a head's plan (j <= i assumed).
// The reference semantics every kernel must match.
bool plan_allows(HeadMode m, const StreamingWindow& w, const BlockList* xa, int64_t block, int64_t i, int64_t j);

// Number of (query, key) pairs one KV head's plan attends over positions 0..T-1 (per query head
// of its group); T(T+1)/2 for FA. For FLOP counts, densities and Ω_ESR.
int64_t attended_pairs(HeadMode m, const StreamingWindow& win, const BlockList* xa, int64_t xa_block, int64_t T);

// XAttention's selection rule, shared by every backend: s [qb + 1] are the summed scores of query
// block qb; blocks 0 and qb first, then descending score (ties: lower id) while the kept mass is
// below threshold · total; appends the kept ids, ascending, to out. `order` is scratch.
void xa_select_blocks(const double* s, int64_t qb, double threshold, std::vector<int32_t>& out, std::vector<int32_t>& order);

}  // namespace elastic
