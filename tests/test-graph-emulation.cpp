// Session's decode graphs without a GPU: GraphEmulation is the CPU backend with the CUDA backend's
// graph contract (src/model/backend.h, "Decode graphs"). Between graph_begin and graph_end the ops
// are recorded as closures, not run; graph_end runs them; graph_replay runs a recording again. The
// step inputs (step_inputs) stand for device memory: a recorded op whose ids or positions are the
// step's reads them from there when it runs, any other marks its recording not replayable, and
// anything that would copy to or from the host, allocate or synchronise inside a capture fails, as
// in a CUDA thread-local capture. So these tests hold Session::forward's side of the contract on
// the CPU: that each step's inputs are set before it runs, that a replay skips the ops and still
// advances the session, that each session replays only its own recording (its own caches) and
// drops it at a new prefill, and that a recording made invalid is captured again.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <vector>

#include "model/model.h"
#include "tiny-qwen3-64.h"

using namespace elastic;

namespace {

class GraphEmulation final : public Backend {
public:
    GraphEmulation() : cpu_(make_cpu_backend(1)) {}
    const char* name() const override { return "cpu-graph-emulation"; }
    int max_stable_decode_rows() const override { return cpu_->max_stable_decode_rows(); }

    Buf alloc(size_t n, DType t) override {
        outside("alloc");
        return cpu_->alloc(n, t);
    }
    void release(Buf b) override {
        outside("release");
        cpu_->release(b);
    }
    void upload(Buf dst, const float* host, size_t n) override {
        outside("upload");
        cpu_->upload(dst, host, n);
    }
    void download(float* host, Buf src, size_t n) override {
        outside("download");
        cpu_->download(host, src, n);
    }
    void sync() override { outside("sync"); }
    std::shared_ptr<const Matrix> upload_matrix(const Weight& W) override { return cpu_->upload_matrix(W); }
    std::shared_ptr<const Vector> upload_vector(const std::vector<float>& v) override { return cpu_->upload_vector(v); }
    std::unique_ptr<const RouterWeights> upload_router(const RouterLayer& r, int n_kv_head) override {
        return cpu_->upload_router(r, n_kv_head);
    }

    // Ops that take token ids or positions: from the step inputs when they are the step's.
    void embedding(const Matrix& E, const int32_t* ids, int64_t T, Buf out) override {
        if (T == step_n_ && std::equal(ids, ids + T, step_.begin())) {
            op([this, &E, T, out] { cpu_->embedding(E, step_.data(), T, out); });
        } else {
            unstable();
            op([this, &E, v = std::vector<int32_t>(ids, ids + T), T, out] { cpu_->embedding(E, v.data(), T, out); });
        }
    }
    void rope(Buf x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const Vector& inv_freq) override {
        if (T == step_n_ && std::equal(pos, pos + T, step_.begin() + step_n_)) {
            op([=, &inv_freq] { cpu_->rope(x, T, n_heads, head_dim, step_.data() + step_n_, inv_freq); });
        } else {
            unstable();
            op([=, &inv_freq, v = std::vector<int32_t>(pos, pos + T)] {
                cpu_->rope(x, T, n_heads, head_dim, v.data(), inv_freq);
            });
        }
    }
    void cache_append(LayerCache& c, Buf k_tok, Buf v_tok, int64_t pos) override {
        const int64_t t = step_index(pos);
        op([=, &c] { cpu_->cache_append(c, k_tok, v_tok, t < 0 ? pos : step_[size_t(step_n_ + t)]); });
    }
    void attn_decode(Buf q, const LayerCache& c, int64_t pos, Buf out, int n_head, float scale) override {
        const int64_t t = step_index(pos);
        op([=, &c] { cpu_->attn_decode(q, c, t < 0 ? pos : step_[size_t(step_n_ + t)], out, n_head, scale); });
    }

    // The rest: recorded as they are (the fused steps decompose into these through Backend's defaults).
    void rms_norm(Buf x, const Vector& w, Buf y, int64_t rows, int64_t dim, float eps) override {
        op([=, &w] { cpu_->rms_norm(x, w, y, rows, dim, eps); });
    }
    void matmul(const Matrix& W, Buf x, Buf y, int64_t T) override {
        op([=, &W] { cpu_->matmul(W, x, y, T); });
    }
    void swiglu(Buf gate, Buf up, Buf out, int64_t n) override {
        op([=] { cpu_->swiglu(gate, up, out, n); });
    }
    void add(Buf y, Buf x, int64_t n) override {
        op([=] { cpu_->add(y, x, n); });
    }

