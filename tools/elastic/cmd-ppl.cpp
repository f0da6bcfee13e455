// `elastic ppl`: perplexity of a text file. The tokens are cut into windows of --ctx tokens;
// within each window every token after the first is scored given the ones before it.
#include <chrono>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "attention-options.h"
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "model/model.h"
#include "model/sampler.h"

namespace elastic::cli {

namespace {

struct PplOptions {
    std::string model, file;
    int64_t ctx = 0;
    int threads = 0;
    bool per_token = false;
    bool json = false;
    AttentionOptions attn;
    BackendOptions backend;
};

void ppl(const PplOptions& o) {
    auto model = Model::load(o.model);
    const std::string text = read_file(o.file);
    std::vector<int32_t> ids = model->tok().encode(text);
    if (ids.size() < 2) fail("ppl: %s has fewer than 2 tokens", o.file.c_str());
    int64_t ctx = o.ctx > 0 ? o.ctx : std::min<int64_t>(model->config.max_ctx, 2048);
    if (ctx < 2) fail("ppl: --ctx must be at least 2");
    if (ctx > model->config.max_ctx) fail("ppl: --ctx %lld exceeds the model's context of %d", (long long)ctx, model->config.max_ctx);
    std::unique_ptr<Router> router;
    const AttentionSpec spec = o.attn.resolve(*model, router);
    auto backend = o.backend.make(o.threads, *model);
    Engine engine(*model, *backend, router.get());
    Session s(engine, ctx, spec);
    double msr_sum = 0, esr_sum = 0;
    int windows = 0;
    const int32_t V = model->config.vocab;

    std::vector<double> lp(ids.size(), 0.0);  // lp[i] = log p(ids[i] | window prefix); lp[window start] unused
    std::vector<char> scored(ids.size(), 0);
    const bool tty = stderr_is_tty();
    auto t0 = std::chrono::steady_clock::now();
    // Not a terminal (a log, CI): a plain progress line at most every 10 s, per layer of the window.
    double next_note = 10;
    size_t window_start = 0;
    if (!tty)
        s.set_progress([&](int layer, int n_layer) {
            const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (el < next_note) return;
            next_note = el + 10;
            std::fprintf(stderr, "ppl: tokens %zu-%zu of %zu, layer %d/%d, %.0f s\n", window_start,
                         std::min(window_start + size_t(ctx), ids.size()), ids.size(), layer + 1, n_layer, el);
        });
    for (size_t w0 = 0; w0 + 1 < ids.size(); w0 += size_t(ctx)) {
        const size_t n = std::min(size_t(ctx), ids.size() - w0);
        if (n < 2) break;
        window_start = w0;
        s.reset();
        s.forward(ids.data() + w0, int64_t(n), true, [&](int64_t i, const float* logits) {
            const size_t t = w0 + size_t(i) + 1;
            if (size_t(i) + 1 < n) {
                lp[t] = log_prob(logits, V, ids[t]);
                scored[t] = 1;
            }
        });
        msr_sum += s.stats().omega_msr;
        esr_sum += s.stats().omega_esr;
        ++windows;
        if (tty) std::fprintf(stderr, "\rppl %zu/%zu tokens", w0 + n, ids.size());
    }
    if (tty) std::fprintf(stderr, "\r\033[K");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double nll = 0;
    size_t count = 0;
    for (size_t i = 0; i < ids.size(); ++i)
        if (scored[i]) { nll -= lp[i]; ++count; }
    const double mean = nll / double(count);
    if (o.json) {
        nlohmann::json j;
        j["model"] = o.model;
        j["file"] = o.file;
        j["tokens"] = ids.size();
        j["scored"] = count;
        j["ctx"] = ctx;
        j["mean_nll"] = mean;
        j["ppl"] = std::exp(mean);
        j["seconds"] = secs;
        j["attention"] = spec.name;
        j["omega_msr"] = msr_sum / std::max(windows, 1);
        j["omega_esr"] = esr_sum / std::max(windows, 1);
        if (o.per_token) {
            nlohmann::json pt = nlohmann::json::array();
            for (size_t i = 0; i < ids.size(); ++i)
                pt.push_back({{"id", ids[i]}, {"logprob", scored[i] ? nlohmann::json(lp[i]) : nlohmann::json(nullptr)}});
            j["per_token"] = pt;
        }
        std::printf("%s\n", j.dump().c_str());
    } else {
        if (o.per_token)
            for (size_t i = 0; i < ids.size(); ++i)
                if (scored[i]) std::printf("%zu\t%d\t%.6f\n", i, ids[i], lp[i]);
        std::printf("tokens %zu | scored %zu | mean NLL %.6f | perplexity %.4f | %.1f tok/s\n", ids.size(), count, mean,
                    std::exp(mean), double(ids.size()) / secs);
    }
}

}  // namespace

void add_ppl(CLI::App& app) {
    auto o = std::make_shared<PplOptions>();
    CLI::App* c = app.add_subcommand("ppl", "Perplexity of a text file");
    c->add_option("-m,--model", o->model, "GGUF file or HF directory")->required();
    c->add_option("-f,--file", o->file, "Text file")->required();
    c->add_option("--ctx", o->ctx, "Window length in tokens (default: min(model context, 2048))")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
    c->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    c->add_flag("--per-token", o->per_token, "Also print each token's log-prob");
    c->add_flag("--json", o->json, "Print one JSON object");
    o->attn.add_to(c);
    o->backend.add_to(c);
    c->callback([o] { ppl(*o); });
}

}  // namespace elastic::cli
