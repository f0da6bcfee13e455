// Session: one sequence on an Engine (model.h). forward() runs the layer function of layer.cpp over
// the new tokens, then the final norm and the logits; sampling picks the next token on the backend
// where it can.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>

#include "core/error.h"
#include "model/model.h"

namespace elastic {

namespace {
constexpr int64_t kLogitRows = 64;  // rows of logits computed at once when all are requested

// A decode step recorded as graphs (Backend::graph_begin), one per segment of `per` layers (0: the
// whole step in one), keyed base + segment: segment i+1 is captured on the host while the device
// runs segment i. An exception inside a capture ends it without running anything.
class StepGraph {
public:
    StepGraph(Backend& be, bool on, int per, int64_t base) : be_(be), on_(on), per_(per), key_(base) {}
    ~StepGraph() {
        if (open_) be_.graph_abort();
    }
    StepGraph(const StepGraph&) = delete;
    StepGraph& operator=(const StepGraph&) = delete;
    void begin() {
        if (on_) open_ = be_.graph_begin(key_++);
    }
    void after_layer(int l, int n_layer) {
        if (open_ && per_ > 0 && (l + 1) % per_ == 0 && l + 1 < n_layer) {
            end();
            begin();
        }
    }
    void end() {
        if (!open_) return;
        open_ = false;
        be_.graph_end();
    }

private:
    Backend& be_;
    bool on_, open_ = false;
    int per_;
    int64_t key_;
};

// Graph keys of a session's prefill: every prefill (and every session) records under its own
// range, so a backend shared by sessions never replays another's caches.
std::atomic<int64_t> next_graph_range{1};
constexpr int64_t kGraphKeysPerRange = int64_t(1) << 16;
}  // namespace

Session::Session(const Engine& engine, int64_t capacity, const AttentionSpec& spec, int64_t chunk)
    : e_(engine), c_(engine.model.config), be_(engine.backend), cap_(capacity), chunk_(std::max<int64_t>(1, chunk)),
      spec_(spec) {
    if (capacity <= 0) fail("context capacity must be positive");
    if (capacity > c_.max_ctx)
        fail("%lld tokens exceed the model's context length of %d", (long long)capacity, c_.max_ctx);
    if (spec_.needs_router() && !e_.router) fail("attention mode '%s' needs a router (--router PATH)", spec_.name.c_str());
    if (spec_.kind == AttentionSpec::Kind::Static) (void)choose_modes(spec_, 0, c_.n_kv_head, c_.n_layer, nullptr, 0, 0);
    last_logits_.resize(size_t(c_.vocab));
}

Session::~Session() {
    forget_graphs();
    b_.release(be_);
    if (logits_) be_.release(logits_);
}

void RowBuffers::alloc(Backend& be, const ModelConfig& c, int64_t rows, int64_t ffn_rows) {
    release(be);
    const int64_t qd = int64_t(c.n_head) * c.head_dim, kvd = int64_t(c.n_kv_head) * c.head_dim;
    const DType at = be.attn_type();
    x = be.alloc(size_t(rows * c.d_model), DType::F32);
    h = be.alloc(size_t(rows * c.d_model), DType::F32);
    q = be.alloc(size_t(rows * qd), at);
    att = be.alloc(size_t(rows * qd), at);
    k = be.alloc(size_t(rows * kvd), at);
    v = be.alloc(size_t(rows * kvd), at);
    gate = be.alloc(size_t(ffn_rows * c.d_ff), DType::F32);
    up = be.alloc(size_t(ffn_rows * c.d_ff), DType::F32);
}

void RowBuffers::release(Backend& be) {
    for (Buf* b : {&x, &h, &q, &k, &v, &att, &gate, &up})
        if (*b) {
            be.release(*b);
            *b = Buf{};
        }
}

void Session::reset() {
    forget_graphs();
    pos_ = 0;
    decode_steps_ = 0;
    plans_.clear();
    caches_.clear();
    stats_ = AttentionStats{};
}

int Session::graph_segments() const {
    const int per = be_.graph_layers();
    return per > 0 ? (c_.n_layer + per - 1) / per : 1;
}

void Session::forget_graphs() {
    if (graph_base_ < 0) return;
    for (int i = 0; i < graph_segments(); ++i) be_.graph_forget(graph_base_ + i);
    graph_base_ = -1;
}

size_t Session::kv_bytes() const {
    size_t n = 0;
    for (const auto& c : caches_) n += c->bytes();
    return n;
}

void Session::ensure_scratch(int64_t rows) {
    if (rows <= rows_) return;
    b_.alloc(be_, c_, rows, std::min(rows, chunk_));
    if (!logits_) logits_ = be_.alloc(size_t(kLogitRows * c_.vocab), DType::F32);
    rows_ = rows;
}

void Session::forward(const int32_t* ids, int64_t n, bool all_logits, const LogitsFn& on_logits) {
    if (n <= 0) return;
    if (pos_ + n > cap_) fail("%lld tokens exceed the session's context of %lld", (long long)(pos_ + n), (long long)cap_);
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= c_.vocab) fail("token id %d is outside the vocabulary (%d)", ids[i], c_.vocab);
    ensure_scratch(n);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) pos[size_t(t)] = int32_t(pos_ + t);
    const bool prefill = pos_ == 0;
    if (prefill) {
        forget_graphs();
        stats_ = AttentionStats{};
        stats_.tokens = n;
        plans_.assign(size_t(c_.n_layer), LayerPlan{});
        caches_.clear();
        sparse_so_far_ = 0;
        decode_steps_ = 0;
        attn_marks_.clear();
        be_.forget_marks();
    }
    // A one-token decode step runs as graphs where the backend has them. Its token id and position
    // go to device memory first, where the step's ops read them, so the first recording is replayed
    // as it is for every later token. The first step after a prefill runs uncaptured (it sizes the
    // decode scratch and tunes the GEMVs); the layer hook and all-logits calls read back mid-step.
    const bool graphed = !prefill && n == 1 && !all_logits && !hook_ && be_.graphs();
    if (graphed) {
        be_.step_inputs(ids, pos.data(), n);
        if (graph_base_ < 0) graph_base_ = next_graph_range.fetch_add(1) * kGraphKeysPerRange;
        if (decode_steps_ > 0 && be_.graph_replay(graph_base_, graph_segments())) {
            pos_ += n;
            ++decode_steps_;
            last_row_ = 0;
            sample_logits_ = logits_;
            if (host_logits_ || on_logits) be_.download(last_logits_.data(), logits_, size_t(c_.vocab));
            if (on_logits) on_logits(0, last_logits_.data());
            return;
        }
    }
    StepGraph graph(be_, graphed && decode_steps_ > 0, be_.graph_layers(), graph_base_);
    const double t0 = stats_clock();
    graph.begin();
    be_.embedding(*e_.tok_embd, ids, n, b_.x);  // x [n, D]
    for (int l = 0; l < c_.n_layer; ++l) {
        layer(l, n, pos.data());
        graph.after_layer(l, c_.n_layer);
        if (progress_ && prefill) progress_(l, c_.n_layer);
    }
    pos_ += n;
    if (all_logits) {
        all_logits_of(n, on_logits);
    } else {
        last_logits_of(n);
        graph.end();
        if (host_logits_ || on_logits) be_.download(last_logits_.data(), logits_, size_t(c_.vocab));
        if (on_logits) on_logits(n - 1, last_logits_.data());
    }
    if (!prefill) ++decode_steps_;
    if (prefill) {
        for (const auto& [a, b] : attn_marks_) stats_.attention_seconds += be_.seconds(a, b);  // once per request
        attn_marks_.clear();
        be_.forget_marks();
        stats_.finish(c_.n_layer, c_.n_kv_head, sparse_so_far_, kv_bytes());
        stats_.prefill_seconds = stats_clock() - t0;
    }
}