    // Prefill-only ops: never inside a capture.
    void attn_hybrid_prefill(Buf q, Buf k, Buf v, Buf out, int64_t T, int n_head, int n_kv_head, int head_dim,
                             const LayerPlan& plan, const StreamingWindow& win, int64_t xa_block, float scale) override {
        outside("attn_hybrid_prefill");
        cpu_->attn_hybrid_prefill(q, k, v, out, T, n_head, n_kv_head, head_dim, plan, win, xa_block, scale);
    }
    void xa_fill_plan(Buf q, Buf k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                      LayerPlan& plan) override {
        outside("xa_fill_plan");
        cpu_->xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan);
    }
    void router_logits(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                       float* logits_host) override {
        outside("router_logits");
        cpu_->router_logits(r, k, T, n_kv_head, head_dim, window, logits_host);
    }
    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        outside("new_layer_cache");
        return cpu_->new_layer_cache(plan, win, capacity, n_kv_head, head_dim);
    }
    void cache_store_prefill(LayerCache& c, Buf k, Buf v, int64_t T) override {
        outside("cache_store_prefill");
        cpu_->cache_store_prefill(c, k, v, T);
    }
    void top_candidates(Buf logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) override {
        outside("top_candidates");
        cpu_->top_candidates(logits, n, k, out);
    }

    // The graph contract.
    bool graphs() const override { return on_; }
    void set_graphs(bool on) override { on_ = on; }
    int graph_layers() const override { return per_; }
    void set_graph_layers(int per) { per_ = per; }
    bool graph_begin(int64_t key) override {
        EXPECT_LT(capturing_, 0) << "nested capture";
        if (!on_) return false;
        capturing_ = key;
        rec_ = Recording{};
        return true;
    }
    void graph_end() override {
        EXPECT_GE(capturing_, 0) << "graph_end without graph_begin";
        Recording& r = graphs_[capturing_];
        ++(r.ops.empty() ? stats_.instantiations : stats_.updates);
        r = std::move(rec_);
        r.gen = gen_;
        capturing_ = -1;
        for (const auto& f : r.ops) f();
        ++stats_.launches;
    }
    void graph_abort() override { capturing_ = -1; }
    void step_inputs(const int32_t* ids, const int32_t* pos, int64_t n) override {
        outside("step_inputs");
        step_.assign(ids, ids + n);
        step_.insert(step_.end(), pos, pos + n);
        step_n_ = n;
    }
    bool graph_replay(int64_t first, int n) override {
        for (int64_t key = first; key < first + n; ++key) {
            const auto it = graphs_.find(key);
            if (it == graphs_.end() || !it->second.replayable || it->second.gen != gen_) return false;
        }
        for (int64_t key = first; key < first + n; ++key)
            for (const auto& f : graphs_[key].ops) f();
        stats_.launches += n;
        stats_.replays += n;
        return true;
    }
    void graph_forget(int64_t key) override { graphs_.erase(key); }
    GraphStats graph_stats() const override { return stats_; }

    // What the CUDA backend does when scratch a recording may use is reallocated.
    void invalidate_recordings() { ++gen_; }
    size_t recordings() const { return graphs_.size(); }

private:
    struct Recording {
        std::vector<std::function<void()>> ops;
        bool replayable = true;
        uint64_t gen = 0;
    };
    template <class F>
    void op(F&& f) {
        if (capturing_ >= 0) rec_.ops.emplace_back(std::forward<F>(f));
        else f();
    }
    void unstable() {
        if (capturing_ >= 0) rec_.replayable = false;
    }
    int64_t step_index(int64_t pos) {
        for (int64_t t = 0; t < step_n_; ++t)
            if (step_[size_t(step_n_ + t)] == pos) return t;
        unstable();
        return -1;
    }
    void outside(const char* what) {
        if (capturing_ >= 0) ADD_FAILURE() << what << " inside a graph capture";
    }

    std::unique_ptr<Backend> cpu_;
    bool on_ = true;
    int per_ = 0;
    int64_t capturing_ = -1;
    Recording rec_;
    std::map<int64_t, Recording> graphs_;
    GraphStats stats_;
    uint64_t gen_ = 0;
    std::vector<int32_t> step_;
    int64_t step_n_ = 0;
};

struct DecodeRun {
    std::vector<int32_t> tokens;
    std::vector<float> logits;  // [steps, vocab]
};

void step(Session& s, Sampler& greedy, DecodeRun& r) {
    const int32_t t = s.sample_next(greedy);
    r.tokens.push_back(t);
    s.forward(&t, 1);
    r.logits.insert(r.logits.end(), s.last_logits().begin(), s.last_logits().end());
}

