// `elastic run`: generate text from a prompt; text on stdout, a one-line summary on stderr.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include <fstream>

#include "attention-options.h"
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "formats/quants.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/sampler.h"

namespace elastic::cli {

namespace {

struct RunOptions {
    std::string model, prompt, file, system;
    int n_predict = 128;
    int threads = 0;
    int64_t ctx = 0;
    bool chat = false;
    SamplerParams sp{0.8f, 40, 0.95f, 0};
    AttentionOptions attn;
    BackendOptions backend;
    std::string stats_json;
    bool verbose = false;
};

// Folds the last position's logits (their fp32 bits) into an FNV-1a hash: two backends or two
// builds that agree bit for bit print the same hash.
uint64_t logits_hash(uint64_t h, const Session& s) {
    for (float x : s.last_logits()) {
        uint32_t u;
        std::memcpy(&u, &x, 4);
        for (int b = 0; b < 4; ++b) h = (h ^ ((u >> (8 * b)) & 0xff)) * 1099511628211ull;
    }
    return h;
}

void run(const RunOptions& o) {
    if (o.prompt.empty() && o.file.empty()) fail("run: give a prompt with -p TEXT and/or -f FILE");
    if (o.n_predict < 0) fail("run: -n must be >= 0");
    std::string text = o.file.empty() ? o.prompt : read_file(o.file) + (o.prompt.empty() ? "" : "\n" + o.prompt);
    const bool tty = stderr_is_tty();
    if (tty) std::fprintf(stderr, "loading %s ...\r", o.model.c_str());
    auto model = Model::load(o.model);
    const Tokenizer& tok = model->tok();
    if (o.chat) {
        if (tok.chat_template() == ChatTemplate::None) fail("run: --chat: the model has no known chat template");
        std::vector<ChatMessage> msgs;
        if (!o.system.empty()) msgs.push_back({"system", o.system});
        msgs.push_back({"user", text});
        text = tok.apply_chat_template(msgs, true);
    }
    std::vector<int32_t> ids = tok.encode(text);
    if (ids.empty()) fail("run: the prompt is empty after tokenisation");
    const int64_t max_ctx = model->config.max_ctx;
    if (int64_t(ids.size()) > max_ctx)
        fail("run: the prompt has %zu tokens, more than the model's context of %lld", ids.size(), (long long)max_ctx);
    int64_t cap = o.ctx > 0 ? o.ctx : std::min<int64_t>(max_ctx, int64_t(ids.size()) + o.n_predict);
    if (int64_t(ids.size()) > cap) fail("run: the prompt has %zu tokens, more than --ctx %lld", ids.size(), (long long)cap);

    std::unique_ptr<Router> router;
    const AttentionSpec spec = o.attn.resolve(*model, router);
    auto backend = o.backend.make(o.threads, *model);
    Engine engine(*model, *backend, router.get());
    Session s(engine, cap, spec);
    Sampler sampler(o.sp);
    if (tty)
        s.set_progress([&](int layer, int n_layer) {
            std::fprintf(stderr, "\rprefill %zu tokens: layer %d/%d", ids.size(), layer + 1, n_layer);
            if (layer + 1 == n_layer) std::fprintf(stderr, "\r\033[K");
        });
    GenerateOptions go;
    go.max_new_tokens = o.n_predict;
    go.stop_ids = tok.stop_ids();
    // Only ids the tokenizer has: a padded vocabulary (Qwen3: 151936 rows, 151669 tokens) has rows
    // no text maps to, which random weights (`elastic random-model`) do pick.
    go.vocab_limit = tok.vocab_size();
    go.host_logits = o.verbose;
    std::vector<int32_t> out;
    std::string printed;
    auto print_new = [&](bool final) {
        // Raw bytes: a partial character at the end is held back below, not printed as U+FFFD.
        const std::string all = tok.decode_bytes(out, /*skip_special=*/true);
        size_t end = all.size();
        if (!final) {  // print only complete UTF-8: hold back a trailing partial sequence
            size_t k = end;
            while (k > 0 && (static_cast<unsigned char>(all[k - 1]) & 0xC0) == 0x80) --k;
            if (k > 0) {
                const unsigned char lead = static_cast<unsigned char>(all[k - 1]);
                const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
                if (end - (k - 1) < need) end = k - 1;
            }
        }
        if (end > printed.size()) {
            std::fwrite(all.data() + printed.size(), 1, end - printed.size(), stdout);
            std::fflush(stdout);
            printed.assign(all, 0, end);
        }
    };
    uint64_t hash = 1469598103934665603ull;  // FNV-1a over the logits' bits, for --verbose
    const GenerateResult g = o.n_predict == 0 ? GenerateResult{} : generate(s, ids, sampler, go, [&](int32_t id, bool stop) {
        if (o.verbose) hash = logits_hash(hash, s);
        if (!stop) {
            out.push_back(id);
            print_new(false);
        }
        return true;
    });
    if (o.n_predict == 0) s.forward(ids.data(), int64_t(ids.size()));
    print_new(true);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    const double t_prefill = g.prefill_seconds > 0 ? g.prefill_seconds : s.stats().prefill_seconds, t_decode = g.decode_seconds;
    const AttentionStats& st = s.stats();
    std::fprintf(stderr,
                 "prompt %zu tokens | prefill %.1f tok/s | decode %.1f tok/s (%zu tokens) | peak memory %.0f MiB | "
                 "attention %s: MSR %.3f ESR %.3f, KV cache %.1f MiB, attention %.0f%% of prefill\n",
                 ids.size(), double(ids.size()) / t_prefill, out.empty() ? 0.0 : double(out.size()) / t_decode, out.size(),
                 double(peak_rss_bytes()) / (1 << 20), spec.name.c_str(), st.omega_msr, st.omega_esr,
                 double(s.kv_bytes()) / (1 << 20), 100.0 * st.attention_seconds / std::max(st.prefill_seconds, 1e-9));
    if (g.reason == StopReason::Context)
        std::fprintf(stderr, "stopped after %zu tokens: the context of %lld tokens is full (--ctx)\n", out.size(), (long long)cap);
    if (o.verbose) {
        const std::string kernels =
            std::string(backend->name()) == "cpu" ? std::string(", decode kernels ") + cpu_kernels_name(cpu_kernels()) : "";
        std::fprintf(stderr, "backend %s%s | stopped: %s | logits hash %016llx (FNV-1a of every sampled step's logits)\n",
                     backend->name(), kernels.c_str(), stop_reason_name(g.reason), (unsigned long long)hash);
    }
    if (!o.stats_json.empty()) {
        std::ofstream f(o.stats_json);
        if (!(f << st.to_json(true) << "\n")) fail("%s: cannot write", o.stats_json.c_str());
    }
}

}  // namespace

void add_run(CLI::App& app) {
    auto o = std::make_shared<RunOptions>();
    CLI::App* c = app.add_subcommand("run", "Generate text from a prompt");
    c->add_option("-m,--model", o->model, "GGUF file or HF directory")->required();
    c->add_option("-p,--prompt", o->prompt, "Prompt text (appended after -f FILE when both are given)");
    c->add_option("-f,--file", o->file, "Read the prompt from a file");
    c->add_option("-n,--n-predict", o->n_predict, "Tokens to generate")->capture_default_str();
    c->add_option("--temp", o->sp.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
    c->add_option("--top-k", o->sp.top_k, "Top-k (0 = off)")->capture_default_str();
    c->add_option("--top-p", o->sp.top_p, "Top-p (1 = off)")->capture_default_str();
    c->add_option("--seed", o->sp.seed, "Random seed")->capture_default_str();
    c->add_option("--ctx", o->ctx, "Context capacity (default: prompt + n, up to the model's)")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
    c->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    c->add_flag("--chat", o->chat, "Wrap the prompt in the model's chat template as a user message");
    c->add_option("--system", o->system, "System message for --chat");
    o->attn.add_to(c);
    o->backend.add_to(c);
    c->add_flag("-v,--verbose", o->verbose, "Also print the backend, why generation stopped and a hash of the logits");
    c->add_option("--stats-json", o->stats_json, "Write attention statistics (Ω_MSR, Ω_ESR, per-layer decisions, KV bytes, times)");
    c->callback([o] { run(*o); });
}

}  // namespace elastic::cli
