// `elastic inspect --retrieval-scores OUT.json`: which heads copy needles. Runs NIAH samples
// (niah_single_2: a number under a word key in real prose) with full attention and the reference
// decode (make_reference_backend), whose K history feeds RetrievalScorer at every decode step; the model generates greedily
// (Wu et al. 2024 score the model's own generation). Output: {"scores": [[per KV head] per layer]}
// plus the per-query-head scores, readable by --attention static:FILE.
#include <algorithm>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "eval/corpus.h"
#include "eval/generate.h"
#include "eval/retrieval-heads.h"
#include "eval/ruler.h"
#include "model/generate.h"
#include "model/model.h"

namespace elastic::cli {

void inspect_retrieval_scores(const std::string& model_path, const std::string& out, int samples, int64_t length, uint64_t seed,
                              bool aggregate_max, int threads) {
    if (samples < 1) fail("inspect: --samples must be at least 1");
    auto model = Model::load(model_path);
    const ModelConfig& c = model->config;
    if (length > c.max_ctx) fail("inspect: --length %lld exceeds the model's context of %d", (long long)length, c.max_ctx);
    const Tokenizer& tok = model->tok();
    const eval::Corpus prose = eval::load_corpus(eval::kDefaultProseDir, {}, 16u << 20);
    eval::RulerData data;
    data.essay = eval::corpus_words(prose);
    data.prose = &prose;
    eval::RetrievalScorer scorer(c.n_layer, c.n_head, c.n_kv_head, c.head_dim);
    // The reference backend keeps every layer's whole K history and shows it to the scorer at
    // every decode step.
    auto be = make_reference_backend(threads, [&](int layer, const float* q, const float* k, int64_t n) {
        scorer.observe(layer, q, k, n);
    });
    Engine engine(*model, *be);
    const bool tty = stderr_is_tty();
    int copied_any = 0;
    for (int i = 0; i < samples; ++i) {
        const eval::Sample s = eval::make_ruler_sample(
            "niah_single_2", length, i, seed, data, [&](const eval::Sample& x) { return int64_t(eval::prompt_ids(tok, x).size()); });
        const std::string text = eval::render_prompt(tok, s);
        const std::vector<int32_t> ids = tok.encode(text);
        // token byte offsets in the rendered prompt, to map the needle's bytes to token positions
        const size_t input_at = text.find(s.input);
        if (input_at == std::string::npos || s.needles.empty()) fail("inspect: internal: needle not found in the prompt");
        const size_t nb = input_at + s.needles[0].first, ne = input_at + s.needles[0].second;
        int64_t tb = -1, te = -1;
        size_t off = 0;
        for (size_t t = 0; t < ids.size(); ++t) {
            const size_t len = tok.decode({ids[t]}, false).size();
            if (off < ne && off + len > nb) {
                if (tb < 0) tb = int64_t(t);
                te = int64_t(t) + 1;
            }
            off += len;
        }
        if (tb < 0) fail("inspect: internal: needle tokens not found");
        const int max_new = int(te - tb) + 8;
        Session sess(engine, int64_t(ids.size()) + max_new, AttentionSpec{});
        scorer.begin_sample(ids, tb, te);
        GenerateOptions go;
        go.max_new_tokens = max_new;
        go.stop_ids = tok.stop_ids();
        go.decode_last_prompt_token = true;  // the first answer token comes from an observed decode step
        Sampler greedy(SamplerParams{});
        const GenerateResult g = generate(sess, ids, greedy, go, [&](int32_t next, bool) {
            scorer.end_step(next);
            return true;
        });
        const std::vector<int32_t>& gen = g.tokens;
        scorer.end_sample();
        const std::string answer = tok.decode(gen, true);
        copied_any += answer.find(s.outputs[0]) != std::string::npos;
        std::fprintf(stderr, "%ssample %d/%d: %lld tokens, needle '%s' at tokens %lld-%lld, model wrote '%s'%s", tty ? "\r\033[K" : "",
                     i + 1, samples, (long long)ids.size(), s.outputs[0].c_str(), (long long)tb, (long long)te,
                     answer.substr(0, 40).c_str(), tty ? "" : "\n");
    }
    if (tty) std::fprintf(stderr, "\n");
    nlohmann::json j;
    j["scores"] = scorer.kv_head_scores(aggregate_max);
    j["query_head_scores"] = scorer.query_head_scores();
    j["aggregate"] = aggregate_max ? "max" : "mean";
    j["method"] = "Wu et al. 2024 retrieval score: share of needle tokens a head copies (top attention on the needle token being generated), greedy generation, full attention";
    j["task"] = "niah_single_2";
    j["model"] = model_path;
    j["samples"] = samples;
    j["length"] = length;
    j["seed"] = seed;
    j["samples_answered"] = copied_any;
    std::ofstream f(out);
    if (!(f << j.dump(1) << "\n")) fail("%s: cannot write", out.c_str());
    std::printf("retrieval scores of %d layers x %d KV heads (%s over query heads) from %d samples (%d answered correctly): %s\n",
                c.n_layer, c.n_kv_head, aggregate_max ? "max" : "mean", samples, copied_any, out.c_str());
}

}  // namespace elastic::cli
