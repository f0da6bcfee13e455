// `elastic bench model`: llama-bench-style prefill and decode throughput of a model on this
// machine. For each length N (tokens of a real text, repeated to length): the prefill of N tokens,
// and the decode of `-n` tokens at context N (a prefill of N - n tokens, then n decode steps, so the
// last one sees N tokens); repeated `-r` times; median and range. Attention flags as `run`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "attention-options.h"
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "formats/quants.h"
#include "model/generate.h"
#include "model/model.h"

namespace elastic::cli {

namespace {

struct BenchOptions {
    std::string model, text_file = "/usr/share/common-licenses/GPL-3", lengths = "512,2048,8192";
    int n_gen = 32, reps = 3, threads = 0;
    bool json = false;
    AttentionOptions attn;
    BackendOptions backend;
};

std::vector<int64_t> parse_list(const std::string& s) {
    std::vector<int64_t> v;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        try {
            size_t used = 0;
            long long x = std::stoll(item, &used);
            if (used != item.size() || x <= 0) throw std::invalid_argument(item);
            v.push_back(x);
        } catch (const std::exception&) {
            fail("bench: '%s' is not a positive integer in '%s'", item.c_str(), s.c_str());
        }
    }
    if (v.empty()) fail("bench: empty list");
    return v;
}

struct Stat { double median, min, max; };
Stat stats(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v.front(), v.back()};
}

void bench_model(const BenchOptions& o) {
    if (o.reps < 1 || o.n_gen < 1) fail("bench: -r and -n must be >= 1");
    auto model = Model::load(o.model);
    std::vector<int32_t> base = model->tok().encode(read_file(o.text_file), false);
    if (base.empty()) fail("bench: %s has no tokens", o.text_file.c_str());
    std::unique_ptr<Router> router;
    const AttentionSpec spec = o.attn.resolve(*model, router);
    auto be = o.backend.make(o.threads, *model);
    Engine engine(*model, *be, router.get());
    const std::vector<int64_t> lengths = parse_list(o.lengths);
    for (int64_t len : lengths) {  // every length checked before anything is printed
        if (len > model->config.max_ctx)
            fail("bench: %lld tokens exceed the model's context of %d", (long long)len, model->config.max_ctx);
        if (len <= o.n_gen) fail("bench: each length must exceed -n (%d)", o.n_gen);
    }
    nlohmann::json rows = nlohmann::json::array();
    if (!o.json) std::printf("\nbackend: %s\n\n", be->name());
    if (!o.json)
        std::printf("| model | attention | tokens N | prefill tok/s | decode tok/s at context N (%d tokens) | KV cache MiB | Ω_MSR | Ω_ESR | attention s | router ms/layer |\n"
                    "|---|---|---|---|---|---|---|---|---|---|\n", o.n_gen);
    for (int64_t len : lengths) {
        std::vector<int32_t> ids(static_cast<size_t>(len));
        for (int64_t i = 0; i < len; ++i) ids[size_t(i)] = base[size_t(i) % base.size()];
        std::vector<double> pre, dec;
        size_t kv = 0;
        AttentionStats st;
        Sampler greedy(SamplerParams{});
        GenerateOptions go;  // decode exactly n_gen tokens: no stop ids
        go.max_new_tokens = o.n_gen;
        const std::vector<int32_t> prompt(ids.begin(), ids.end() - o.n_gen);
        for (int r = 0; r < o.reps; ++r) {
            {
                Session s(engine, len, spec);
                auto t0 = std::chrono::steady_clock::now();
                s.forward(ids.data(), len);
                pre.push_back(double(len) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                kv = s.kv_bytes();
                st = s.stats();
            }
            Session s(engine, len, spec);
            const GenerateResult g = generate(s, prompt, greedy, go);
            dec.push_back(double(g.tokens.size()) / g.decode_seconds);
        }
        Stat p = stats(pre), d = stats(dec);
        const Backend::GraphStats gs = be->graph_stats();  // decode graphs (CUDA; ELASTIC_CUDA_GRAPH=0: off)
        if (be->graphs())
            std::fprintf(stderr, "decode graphs: %lld launches (%lld replays), %lld instantiations, %lld updates so far\n",
                         (long long)gs.launches, (long long)gs.replays, (long long)gs.instantiations,
                         (long long)gs.updates);
        if (o.json) {
            rows.push_back({{"prompt_tokens", len}, {"gen_tokens", o.n_gen}, {"reps", o.reps},
                            {"prefill_tok_s", {{"median", p.median}, {"min", p.min}, {"max", p.max}}},
                            {"decode_tok_s", {{"median", d.median}, {"min", d.min}, {"max", d.max}}}, {"kv_bytes", kv},
                            {"attention", spec.name}, {"omega_msr", st.omega_msr}, {"omega_esr", st.omega_esr},
                            {"attention_seconds", st.attention_seconds}, {"prefill_seconds", st.prefill_seconds},
                            {"router_seconds", st.router_seconds}, {"xa_seconds", st.xa_seconds},
                            {"router_ms_per_layer", 1e3 * st.router_seconds / model->config.n_layer},
                            {"graphs", be->graphs()}, {"graph_launches", gs.launches},
                            {"graph_instantiations", gs.instantiations}, {"graph_replays", gs.replays},
                            {"graph_updates", gs.updates}});
        } else {
            std::printf("| %s | %s | %lld | %.1f (%.1f-%.1f) | %.2f (%.2f-%.2f) | %.1f | %.3f | %.3f | %.3f | %.3f |\n",
                        model->config.name.c_str(), spec.name.c_str(), (long long)len, p.median, p.min, p.max, d.median,
                        d.min, d.max, double(kv) / (1 << 20), st.omega_msr, st.omega_esr, st.attention_seconds,
                        1e3 * st.router_seconds / model->config.n_layer);
            std::fflush(stdout);
        }
    }
    if (o.json) {
        nlohmann::json j{{"model", o.model}, {"backend", be->name()}, {"results", rows}};
        if (std::string(be->name()) == "cpu") j["cpu_kernels"] = cpu_kernels_name(cpu_kernels());  // decode's products
        std::printf("%s\n", j.dump().c_str());
    }
}

}  // namespace

void add_bench(CLI::App& app) {
    CLI::App* b = app.add_subcommand("bench", "Benchmarks");
    b->require_subcommand(1);
    auto o = std::make_shared<BenchOptions>();
    CLI::App* c = b->add_subcommand("model", "Prefill and decode throughput of a model");
    c->add_option("-m,--model", o->model, "GGUF file or HF directory")->required();
    c->add_option("-p,--prompt-lengths", o->lengths, "Comma-separated prompt lengths in tokens")->capture_default_str();
    c->add_option("-n,--n-gen", o->n_gen, "Decoded tokens per run")->capture_default_str();
    c->add_option("-r,--reps", o->reps, "Repetitions (median and range reported)")->capture_default_str();
    c->add_option("--text", o->text_file, "Text whose tokens fill the prompt")->capture_default_str();
    c->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    c->add_flag("--json", o->json, "Print one JSON object");
    o->attn.add_to(c);
    o->backend.add_to(c);
    c->callback([o] { bench_model(*o); });
    add_bench_attention(b);
    add_bench_gemv(b);
    add_bench_tp(b);
    add_bench_router(b);
}

}  // namespace elastic::cli
