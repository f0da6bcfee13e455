// The model forward against Hugging Face golden log-probs (tests/golden/logprobs-*.json, made by
// scripts/golden/make-model-golden.py with transformers in float32):
//  - tiny random Qwen3 (q/k norm path) and Llama (llama3 rope scaling, tied embeddings) checkpoints
//    saved by HF itself, loaded from their directories;
//  - SmolLM2-135M-Instruct from its Q4_1 GGUF, HF having loaded the f32 safetensors that
//    `elastic convert` wrote from the same file.
// Rule: max |Δ log-prob| <= 1e-3 with fp32 compute.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/model.h"
#include "model/sampler.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << path;
    return nlohmann::json::parse(in);
}

// Runs every case of a golden file through the model; chunk < length exercises chunked prefill.
void check_golden(const Model& m, const std::string& golden, int64_t chunk, double tol) {
    nlohmann::json g = read_json(golden);
    auto be = make_cpu_backend(0);
    Engine e(m, *be);
    for (const auto& c : g["cases"]) {
        std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
        std::vector<double> want = c["logprobs"].get<std::vector<double>>();
        ASSERT_EQ(want.size() + 1, ids.size());
        Session s(e, int64_t(ids.size()), AttentionSpec{}, chunk);
        std::vector<double> got(want.size(), std::nan(""));
        s.forward(ids.data(), int64_t(ids.size()), true, [&](int64_t i, const float* logits) {
            if (size_t(i) + 1 < ids.size()) got[size_t(i)] = log_prob(logits, m.config.vocab, ids[size_t(i) + 1]);
        });
        double worst = 0;
        size_t wi = 0;
        for (size_t i = 0; i < want.size(); ++i) {
            double d = std::fabs(got[i] - want[i]);
            if (!(d <= worst)) { worst = d; wi = i; }
        }
        EXPECT_LE(worst, tol) << c["name"] << ": worst |Δ log-prob| at token " << wi << " got " << got[wi] << " want "
                              << want[wi];
        // The last position's top-5 tokens agree too.
        std::vector<int32_t> top = c["last_top5_ids"].get<std::vector<int32_t>>();
        const std::vector<float>& last = s.last_logits();
        int32_t best = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
        EXPECT_EQ(best, top[0]) << c["name"];
        std::printf("%s / %s: %zu tokens, max |Δ log-prob| = %.2e\n", golden.c_str(), c["name"].get<std::string>().c_str(),
                    ids.size(), worst);
    }
}

}  // namespace

TEST(ModelGolden, TinyQwen3FromHfDirectory) {
    auto m = Model::load(source_path("tests/data/tiny-qwen3"));
    EXPECT_EQ(m->config.arch, Arch::Qwen3);
    EXPECT_TRUE(m->config.qk_norm);
    EXPECT_EQ(m->config.head_dim, 32);
    check_golden(*m, source_path("tests/golden/logprobs-tiny-qwen3.json"), 128, 1e-3);
}

TEST(ModelGolden, TinyLlama3RopeScalingTied) {
    auto m = Model::load(source_path("tests/data/tiny-llama3"));
    EXPECT_EQ(m->config.rope_scaling.type, RopeConfig::Llama3);
    EXPECT_TRUE(m->config.tie_embeddings);
    check_golden(*m, source_path("tests/golden/logprobs-tiny-llama3.json"), 100, 1e-3);
}

TEST(ModelGolden, SmolLM2Q41) {
    const std::string path = default_model_path();
    if (!file_exists(path)) GTEST_SKIP() << "default model not fetched (make model)";
    auto m = Model::load(path);
    EXPECT_EQ(m->config.n_layer, 30);
    EXPECT_EQ(m->config.n_kv_head, 3);
    EXPECT_TRUE(m->config.tie_embeddings);
    check_golden(*m, source_path("tests/golden/logprobs-smollm2.json"), 512, 1e-3);
}

TEST(Model, DecodeMatchesPrefill) {
    // Logits of token t are the same whether the sequence is prefilled at once or decoded one by one.
    auto m = Model::load(source_path("tests/data/tiny-qwen3"));
    auto be = make_cpu_backend(0);
    std::vector<int32_t> ids = {5, 17, 300, 2, 99, 511, 0, 42};
    Engine e(*m, *be);
    Session a(e, 16), b(e, 16, AttentionSpec{}, 3);
    a.forward(ids.data(), int64_t(ids.size()));
    for (int32_t id : ids) b.forward(&id, 1);
    std::vector<float> la = a.last_logits(), lb = b.last_logits();
    EXPECT_LT(max_rel_err(lb, la), 1e-5);
}

