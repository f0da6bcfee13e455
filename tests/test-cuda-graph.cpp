// The CUDA backend's decode graphs and device top-p (skipped without a GPU).
// Graphs: a decode step replayed as captured CUDA graphs must give the same bits as the same step
// launched op by op: greedy tokens and every step's logits compared exactly over 40 steps, with
// full attention across the context where the decode kernel's grid grows (258 keys: two pieces),
// and with streaming heads whose ring (sink 4, local 16) wraps twice; in bf16 (our GEMV) and fp32
// (cuBLAS), whole-step graphs and one graph per layer; the step is recorded once and replayed as
// it is. Two sessions sharing the backend replay their own recordings.
// Top-p: Backend::sorted_candidates + Sampler::sample_sorted must draw what Sampler::sample draws
// from the full logits with the same generator: peaked, tied and flat logits (the last too wide
// for the device's kMaxNucleus leading entries: nothing drawn, the generator untouched), and
// through Session::sample_next.
#include <gtest/gtest.h>

#ifdef ELASTIC_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>

#include "model/model.h"
#include "test-helpers.h"
#include "tiny-qwen3-64.h"

using namespace elastic;
using namespace elastic::test;

namespace {

struct DecodeRun {
    std::vector<int32_t> tokens;
    std::vector<float> logits;  // [steps, vocab]
};

// Prefill of `prompt`, then `steps` greedy decode steps; every step's logits and token.
DecodeRun decode(const Engine& e, const AttentionSpec& spec, const std::vector<int32_t>& prompt, int steps) {
    Session s(e, int64_t(prompt.size()) + steps + 1, spec);
    s.forward(prompt.data(), int64_t(prompt.size()));
    Sampler greedy(SamplerParams{});
    DecodeRun r;
    for (int i = 0; i < steps; ++i) {
        const int32_t t = s.sample_next(greedy);
        r.tokens.push_back(t);
        s.forward(&t, 1);
        r.logits.insert(r.logits.end(), s.last_logits().begin(), s.last_logits().end());
    }
    return r;
}

}  // namespace

TEST(CudaGraph, ReplayGivesTheBitsOfTheUncapturedStep) {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    auto model = tiny_qwen3_head_dim_64();
    const ModelConfig& c = model->config;
    std::vector<int32_t> prompt(100);
    std::mt19937_64 rng(3);
    for (auto& x : prompt) x = int32_t(rng() % uint64_t(c.vocab));
    const int steps = 40;  // positions 100..139: full heads cross 128 keys (the grid grows to two pieces)

    AttentionSpec full = AttentionSpec::parse("full"), ssa = AttentionSpec::parse("ssa");
    ssa.win.sink = 4;
    ssa.win.local = 16;  // the ring wraps every 16 steps
    for (const char* per_layer : {"0", "1"}) {
        setenv("ELASTIC_CUDA_GRAPH_LAYERS", per_layer, 1);
        for (DType prec : {DType::BF16, DType::F32}) {
            auto be = make_cuda_backend(0, prec);
            const Engine e(*model, *be);
            for (const AttentionSpec& spec : {full, ssa}) {
                SCOPED_TRACE(std::string(be->name()) + " " + spec.name + " graph layers " + per_layer);
                be->set_graphs(false);
                const Backend::GraphStats s0 = be->graph_stats();
                const DecodeRun ref = decode(e, spec, prompt, steps);
                EXPECT_EQ(be->graph_stats().launches, s0.launches) << "graphs off, yet launched";
                be->set_graphs(true);
                const DecodeRun got = decode(e, spec, prompt, steps);
                const Backend::GraphStats s1 = be->graph_stats();
                const int64_t segments = per_layer[0] == '1' ? c.n_layer : 1;
                // The first decode step after the prefill runs uncaptured, the second is recorded,
                // every later one replays that recording as it is.
                EXPECT_EQ(s1.launches - s0.launches, int64_t(steps - 1) * segments);
                EXPECT_EQ(s1.instantiations - s0.instantiations, segments);
                EXPECT_EQ(s1.updates - s0.updates, 0) << "a step was captured again";
                EXPECT_EQ(s1.replays - s0.replays, int64_t(steps - 2) * segments);
                std::printf("[graph] %s %s, %s layer(s) per graph: %lld launches, %lld replays, %lld instantiations, "
                            "%lld updates\n",
                            be->name(), spec.name.c_str(), per_layer, (long long)(s1.launches - s0.launches),
                            (long long)(s1.replays - s0.replays), (long long)(s1.instantiations - s0.instantiations),
                            (long long)(s1.updates - s0.updates));
                EXPECT_EQ(got.tokens, ref.tokens);
                ASSERT_EQ(got.logits.size(), ref.logits.size());
                size_t diff = 0;
                for (size_t i = 0; i < ref.logits.size(); ++i) diff += std::memcmp(&got.logits[i], &ref.logits[i], 4) != 0;
                EXPECT_EQ(diff, 0u) << "logits differing in bits (of " << ref.logits.size() << ")";
            }
        }
    }
    unsetenv("ELASTIC_CUDA_GRAPH_LAYERS");
}

