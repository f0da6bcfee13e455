// `elastic inspect`: what a model is (without -f), or how it routes one input (with -f): the
// layer x KV-head map of attention modes as an image (--png, .png or .svg) and JSON (--json), with
// Ω_MSR / Ω_ESR.
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "attention-options.h"
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "eval/routing-map.h"
#include "model/model.h"

namespace elastic::cli {

namespace {

struct InspectOptions {
    std::string model, file, png, retrieval, aggregate = "max";
    bool json = false;
    int threads = 0, samples = 4;
    int64_t length = 2048;
    uint64_t seed = 0;
    AttentionOptions attn;
    BackendOptions backend;
};

void describe(const Model& m, bool json) {
    const ModelConfig& c = m.config;
    nlohmann::json j = {{"name", c.name},        {"arch", c.arch_name()},     {"layers", c.n_layer},
                        {"hidden", c.d_model},   {"heads", c.n_head},         {"kv_heads", c.n_kv_head},
                        {"head_dim", c.head_dim}, {"ffn", c.d_ff},            {"vocab", c.vocab},
                        {"context", c.max_ctx},  {"rope_theta", c.rope_theta}, {"tied_embeddings", c.tie_embeddings},
                        {"weight_bytes", m.weights.bytes()}, {"weight_type", dtype_name(m.weights.layers[0].wq.type)}};
    if (json) {
        std::printf("%s\n", j.dump().c_str());
        return;
    }
    for (auto it = j.begin(); it != j.end(); ++it) std::printf("%-16s %s\n", it.key().c_str(), it.value().dump().c_str());
}

void inspect(const InspectOptions& o) {
    if (!o.retrieval.empty()) {
        if (o.aggregate != "max" && o.aggregate != "mean") fail("inspect: --aggregate must be max or mean");
        inspect_retrieval_scores(o.model, o.retrieval, o.samples, o.length, o.seed, o.aggregate == "max", o.threads);
        return;
    }
    auto model = Model::load(o.model);
    if (o.file.empty()) {
        if (!o.png.empty()) fail("inspect: --png needs an input (-f FILE)");
        describe(*model, o.json);
        return;
    }
    std::vector<int32_t> ids = model->tok().encode(read_file(o.file));
    if (ids.empty()) fail("inspect: %s has no tokens", o.file.c_str());
    if (int64_t(ids.size()) > model->config.max_ctx)
        fail("inspect: %s has %zu tokens, more than the model's context of %d", o.file.c_str(), ids.size(), model->config.max_ctx);
    std::unique_ptr<Router> router;
    const AttentionSpec spec = o.attn.resolve(*model, router);
    auto be = o.backend.make(o.threads, *model);
    Engine engine(*model, *be, router.get());
    Session s(engine, int64_t(ids.size()), spec);
    s.forward(ids.data(), int64_t(ids.size()));
    const AttentionStats& st = s.stats();
    if (!o.png.empty()) {
        std::string name = o.model.substr(0, o.model.find_last_not_of('/') + 1);  // the file name: general.name is often a run tag
        name = name.substr(name.find_last_of('/') + 1);
        if (name.size() > 5 && name.compare(name.size() - 5, 5, ".gguf") == 0) name.resize(name.size() - 5);
        eval::write_routing_map(o.png, st.modes, {name, st.tokens, st.omega_msr, st.omega_esr, spec.name}, st.prob_fa);
    }
    if (o.json) {
        nlohmann::json j = nlohmann::json::parse(st.to_json(true));
        j["attention"] = spec.name;
        j["model"] = o.model;
        std::printf("%s\n", j.dump().c_str());
        return;
    }
    std::printf("%s, %lld tokens, attention %s: Ω_MSR %.3f, Ω_ESR %.3f (all layers %.3f)\n", o.file.c_str(), (long long)st.tokens,
                spec.name.c_str(), st.omega_msr, st.omega_esr, st.omega_esr_all);
    std::printf("layer  modes (one per KV head)\n");
    for (size_t l = 0; l < st.modes.size(); ++l) {
        std::printf("%5zu ", l);
        for (HeadMode m : st.modes[l]) std::printf(" %-3s", head_mode_name(m));
        std::printf("\n");
    }
    if (!o.png.empty()) std::printf("routing map: %s (rows = layers from the top, columns = KV heads; red FA, blue SSA, amber XA)\n", o.png.c_str());
}

}  // namespace

void add_inspect(CLI::App& app) {
    auto o = std::make_shared<InspectOptions>();
    CLI::App* c = app.add_subcommand("inspect", "Describe a model, or show how it routes an input (-f)");
    c->add_option("-m,--model", o->model, "GGUF file or HF directory")->required();
    c->add_option("-f,--file", o->file, "Input text whose routing to show");
    c->add_option("--png", o->png, "Draw the layer x KV-head routing map (.png or .svg by the extension)");
    c->add_flag("--json", o->json, "Print JSON");
    c->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    c->add_option("--retrieval-scores", o->retrieval, "Write per-head retrieval scores (Wu et al. 2024) on NIAH samples as JSON for static:FILE");
    c->add_option("--samples", o->samples, "--retrieval-scores: NIAH samples")->capture_default_str();
    c->add_option("--length", o->length, "--retrieval-scores: sample length in tokens")->capture_default_str();
    c->add_option("--seed", o->seed, "--retrieval-scores: data seed")->capture_default_str();
    c->add_option("--aggregate", o->aggregate, "--retrieval-scores: query heads to their KV head by max or mean")->capture_default_str();
    o->attn.add_to(c);
    o->backend.add_to(c);
    c->callback([o] { inspect(*o); });
}

}  // namespace elastic::cli