TEST(Model, BadInputsAreErrors) {
    auto m = Model::load(source_path("tests/data/tiny-qwen3"));
    auto be = make_cpu_backend(0);
    Engine e(*m, *be);
    Session s(e, 4);
    std::vector<int32_t> bad = {1, 512};
    EXPECT_THROW(s.forward(bad.data(), 2), Error);  // id outside the vocabulary
    std::vector<int32_t> many(5, 1);
    EXPECT_THROW(s.forward(many.data(), 5), Error);  // more than the capacity
    EXPECT_THROW(Session(e, 100000), Error);   // more than the model's context
    EXPECT_THROW(Model::load(source_path("tests/data/does-not-exist")), Error);
    EXPECT_THROW(Model::load(source_path("CMakeLists.txt")), Error);
}

// Sampling from the backend's top-k candidates draws the same tokens as sampling from all logits
// (greedy; top-k with and without top-p; ties), for the same seed.
TEST(Sampler, CandidatesDrawLikeFullLogits) {
    std::mt19937_64 rng(fresh_seed());
    auto be = make_cpu_backend(0);
    for (SamplerParams sp : {SamplerParams{0.0f, 0, 1.0f, 1}, SamplerParams{0.8f, 40, 0.95f, 7},
                             SamplerParams{1.3f, 5, 1.0f, 9}, SamplerParams{0.7f, 128, 0.5f, 11}}) {
        Sampler full(sp), cand(sp);
        ASSERT_TRUE(cand.uses_candidates(Backend::kMaxCandidates));
        for (int step = 0; step < 60; ++step) {
            std::vector<float> logits = randn(1000, rng, 3.0f);
            for (int i = 0; i < 1000; i += 7) logits[size_t(i)] = std::round(logits[size_t(i)]);  // ties
            std::vector<std::pair<float, int32_t>> top;
            be->top_candidates(Buf{logits.data(), DType::F32}, 1000, cand.candidates_needed(), top);
            ASSERT_EQ(full.sample(logits.data(), 1000), cand.sample_candidates(top)) << "step " << step;
        }
    }
    EXPECT_FALSE(Sampler({0.8f, 0, 0.95f, 0}).uses_candidates(Backend::kMaxCandidates));   // no top-k: host
    EXPECT_FALSE(Sampler({0.8f, 500, 1.0f, 0}).uses_candidates(Backend::kMaxCandidates));  // k too large
}

// Top-p without top-k from the leading sorted entries and the normaliser (what a GPU's
// Backend::sorted_candidates returns) draws what sample() draws from all logits; a lead that stops
// short of the nucleus draws nothing and leaves the generator where it was.
TEST(Sampler, SortedLeadDrawsLikeFullLogits) {
    std::mt19937_64 rng(fresh_seed());
    for (SamplerParams sp : {SamplerParams{0.8f, 0, 0.95f, 7}, SamplerParams{1.3f, 0, 0.5f, 9}}) {
        Sampler full(sp), lead(sp);
        ASSERT_TRUE(lead.uses_sorted());
        for (int step = 0; step < 60; ++step) {
            std::vector<float> logits = randn(1000, rng, 3.0f);
            for (int i = 0; i < 1000; i += 7) logits[size_t(i)] = std::round(logits[size_t(i)]);  // ties
            std::vector<std::pair<float, int32_t>> sorted(1000);
            for (int32_t i = 0; i < 1000; ++i) sorted[size_t(i)] = {logits[size_t(i)] / sp.temperature, i};
            std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
            double sum = 0;
            for (const auto& c : sorted) sum += std::exp(double(c.first - sorted[0].first));
            const std::vector<std::pair<float, int32_t>> head(sorted.begin(), sorted.begin() + 400), one(sorted.begin(), sorted.begin() + 1);
            const int32_t want = full.sample(logits.data(), 1000);
            const int32_t first = lead.sample_sorted(one, sum, 1000);  // one entry: short of the nucleus here
            if (first >= 0) {
                ASSERT_EQ(first, want) << "step " << step;
                continue;
            }
            ASSERT_EQ(lead.sample_sorted(head, sum, 1000), want) << "step " << step;
        }
    }
    EXPECT_FALSE(Sampler({0.8f, 40, 0.95f, 0}).uses_sorted());  // top-k: candidates
    EXPECT_FALSE(Sampler({0.8f, 0, 1.0f, 0}).uses_sorted());    // no top-p: the whole vocabulary
    EXPECT_FALSE(Sampler({0.0f, 0, 0.9f, 0}).uses_sorted());    // greedy
}