// Two sessions on one backend, decoding in turns with graphs on, give each the bits it gets alone
// with graphs off: each replays its own recording (its own caches), and when the second session's
// longer prefill reallocates backend scratch that the first one's recording uses, the first
// captures its step again instead of replaying stale pointers.
TEST(CudaGraph, SessionsSharingABackendReplayTheirOwnSteps) {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    auto model = tiny_qwen3_head_dim_64();
    const ModelConfig& c = model->config;
    std::mt19937_64 rng(11);
    std::vector<int32_t> pa(90), pb(300);  // b's prefill is longer: the GEMM input scratch grows
    for (auto& x : pa) x = int32_t(rng() % uint64_t(c.vocab));
    for (auto& x : pb) x = int32_t(rng() % uint64_t(c.vocab));
    AttentionSpec ssa = AttentionSpec::parse("ssa");
    ssa.win.sink = 4;
    ssa.win.local = 16;
    const int steps = 24;
    // The references on a backend of their own, so that the shared one's scratch is still sized
    // for a's prompt when b's prefill comes.
    auto ref_be = make_cuda_backend(0, DType::BF16);
    ref_be->set_graphs(false);
    const Engine ref_e(*model, *ref_be);
    const DecodeRun ref_a = decode(ref_e, AttentionSpec{}, pa, steps), ref_b = decode(ref_e, ssa, pb, steps);

    auto be = make_cuda_backend(0, DType::BF16);
    const Engine e(*model, *be);
    be->set_graphs(true);
    Sampler greedy(SamplerParams{});
    Session a(e, int64_t(pa.size()) + steps + 1), b(e, int64_t(pb.size()) + steps + 1, ssa);
    DecodeRun got_a, got_b;
    auto step = [&](Session& s, DecodeRun& r) {
        const int32_t t = s.sample_next(greedy);
        r.tokens.push_back(t);
        s.forward(&t, 1);
        r.logits.insert(r.logits.end(), s.last_logits().begin(), s.last_logits().end());
    };
    a.forward(pa.data(), int64_t(pa.size()));
    for (int i = 0; i < steps / 2; ++i) step(a, got_a);  // a records its step and replays it
    const Backend::GraphStats s0 = be->graph_stats();
    b.forward(pb.data(), int64_t(pb.size()));
    for (int i = 0; i < steps; ++i) {
        step(b, got_b);
        if (i < steps / 2) step(a, got_a);
    }
    const Backend::GraphStats s1 = be->graph_stats();
    std::printf("[graph] two sessions: %lld replays, %lld instantiations, %lld updates after b's prefill\n",
                (long long)(s1.replays - s0.replays), (long long)(s1.instantiations - s0.instantiations),
                (long long)(s1.updates - s0.updates));
    // Two captures: b's recording, and a's step again (b's longer prefill reallocated backend
    // scratch, the token ids' and the GEMM inputs', so no earlier recording is trusted); then b
    // replays steps − 2 times and a steps / 2 − 1 times.
    EXPECT_EQ((s1.updates - s0.updates) + (s1.instantiations - s0.instantiations), 2);
    EXPECT_EQ(s1.replays - s0.replays, int64_t(steps - 2 + steps / 2 - 1));
    for (auto [got, ref, name] : {std::tuple{&got_a, &ref_a, "a"}, std::tuple{&got_b, &ref_b, "b"}}) {
        SCOPED_TRACE(name);
        EXPECT_EQ(got->tokens, ref->tokens);
        ASSERT_EQ(got->logits.size(), ref->logits.size());
        size_t diff = 0;
        for (size_t i = 0; i < ref->logits.size(); ++i) diff += std::memcmp(&got->logits[i], &ref->logits[i], 4) != 0;
        EXPECT_EQ(diff, 0u) << "logits differing in bits (of " << ref->logits.size() << ")";
    }
}

