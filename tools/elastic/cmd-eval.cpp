// `elastic eval`: RULER-style synthetic tasks (ruler), sparsity-robust/-sensitive measurements on
// real text (robust), LongBench-format files (longbench), and merging results (report, in
// cmd-eval-report.cpp). Each run prints one JSON object (--json) or a short table; progress on stderr.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "attention-options.h"
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "eval/corpus.h"
#include "eval/generate.h"
#include "eval/longbench-metrics.h"
#include "eval/longbench.h"
#include "eval/random.h"
#include "eval/results.h"
#include "eval/robust.h"
#include "eval/ruler.h"
#include "model/model.h"

namespace elastic::cli {

using namespace elastic::eval;

namespace {

struct EvalOptions {
    std::string model, backend = "cpu", precision = "auto", tasks = "niah_single_1,niah_single_2,vt,cwe", lengths = "1024", data, datasets;
    std::string text_dir = kDefaultProseDir, code_dir = kDefaultCodeDir;
    std::string out;  // -o: the JSON result file, rewritten after every task x length
    int samples = 3, threads = 0;
    int64_t max_length = 0;
    uint64_t seed = 0;
    bool json = false, predictions = false;
    AttentionOptions attn;
};

std::vector<int64_t> parse_lengths(const std::string& s) {
    std::vector<int64_t> out;
    std::stringstream ss(s);
    std::string t;
    while (std::getline(ss, t, ',')) {
        if (t.empty()) continue;
        char* end = nullptr;
        double v = std::strtod(t.c_str(), &end);
        std::string unit = end;
        if (unit == "K" || unit == "k") v *= 1024;
        else if (!unit.empty()) fail("--lengths: '%s' is not a length (e.g. 1024, 4K)", t.c_str());
        if (!(v >= 64)) fail("--lengths: %s is too short (at least 64 tokens)", t.c_str());
        out.push_back(int64_t(v));
    }
    if (out.empty()) fail("--lengths: none given");
    return out;
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string t;
    while (std::getline(ss, t, ','))
        if (!t.empty()) out.push_back(t);
    return out;
}

// Everything one eval run shares: the model, backend, attention and the progress line.
struct Runner {
    const EvalOptions& o;
    std::unique_ptr<Model> model;
    std::unique_ptr<Router> router;
    std::unique_ptr<Backend> backend;
    AttentionSpec spec;
    std::unique_ptr<Engine> engine;
    bool tty = stderr_is_tty();
    int done = 0, total = 0;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    nlohmann::json predictions = nlohmann::json::array();