// Session::sample_next (the selection on the backend) picks what the host sampler picks from
// last_logits(), after a prefill and after decode steps, with the logits left on the backend.
TEST(Model, SampleNextMatchesHostSampling) {
    auto m = Model::load(source_path("tests/data/tiny-qwen3"));
    auto be = make_cpu_backend(0);
    std::vector<int32_t> ids = {5, 17, 300, 2, 99};
    Engine e(*m, *be);
    for (SamplerParams sp : {SamplerParams{0.0f, 0, 1.0f, 0}, SamplerParams{0.9f, 20, 0.9f, 3}}) {
        Session a(e, 16), b(e, 16);
        b.set_host_logits(false);
        Sampler sa(sp), sb(sp);
        a.forward(ids.data(), int64_t(ids.size()));
        b.forward(ids.data(), int64_t(ids.size()));
        for (int step = 0; step < 6; ++step) {
            const int32_t ta = sa.sample(a.last_logits().data(), 400), tb = b.sample_next(sb, 400);
            ASSERT_EQ(ta, tb) << "step " << step;
            ASSERT_LT(tb, 400);
            a.forward(&ta, 1);
            b.forward(&tb, 1);
        }
    }
}

TEST(Sampler, GreedyAndSeeded) {
    std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
    Sampler g({0.0f, 0, 1.0f, 0});
    EXPECT_EQ(g.sample(logits.data(), 4), 1);
    Sampler a({1.0f, 0, 1.0f, 42}), b({1.0f, 0, 1.0f, 42});
    for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(logits.data(), 4), b.sample(logits.data(), 4));
    Sampler k({5.0f, 2, 1.0f, 3});  // top-k 2 keeps tokens 1 and 3 only
    for (int i = 0; i < 200; ++i) {
        int32_t t = k.sample(logits.data(), 4);
        EXPECT_TRUE(t == 1 || t == 3);
    }
    Sampler p({1.0f, 0, 0.3f, 3});  // top-p 0.3: only the most likely token (mass ~0.45) remains
    for (int i = 0; i < 100; ++i) EXPECT_EQ(p.sample(logits.data(), 4), 1);
    double z = 0;
    for (float l : logits) z += std::exp(double(l));
    EXPECT_NEAR(log_prob(logits.data(), 4, 1), 2.0 - std::log(z), 1e-12);
}

// The layer hook sees every layer's "attn_out" [n, n_head·head_dim] and "layer_out" [n, d_model] in
// order, for a prefill and for a decode step.
TEST(Model, LayerHookSeesEveryLayer) {
    auto m = Model::load(source_path("tests/data/tiny-qwen3"));
    auto be = make_cpu_backend(0);
    Engine e(*m, *be);
    Session s(e, 16);
    std::vector<std::string> seen;
    s.set_layer_hook([&](int layer, const char* name, Buf b, int64_t rows, int64_t width) {
        seen.push_back(std::to_string(layer) + name + std::to_string(rows) + "x" + std::to_string(width));
        std::vector<float> h(size_t(rows * width));
        be->download(h.data(), b, h.size());
        for (float x : h) ASSERT_TRUE(std::isfinite(x));
    });
    const std::vector<int32_t> ids = {5, 17, 300, 2, 99};
    s.forward(ids.data(), 5);
    s.forward(&ids[0], 1);
    const int L = m->config.n_layer;
    const std::string att = "x" + std::to_string(m->config.n_head * m->config.head_dim), res = "x" + std::to_string(m->config.d_model);
    std::vector<std::string> want;
    for (int64_t n : {5, 1})
        for (int l = 0; l < L; ++l) {
            want.push_back(std::to_string(l) + "attn_out" + std::to_string(n) + att);
            want.push_back(std::to_string(l) + "layer_out" + std::to_string(n) + res);
        }
    EXPECT_EQ(seen, want);
}