DecodeRun decode(const Engine& e, const AttentionSpec& spec, const std::vector<int32_t>& prompt, int steps) {
    Session s(e, int64_t(prompt.size()) + steps + 1, spec);
    s.forward(prompt.data(), int64_t(prompt.size()));
    Sampler greedy(SamplerParams{});
    DecodeRun r;
    for (int i = 0; i < steps; ++i) step(s, greedy, r);
    return r;
}

size_t differing_bits(const DecodeRun& a, const DecodeRun& b) {
    EXPECT_EQ(a.logits.size(), b.logits.size());
    size_t diff = 0;
    for (size_t i = 0; i < std::min(a.logits.size(), b.logits.size()); ++i)
        diff += std::memcmp(&a.logits[i], &b.logits[i], 4) != 0;
    return diff;
}

std::vector<int32_t> random_prompt(int n, int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (auto& x : p) x = int32_t(rng() % uint64_t(vocab));
    return p;
}

}  // namespace

// One session: the first decode step runs op by op, the second is recorded, every later one is a
// replay; tokens and every logit as with graphs off, with full heads and with streaming heads whose
// ring wraps, in one recording per step and in one per layer.
TEST(GraphEmulation, SessionRecordsOnceAndReplays) {
    auto model = elastic::test::tiny_qwen3_head_dim_64();
    const ModelConfig& c = model->config;
    const std::vector<int32_t> prompt = random_prompt(40, c.vocab, 5);
    AttentionSpec ssa = AttentionSpec::parse("ssa");
    ssa.win.sink = 4;
    ssa.win.local = 8;  // wraps every 8 steps
    const int steps = 20;
    for (int per : {0, 1}) {
        for (const AttentionSpec& spec : {AttentionSpec{}, ssa}) {
            SCOPED_TRACE(spec.name + (per ? ", one recording per layer" : ", one per step"));
            GraphEmulation be;
            be.set_graph_layers(per);
            const Engine e(*model, be);
            be.set_graphs(false);
            const DecodeRun ref = decode(e, spec, prompt, steps);
            EXPECT_EQ(be.graph_stats().launches, 0);
            be.set_graphs(true);
            const DecodeRun got = decode(e, spec, prompt, steps);
            const Backend::GraphStats s = be.graph_stats();
            const int64_t segments = per ? c.n_layer : 1;
            EXPECT_EQ(s.instantiations, segments);
            EXPECT_EQ(s.updates, 0);
            EXPECT_EQ(s.replays, int64_t(steps - 2) * segments);
            EXPECT_EQ(s.launches, int64_t(steps - 1) * segments);
            EXPECT_EQ(got.tokens, ref.tokens);
            EXPECT_EQ(differing_bits(got, ref), 0u);
            EXPECT_EQ(be.recordings(), 0u) << "the session's recordings outlived it";
        }
    }
}

// Two sessions in turns on one backend replay their own recordings; invalidated recordings are
// captured again; a reset drops the session's recording (its caches go) and its next prefill
// records anew.
TEST(GraphEmulation, SessionsKeepTheirOwnRecordings) {
    auto model = elastic::test::tiny_qwen3_head_dim_64();
    const ModelConfig& c = model->config;
    const std::vector<int32_t> pa = random_prompt(30, c.vocab, 7), pb = random_prompt(50, c.vocab, 8),
                               pc = random_prompt(20, c.vocab, 9);
    AttentionSpec ssa = AttentionSpec::parse("ssa");
    ssa.win.sink = 4;
    ssa.win.local = 8;
    const int steps = 12;
    GraphEmulation ref_be;
    ref_be.set_graphs(false);
    const Engine ref_e(*model, ref_be);
    const DecodeRun ref_a = decode(ref_e, AttentionSpec{}, pa, steps), ref_b = decode(ref_e, ssa, pb, steps),
              ref_c = decode(ref_e, AttentionSpec{}, pc, steps);

    GraphEmulation be;
    const Engine e(*model, be);
    Sampler greedy(SamplerParams{});
    Session a(e, 64), b(e, 64, ssa);
    DecodeRun ga, gb, gc;
    a.forward(pa.data(), int64_t(pa.size()));
    b.forward(pb.data(), int64_t(pb.size()));
    for (int i = 0; i < steps; ++i) {
        step(a, greedy, ga);
        step(b, greedy, gb);
        if (i == steps / 2) be.invalidate_recordings();  // both capture their next step again
    }
    Backend::GraphStats s = be.graph_stats();
    EXPECT_EQ(s.instantiations, 2);
    EXPECT_EQ(s.updates, 2);
    EXPECT_EQ(s.replays, 2 * int64_t(steps - 3));
    EXPECT_EQ(be.recordings(), 2u);
    EXPECT_EQ(ga.tokens, ref_a.tokens);
    EXPECT_EQ(gb.tokens, ref_b.tokens);
    EXPECT_EQ(differing_bits(ga, ref_a), 0u);
    EXPECT_EQ(differing_bits(gb, ref_b), 0u);

    // a again from position 0 with another prompt: its old recording (of the old caches) is gone,
    // and its steps match a fresh session's.
    a.reset();
    EXPECT_EQ(be.recordings(), 1u) << "a's old recording survived its reset";
    a.forward(pc.data(), int64_t(pc.size()));
    for (int i = 0; i < steps; ++i) step(a, greedy, gc);
    EXPECT_EQ(gc.tokens, ref_c.tokens);
    EXPECT_EQ(differing_bits(gc, ref_c), 0u);
    s = be.graph_stats();
    EXPECT_EQ(s.instantiations, 3);
}