void Session::last_logits_of(int64_t n) {
    const int64_t D = c_.d_model;
    be_.rms_norm(b_.x.at((n - 1) * D), *e_.out_norm, b_.h, 1, D, c_.rms_eps);
    be_.matmul(*e_.output, b_.h, logits_, 1);
    last_row_ = 0;
    sample_logits_ = logits_;
}

void Session::all_logits_of(int64_t n, const LogitsFn& on_logits) {
    const int64_t D = c_.d_model;
    be_.rms_norm(b_.x, *e_.out_norm, b_.h, n, D, c_.rms_eps);
    std::vector<float> host(static_cast<size_t>(kLogitRows * c_.vocab));
    for (int64_t r = 0; r < n; r += kLogitRows) {
        const int64_t nr = std::min(kLogitRows, n - r);
        be_.matmul(*e_.output, b_.h.at(r * D), logits_, nr);
        be_.download(host.data(), logits_, size_t(nr * c_.vocab));
        for (int64_t i = 0; i < nr; ++i)
            if (on_logits) on_logits(r + i, host.data() + i * c_.vocab);
        if (r + nr == n) {
            std::copy(host.begin() + (nr - 1) * c_.vocab, host.begin() + nr * c_.vocab, last_logits_.begin());
            last_row_ = nr - 1;
            sample_logits_ = logits_.at(last_row_ * c_.vocab);
        }
    }
}

int32_t Session::sample_next(Sampler& sampler, int32_t limit, const std::vector<int32_t>& banned) {
    const int32_t vocab = c_.vocab;
    if (limit <= 0 || limit > vocab) limit = vocab;
    if (pos_ == 0) fail("sample_next: nothing has been run yet");
    const int extra = int(banned.size());
    if (sampler.uses_candidates(Backend::kMaxCandidates - extra)) {
        const int want = std::min(sampler.candidates_needed() + extra, int(limit));
        be_.top_candidates(sample_logits_, limit, want, cand_);
        if (extra)
            cand_.erase(std::remove_if(cand_.begin(), cand_.end(),
                                       [&](const auto& c) {
                                           return std::find(banned.begin(), banned.end(), c.second) != banned.end();
                                       }),
                        cand_.end());
        if (int(cand_.size()) > sampler.candidates_needed()) cand_.resize(size_t(sampler.candidates_needed()));
        if (cand_.empty()) fail("sample_next: every candidate is banned");
        return sampler.sample_candidates(cand_);
    }
    if (sampler.uses_sorted() && !extra) {  // top-p alone: the backend sorts, the nucleus comes back
        double sum = 0;
        if (be_.sorted_candidates(sample_logits_, limit, sampler.temperature(), Backend::kMaxNucleus, cand_, sum)) {
            const int32_t t = sampler.sample_sorted(cand_, sum, limit);
            if (t >= 0) return t;
        }
    }
    if (!host_logits_) be_.download(last_logits_.data(), sample_logits_, size_t(vocab));
    if (!extra) return sampler.sample(last_logits_.data(), limit);
    std::vector<float> masked(last_logits_.begin(), last_logits_.begin() + limit);
    for (int32_t id : banned)
        if (id >= 0 && id < limit) masked[size_t(id)] = -std::numeric_limits<float>::infinity();
    return sampler.sample(masked.data(), limit);
}

size_t peak_rss_bytes() {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return size_t(ru.ru_maxrss) * 1024;
}

}  // namespace elastic