TEST(CudaGraph, TopPOnTheDeviceDrawsAsTheHost) {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    auto be = make_cuda_backend(0, DType::BF16);
    const int32_t n = 151936;  // Qwen3's vocabulary
    std::mt19937_64 rng(9);
    std::vector<float> peaked = randn(size_t(n), rng, 5.0f);  // nucleus: tens to hundreds of ids
    std::vector<float> tied = randn(size_t(n), rng, 4.0f);
    for (float& x : tied) x = std::round(x * 2.0f) / 2.0f;  // many equal values: lower index first
    std::vector<float> flat = randn(size_t(n), rng, 0.01f);
    Buf d = be->alloc(size_t(n), DType::F32);
    struct Case {
        const char* name;
        const std::vector<float>* logits;
        float temperature, top_p;
        bool fits;  // the nucleus lies within kMaxNucleus leading entries
    };
    const Case cases[] = {{"peaked t=1 p=0.9", &peaked, 1.0f, 0.9f, true},
                          {"peaked t=0.7 p=0.5", &peaked, 0.7f, 0.5f, true},
                          {"tied t=0.8 p=0.95", &tied, 0.8f, 0.95f, true},
                          {"flat t=1 p=0.9", &flat, 1.0f, 0.9f, false}};
    for (const Case& k : cases) {
        SCOPED_TRACE(k.name);
        be->upload(d, k.logits->data(), size_t(n));
        std::vector<std::pair<float, int32_t>> lead;
        double sum = 0;
        ASSERT_TRUE(be->sorted_candidates(d, n, k.temperature, Backend::kMaxNucleus, lead, sum));
        ASSERT_EQ(lead.size(), size_t(Backend::kMaxNucleus));
        // The leading entries are the host's sort (scaled value descending, lower index first).
        std::vector<std::pair<float, int32_t>> ref(static_cast<size_t>(n));
        for (int32_t i = 0; i < n; ++i) ref[size_t(i)] = {(*k.logits)[size_t(i)] / k.temperature, i};
        std::stable_sort(ref.begin(), ref.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
        for (size_t i = 0; i < lead.size(); ++i) {
            ASSERT_EQ(lead[i].second, ref[i].second) << "entry " << i;
            ASSERT_EQ(lead[i].first, ref[i].first) << "entry " << i;
        }
        double host_sum = 0;
        for (const auto& r : ref) host_sum += std::exp(double(r.first - ref[0].first));
        // Both sums are of the same doubles in different orders: n · 2^-52 relative is the
        // worst-case bound of reordered summation (measured on the H200: 1.5e-12 relative).
        EXPECT_NEAR(sum, host_sum, double(n) * std::numeric_limits<double>::epsilon() * host_sum);
        const SamplerParams p{k.temperature, 0, k.top_p, 42};
        Sampler host(p), dev(p);
        ASSERT_TRUE(dev.uses_sorted());
        for (int draw = 0; draw < 200; ++draw) {
            const int32_t want = host.sample(k.logits->data(), n);
            const int32_t got = dev.sample_sorted(lead, sum, n);
            if (!k.fits) {
                ASSERT_EQ(got, -1);
                ASSERT_EQ(dev.sample(k.logits->data(), n), want) << "the generator moved";
                continue;
            }
            ASSERT_EQ(got, want) << "draw " << draw;
        }
    }
    be->release(d);

    // Through Session::sample_next (tiny vocabulary: the whole sorted list comes back) against the
    // host sampler on the same session's logits, across decode steps.
    auto model = tiny_qwen3_head_dim_64();
    const Engine e(*model, *be);
    Session s(e, 64);
    std::vector<int32_t> prompt = {5, 17, 300, 2, 99};
    s.forward(prompt.data(), int64_t(prompt.size()));
    const SamplerParams p{0.9f, 0, 0.8f, 5};
    Sampler host(p), dev(p);
    for (int step = 0; step < 20; ++step) {
        const int32_t want = host.sample(s.last_logits().data(), model->config.vocab);
        const int32_t got = s.sample_next(dev);
        ASSERT_EQ(got, want) << "step " << step;
        s.forward(&got, 1);
    }
}

#endif  // ELASTIC_HAVE_CUDA