    explicit Runner(const EvalOptions& opts) : o(opts) {
        if (o.samples < 1) fail("eval: --samples must be at least 1");
        model = Model::load(o.model);
        model->tok();
        spec = o.attn.resolve(*model, router);
        BackendOptions bo;
        bo.backend = o.backend;
        bo.precision = o.precision;
        backend = bo.make(o.threads, *model);
        engine = std::make_unique<Engine>(*model, *backend, router.get());
    }
    Target target() const { return Target{*engine, spec}; }
    void progress(const std::string& what) {
        ++done;
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const int width = 24, fill = total ? done * width / total : width;
        std::string bar(size_t(fill), '#');
        bar += std::string(size_t(width - fill), '.');
        std::fprintf(stderr, "%s[%s] %d/%d %s  %.0fs%s", tty ? "\r\033[K" : "", bar.c_str(), done, total, what.c_str(), secs,
                     tty ? "" : "\n");
        if (tty && done == total) std::fprintf(stderr, "\n");
    }
    void keep(const Sample& s, const Generation& g, double score) {
        if (o.predictions)
            predictions.push_back({{"task", s.task},      {"length", s.length},  {"index", s.index}, {"prediction", g.text},
                                   {"answers", s.outputs}, {"score", score},      {"plan", g.plan}});
    }
    nlohmann::json json_of(const std::string& command, const std::vector<TaskResult>& results, const nlohmann::json& extra,
                           bool complete) const {
        nlohmann::json j = {{"command", command}, {"model", o.model},    {"attention", spec.name},
                            {"backend", o.backend}, {"precision", o.precision}, {"seed", o.seed},    {"samples_per_task", o.samples}};
        // The router file's name: `eval report` tells two runs of one mode with other routers apart by it.
        if (spec.needs_router() && !o.attn.router.empty()) {
            std::string r = o.attn.router;
            while (r.size() > 1 && r.back() == '/') r.pop_back();
            j["router"] = r.substr(r.find_last_of('/') + 1);  // npos + 1 == 0: no slash, the whole name
        }
        for (auto it = extra.begin(); extra.is_object() && it != extra.end(); ++it) j[it.key()] = it.value();
        j["complete"] = complete;
        j["results"] = nlohmann::json::array();
        for (const auto& r : results) j["results"].push_back(to_json(r));
        if (o.predictions) j["predictions"] = predictions;
        return j;
    }
    // -o FILE: the results so far ("complete": false until the run ends), through a temporary
    // file and a rename, so an interrupted run leaves every finished task x length readable.
    void save(const std::string& command, const std::vector<TaskResult>& results, const nlohmann::json& extra,
              bool complete) const {
        if (o.out.empty()) return;
        const std::string tmp = o.out + ".tmp";
        {
            std::ofstream f(tmp);
            if (!f) fail("eval: cannot write %s", tmp.c_str());
            f << json_of(command, results, extra, complete).dump(1) << "\n";
            if (!f) fail("eval: cannot write %s", tmp.c_str());
        }
        std::error_code ec;
        std::filesystem::rename(tmp, o.out, ec);
        if (ec) fail("eval: cannot write %s: %s", o.out.c_str(), ec.message().c_str());
    }
    void print(const std::string& command, const std::vector<TaskResult>& results, const nlohmann::json& extra = {}) {
        save(command, results, extra, true);
        if (o.json) {
            std::printf("%s\n", json_of(command, results, extra, true).dump(1).c_str());
            return;
        }
        std::printf("%-22s %7s %7s %9s %7s %7s %10s\n", "task", "length", "samples", "score", "Ω_MSR", "Ω_ESR", "prefill s");
        for (const auto& r : results)
            std::printf("%-22s %7s %7d %9.2f %7.3f %7.3f %10.2f\n", r.task.c_str(), r.length_label.c_str(), r.samples, r.score,
                        r.omega_msr, r.omega_esr, r.prefill_seconds);
    }
};

std::string ruler_family(const std::string& task) { return task.rfind("niah", 0) == 0 ? "niah" : task; }

void eval_ruler(const EvalOptions& o) {
    const std::vector<std::string> tasks = parse_ruler_tasks(o.tasks);
    const std::vector<int64_t> lengths = parse_lengths(o.lengths);
    Runner run(o);
    for (int64_t L : lengths)
        if (L > run.model->config.max_ctx) fail("eval ruler: length %lld exceeds the model's context of %d", (long long)L, run.model->config.max_ctx);
    const Corpus prose = load_corpus(o.text_dir, {}, 16u << 20);
    RulerData data;
    data.essay = corpus_words(prose);
    data.prose = &prose;
    const Tokenizer& tok = run.model->tok();
    const PromptTokens count = [&](const Sample& s) { return int64_t(prompt_ids(tok, s).size()); };
    // Every task x length is checked before the first generation: a length too short for a task
    // is an error now, not after minutes of work.
    for (const auto& task : tasks)
        for (int64_t L : lengths) {
            try {
                (void)make_ruler_sample(task, L, 0, o.seed, data, count);
            } catch (const Error& e) {
                fail("eval ruler: %s (each task x length is checked before the first generation)", e.what());
            }
        }
    run.total = int(tasks.size() * lengths.size()) * o.samples;
    const nlohmann::json extra = {{"text_dir", o.text_dir}};
    std::vector<TaskResult> results;
    run.save("ruler", results, extra, false);
    for (const auto& task : tasks)
        for (int64_t L : lengths) {
            TaskAccumulator acc;
            acc.r.task = task;
            acc.r.family = ruler_family(task);
            acc.r.metric = "string_match_all";
            acc.r.length = L;
            for (int i = 0; i < o.samples; ++i) {
                const Sample s = make_ruler_sample(task, L, i, o.seed, data, count);
                const Generation g = generate(run.target(), prompt_ids(tok, s), s.max_new_tokens);
                const double sc = string_match_all(g.text, s.outputs);
                acc.add(sc, g.omega_msr, g.omega_esr, g.prefill_seconds, double(g.prompt_tokens), g.decode_seconds);
                run.keep(s, g, sc);
                run.progress(task + " " + length_label(L));
            }
            results.push_back(acc.finish());
            run.save("ruler", results, extra, false);
        }
    run.print("ruler", results, extra);
}

void eval_robust(const EvalOptions& o) {
    const std::vector<int64_t> lengths = parse_lengths(o.lengths);
    std::vector<std::string> tasks = o.tasks == "all" ? robust_tasks() : split_list(o.tasks);
    for (const auto& t : tasks)
        if (std::find(robust_tasks().begin(), robust_tasks().end(), t) == robust_tasks().end())
            fail("eval robust: unknown task '%s' (ppl-prose, ppl-code, code-next-line, all)", t.c_str());
    Runner run(o);
    for (int64_t L : lengths)
        if (L > run.model->config.max_ctx) fail("eval robust: length %lld exceeds the model's context of %d", (long long)L, run.model->config.max_ctx);
    const Tokenizer& tok = run.model->tok();
    std::string prose, code;
    auto joined = [](const Corpus& c) {
        std::string s;
        for (const auto& d : c.docs) s += d + "\n\n";
        return s;
    };
    for (const auto& t : tasks) {
        if (t == "ppl-prose" && prose.empty()) prose = joined(load_corpus(o.text_dir, {}, 16u << 20));
        if (t != "ppl-prose" && code.empty()) code = joined(load_corpus(o.code_dir, {".h", ".hpp", ".c", ".cc", ".cpp"}, 8u << 20));
    }
    run.total = int(tasks.size() * lengths.size()) * o.samples;
    std::vector<TaskResult> results;
    for (const auto& task : tasks)
        for (int64_t L : lengths) {
            TaskAccumulator acc;
            acc.r.task = task;
            acc.r.family = task;
            acc.r.length = L;
            double exact = 0;
            for (int i = 0; i < o.samples; ++i) {
                if (task == "code-next-line") {
                    const Sample s = make_next_line_sample(tok, code, L, i, o.seed);
                    const Generation g = generate(run.target(), prompt_ids(tok, s), s.max_new_tokens);
                    const double sim = next_line_similarity(g.text, s.outputs[0]);
                    exact += next_line_exact(g.text, s.outputs[0]);
                    acc.add(sim, g.omega_msr, g.omega_esr, g.prefill_seconds, double(g.prompt_tokens), g.decode_seconds);
                    run.keep(s, g, sim);
                } else {
                    const std::vector<int32_t> ids =
                        document_window(tok, task == "ppl-prose" ? prose : code, L, derive_seed(o.seed, task, uint64_t(L), uint64_t(i)));
                    const PplResult p = tail_nll(run.target(), ids);
                    acc.add(p.mean_nll, p.omega_msr, p.omega_esr, p.prefill_seconds, double(ids.size()), 0);
                }
                run.progress(task + " " + length_label(L));
            }
            if (task == "code-next-line") {
                acc.r.metric = "edit_similarity";
                TaskResult r = acc.finish();
                r.extra["exact_match"] = std::round(10000.0 * exact / o.samples) / 100.0;
                results.push_back(r);
                run.save("robust", results, {{"text_dir", o.text_dir}, {"code_dir", o.code_dir}}, false);
            } else {
                acc.r.metric = "perplexity_last_512";
                acc.r.higher_is_better = false;
                TaskResult r = acc.finish(1.0);  // mean NLL
                r.extra["mean_nll"] = r.score;
                if (r.extra.contains("ci95")) {  // of the mean NLL, not of the perplexity
                    r.extra["mean_nll_ci95"] = r.extra["ci95"];
                    r.extra.erase("ci95");
                }
                r.score = std::round(100.0 * std::exp(r.score)) / 100.0;
                results.push_back(r);
                run.save("robust", results, {{"text_dir", o.text_dir}, {"code_dir", o.code_dir}}, false);
            }
        }
    run.print("robust", results, {{"text_dir", o.text_dir}, {"code_dir", o.code_dir}});
}

void eval_longbench(const EvalOptions& o) {
    if (o.data.empty()) fail("eval longbench: give the directory of LongBench JSONL files with --data DIR");
    const std::vector<LongBenchFile> files = find_longbench_files(o.data, split_list(o.datasets));
    Runner run(o);
    const Tokenizer& tok = run.model->tok();
    const int64_t max_length = o.max_length > 0 ? o.max_length : std::max<int64_t>(256, run.model->config.max_ctx - 500);
    std::vector<std::vector<Sample>> all;
    for (const auto& f : files) {
        all.push_back(load_longbench(f, o.samples));
        run.total += int(all.back().size());
    }
    const std::vector<int32_t> newline = tok.encode("\n", false);
    std::vector<TaskResult> results;
    for (size_t fi = 0; fi < files.size(); ++fi) {
        const LongBenchFile& f = files[fi];
        std::map<std::string, TaskAccumulator> buckets;  // LongBench-E: 0-4k, 4-8k, 8k+; else "all"
        for (const Sample& s0 : all[fi]) {
            Sample s = s0;
            s.input = truncate_middle(tok, s.input, max_length);
            std::vector<int32_t> extra;
            int min_new = 0;
            if (f.dataset == "samsum") {  // pred.py: stop at a newline, generate at least one token
                if (!newline.empty()) extra.push_back(newline.back());
                min_new = 1;
            }
            const Generation g = generate(run.target(), prompt_ids(tok, s), s.max_new_tokens, extra, min_new);
            const double sc = longbench_score(f.dataset, g.text, s.outputs, s.all_classes);
            const std::string b = !f.e ? "all" : s.words < 4000 ? "0-4k" : s.words < 8000 ? "4-8k" : "8k+";
            TaskAccumulator& acc = buckets[b];
            acc.add(sc, g.omega_msr, g.omega_esr, g.prefill_seconds, double(g.prompt_tokens), g.decode_seconds);
            run.keep(s, g, sc);
            run.progress(f.dataset + (f.e ? "_e" : ""));
        }
        for (const char* b : {"all", "0-4k", "4-8k", "8k+"}) {
            auto it = buckets.find(b);
            if (it == buckets.end()) continue;
            TaskAccumulator acc = it->second;
            acc.r.task = f.dataset + (f.e ? "_e" : "");
            acc.r.family = longbench_family(f.dataset);
            acc.r.metric = f.dataset;
            acc.r.length = std::string(b) == "all" ? 0 : std::string(b) == "0-4k" ? 4000 : std::string(b) == "4-8k" ? 8000 : 16000;
            acc.r.length_label = b;
            results.push_back(acc.finish());
        }
    }
    run.print("longbench", results, {{"data", o.data}, {"max_length", max_length}});
}

void add_common(CLI::App* c, EvalOptions& o) {
    c->add_option("-m,--model", o.model, "GGUF file or HF directory")->required();
    c->add_option("--samples", o.samples, "Samples per task and length (LongBench: first N lines per file)")->capture_default_str();
    c->add_option("--seed", o.seed, "Seed of the generated data")->capture_default_str();
    c->add_option("--backend", o.backend, "cpu | cuda | cuda:N")->capture_default_str();
    c->add_option("--precision", o.precision, "CUDA precision: bf16 | f16 | f32 | auto")->capture_default_str();
    c->add_option("-t,--threads", o.threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    c->add_flag("--json", o.json, "Print one JSON object (for `elastic eval report`)");
    c->add_option("-o,--out", o.out, "Also write the JSON to this file, rewritten after every task x length (\"complete\": false until the end)");
    c->add_flag("--predictions", o.predictions, "Include every prediction in the JSON");
    o.attn.add_to(c);
}

}  // namespace

void add_eval(CLI::App& app) {
    CLI::App* ev = app.add_subcommand("eval", "Evaluate: RULER-style tasks, long-text robustness, LongBench files, reports");
    ev->require_subcommand(1);

    auto r = std::make_shared<EvalOptions>();
    CLI::App* c = ev->add_subcommand("ruler", "RULER-style synthetic tasks generated from a seed");
    add_common(c, *r);
    c->add_option("--tasks", r->tasks, "Comma list of tasks, 'niah' or 'all'")->capture_default_str();
    c->add_option("--lengths", r->lengths, "Comma list of lengths in tokens (1024, 4K, ...)")->capture_default_str();
    c->add_option("--text-dir", r->text_dir, "Prose for the essay haystack")->capture_default_str();
    c->callback([r] { eval_ruler(*r); });

    auto b = std::make_shared<EvalOptions>();
    b->tasks = "all";
    c = ev->add_subcommand("robust", "Long-document perplexity (prose, code) and next-line code completion");
    add_common(c, *b);
    c->add_option("--tasks", b->tasks, "ppl-prose, ppl-code, code-next-line or all")->capture_default_str();
    c->add_option("--lengths", b->lengths, "Comma list of document lengths in tokens")->capture_default_str();
    c->add_option("--text-dir", b->text_dir, "Prose corpus")->capture_default_str();
    c->add_option("--code-dir", b->code_dir, "Source-code corpus (*.h, *.hpp, *.c, *.cc, *.cpp)")->capture_default_str();
    c->callback([b] { eval_robust(*b); });

    auto l = std::make_shared<EvalOptions>();
    l->samples = -1;
    c = ev->add_subcommand("longbench", "LongBench / LongBench-E JSONL files with the official prompts and metrics");
    add_common(c, *l);
    c->add_option("--data", l->data, "Directory of {dataset}.jsonl / {dataset}_e.jsonl files")->required();
    c->add_option("--datasets", l->datasets, "Comma list of datasets (default: every file found)");
    c->add_option("--max-length", l->max_length, "Prompt token budget, truncated in the middle (default: context - 500)");
    c->callback([l] {
        EvalOptions o = *l;
        if (o.samples == -1) o.samples = 1 << 30;
        eval_longbench(o);
    });

    add_eval_report(ev);
    add_eval_compare(ev);
}

}  // namespace elastic::cli
