// `elastic data build`: writes the router training mix (src/train/data.h) as JSONL, deterministic
// for a seed, through a temporary file renamed at the end (a failure never leaves half a file).
// `elastic data check`: reads a mix as the trainer will and prints its per-task counts.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

namespace elastic::cli {

namespace {

struct DataOptions {
    train::DataBuildOptions build;
    std::string out, in, model;
    double source_mb = double(train::DataBuildOptions{}.max_source_bytes >> 20);
    bool force = false, skip_bad = false;
};

std::string task_counts(const std::map<std::string, int64_t>& per_task) {
    std::string s;
    for (const auto& [task, n] : per_task) s += (s.empty() ? "" : ", ") + task + " " + std::to_string(n);
    return s;
}

void data_build(const DataOptions& o) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(o.out, ec) && !o.force) fail("data build: %s exists (give --force to overwrite)", o.out.c_str());
    const auto t0 = std::chrono::steady_clock::now();
    auto tok = Tokenizer::from_path(o.model);
    const train::TrainSources src = train::load_train_sources(o.build);
    const std::string tmp = o.out + ".tmp-" + std::to_string(getpid());
    struct Cleanup {
        const std::string& path;
        bool armed = true;
        ~Cleanup() {
            if (armed) std::remove(path.c_str());
        }
    } cleanup{tmp};
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("data build: cannot write %s", tmp.c_str());
    const bool tty = stderr_is_tty();
    const train::BuildStats st = train::build_training_mix(o.build, *tok, src, [&](const train::TextSample& s, int64_t, const train::BuildStats& so_far) {
        f << train::to_json_line(s) << '\n';
        if (!f) fail("data build: write error on %s", tmp.c_str());
        if (tty && so_far.samples % 16 == 0)
            std::fprintf(stderr, "\r\033[K%lld samples, %lld / %lld tokens (%.0f %%)", (long long)so_far.samples, (long long)so_far.tokens,
                         (long long)o.build.tokens, 100.0 * double(so_far.tokens) / double(o.build.tokens));
    });
    if (tty) std::fprintf(stderr, "\r\033[K");
    f.close();
    if (!f) fail("data build: write error on %s", tmp.c_str());
    fs::rename(tmp, o.out, ec);
    if (ec) fail("data build: cannot rename %s to %s: %s", tmp.c_str(), o.out.c_str(), ec.message().c_str());
    cleanup.armed = false;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("data build: %s: %lld samples, %lld tokens (%.1f %% sensitive), %zu prose files (%zu paragraphs, %zu left out for sharing text with eval's), %zu code files, %.1f s; %s\n",
                o.out.c_str(), (long long)st.samples, (long long)st.tokens, 100.0 * double(st.sensitive_tokens) / double(st.tokens),
                src.prose_files.size(), src.paragraphs.size(), src.dropped_eval_overlap, src.code_files.size(), secs,
                task_counts(st.per_task).c_str());
}

void data_check(const DataOptions& o) {
    auto tok = Tokenizer::from_path(o.model);
    int64_t skipped = 0;
    const std::vector<train::TextSample> v = train::read_training_data(o.in, o.build.max_seq, *tok, o.skip_bad, &skipped);
    std::map<std::string, int64_t> per_task;
    int64_t sensitive = 0;
    for (const auto& s : v) {
        per_task[s.task]++;
        sensitive += s.category == "sensitive";
    }
    std::printf("data check: %s: %zu samples (%lld sensitive, %lld robust), %lld skipped; %s\n", o.in.c_str(), v.size(),
                (long long)sensitive, (long long)(int64_t(v.size()) - sensitive), (long long)skipped, task_counts(per_task).c_str());
}

}  // namespace

void add_data(CLI::App& app) {
    CLI::App* d = app.add_subcommand("data", "Router training data: build the task-labelled mix, check a file");
    d->require_subcommand(1);

    auto b = std::make_shared<DataOptions>();
    CLI::App* c = d->add_subcommand("build", "Write the offline, task-labelled training mix as JSONL (deterministic for a seed)");
    c->add_option("--out", b->out, "Output .jsonl file")->required();
    c->add_option("-m,--model", b->model, "GGUF model, tokenizer.json or a directory holding one (for token counts)")->required();
    c->add_option("--tokens", b->build.tokens, "Total tokens to write")->capture_default_str();
    c->add_option("--max-seq", b->build.max_seq, "Longest sample in tokens, as the trainer renders it (chat template or raw text, + answer)")->capture_default_str();
    c->add_option("--min-seq", b->build.min_seq, "Shortest target length (default: max-seq / 8)");
    c->add_option("--seed", b->build.seed, "Seed")->capture_default_str();
    c->add_option("--sensitive-share", b->build.sensitive_share, "Share of tokens from sparsity-sensitive tasks")->capture_default_str();
    c->add_option("--prose-dir", b->build.prose_dir, "Plain-text prose (not eval's)")->capture_default_str();
    c->add_option("--code-dir", b->build.code_dir, "C/C++ sources (eval's files are skipped)")->capture_default_str();
    c->add_option("--max-source-mb", b->source_mb, "Read at most this many MiB of each source, in path order")->capture_default_str();
    c->add_flag("--force", b->force, "Overwrite --out if it exists");
    c->callback([b] {
        if (!(b->source_mb > 0)) fail("data build: --max-source-mb must be positive");
        b->build.max_source_bytes = size_t(b->source_mb * double(1u << 20));
        data_build(*b);
    });

    auto k = std::make_shared<DataOptions>();
    c = d->add_subcommand("check", "Read a training mix as the trainer does; print per-task counts");
    c->add_option("file", k->in, "JSONL file")->required();
    c->add_option("-m,--model", k->model, "GGUF model, tokenizer.json or a directory holding one")->required();
    c->add_option("--max-seq", k->build.max_seq, "Longest sample allowed, in tokens")->capture_default_str();
    c->add_flag("--skip-bad", k->skip_bad, "Skip and count bad lines instead of failing on the first");
    c->callback([k] { data_check(*k); });
}

}  // namespace elastic::cli