// A layer hook reads buffers mid-step and all-logits calls copy rows back: neither is recorded.
TEST(GraphEmulation, HooksAndAllLogitsRunOpByOp) {
    auto model = elastic::test::tiny_qwen3_head_dim_64();
    const std::vector<int32_t> prompt = random_prompt(16, model->config.vocab, 3);
    GraphEmulation be;
    const Engine e(*model, be);
    Session s(e, 64);
    s.forward(prompt.data(), int64_t(prompt.size()));
    int hooked = 0;
    s.set_layer_hook([&](int, const char*, Buf, int64_t, int64_t) { ++hooked; });
    for (int32_t t : {5, 6, 7}) s.forward(&t, 1);
    EXPECT_GT(hooked, 0);
    s.set_layer_hook(nullptr);
    for (int32_t t : {8, 9}) s.forward(&t, 1, /*all_logits=*/true, [](int64_t, const float*) {});
    EXPECT_EQ(be.graph_stats().launches, 0);
}

// A server decodes through DecodeBatch: a lone session there takes its own step, recorded once and
// replayed, while rounds of several sessions run stacked and uncaptured; each session's tokens and
// logits are what it gets decoding alone with graphs off.
TEST(GraphEmulation, DecodeBatchOfOneReplaysTheSessionsStep) {
    auto model = elastic::test::tiny_qwen3_head_dim_64();
    const ModelConfig& c = model->config;
    const std::vector<int32_t> pa = random_prompt(25, c.vocab, 21), pb = random_prompt(35, c.vocab, 22);
    const int steps = 14;
    GraphEmulation ref_be;
    ref_be.set_graphs(false);
    const Engine ref_e(*model, ref_be);
    const DecodeRun ref_a = decode(ref_e, AttentionSpec{}, pa, steps), ref_b = decode(ref_e, AttentionSpec{}, pb, steps);

    GraphEmulation be;
    const Engine e(*model, be);
    DecodeBatch batch(e);
    ASSERT_GE(batch.max_rows(), 2);
    Sampler greedy(SamplerParams{});
    Session a(e, 64), b(e, 64);
    a.forward(pa.data(), int64_t(pa.size()));
    b.forward(pb.data(), int64_t(pb.size()));
    DecodeRun ga, gb;
    auto take = [&](Session& s, DecodeRun& r) {
        r.logits.insert(r.logits.end(), s.last_logits().begin(), s.last_logits().end());
    };
    for (int i = 0; i < steps; ++i) {
        const int32_t ta = a.sample_next(greedy);
        ga.tokens.push_back(ta);
        if (i % 4 == 3) {  // a round of both, stacked
            const int32_t tb = b.sample_next(greedy);
            gb.tokens.push_back(tb);
            const int32_t ids[2] = {ta, tb};
            batch.run({&a, &b}, ids);
            take(a, ga);
            take(b, gb);
        } else {  // a alone, then b alone
            batch.run({&a}, &ta);
            take(a, ga);
            const int32_t tb = b.sample_next(greedy);
            gb.tokens.push_back(tb);
            batch.run({&b}, &tb);
            take(b, gb);
        }
    }
    EXPECT_GT(be.graph_stats().replays, int64_t(steps));
    EXPECT_EQ(ga.tokens, ref_a.tokens);
    EXPECT_EQ(gb.tokens, ref_b.tokens);
    EXPECT_EQ(differing_bits(ga, ref_a), 0u);
    EXPECT_EQ(differing_bits(gb, ref_b), 0u);
}
