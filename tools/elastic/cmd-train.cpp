// `elastic train-router`: trains the per-layer routers of a frozen model on the CPU or a GPU (DESIGN.md §1.4;
// docs/training.md). Data: JSON lines {prompt, answer, task, category}. Output: router weights
// under the released tensor names, loadable with --router, with the run's metadata.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "attention/elastic.h"
#include "attention/router.h"
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "dist/comm.h"
#include "model/model.h"
#include "eval/training-plot.h"
#include "formats/safetensors.h"
#include "train/router-init.h"
#include "train/data.h"
#include "train/trainer-data.h"
#include "train/trainer.h"

namespace elastic::cli {

namespace {

struct TrainCliOptions {
    std::string model, data, config = "fa-ssa", out, resume, checkpoint_dir, log, init, backend = "cpu";
    int64_t steps = 300, max_seq = 4096, checkpoint_every = 0, stop_at = -1;
    int batch = 1, threads = 0, ranks = 1;
    uint64_t seed = 0;
    double target_sensitive = 0.7, target_robust = 1.0, lr = 5e-4, lambda_lr = 1e-3, lambda_init = 0.0;
    int64_t sink = 128, local = 2048, xa_block = 128;
    bool skip_bad = false;
    int standardize = 0, fit_samples = 64, fit_iters = 300;
    std::string fit_static, fit_log;
    double fit_msr = 0.7, fit_p = 0.75, fit_msr_robust = -1, fit_temp = 0;
    std::string variant = "softmax";
    bool gumbel = false;
    double tau_start = 1.5, tau_end = 1.0;
};

// The warm start's curve (--fit-log): one JSON line per fit iteration, drawn by `train-router plot`:
// the fit's squared error, Ω_MSR of each plan's samples against the plan's Ω (dashed), and the share
// of decisions that agree with the plan. Written whole (the fit takes minutes, not hours).
void write_fit_log(const std::string& path, const train::PlanFit& f, const std::vector<std::string>& names) {
    std::ofstream out(path, std::ios::trunc);
    if (!out) fail("train-router: cannot write --fit-log %s", path.c_str());
    for (const train::PlanFitPoint& p : f.curve) {
        nlohmann::json j;
        j["step"] = p.iter;
        j["fit_loss"] = p.mse;
        for (size_t k = 0; k < names.size() && k < p.omega.size(); ++k) {
            j["omega"][names[k]] = p.omega[k];
            j["target"][names[k]] = f.plan_omega[k];
            j["agreement"][names[k]] = p.agreement[k];
        }
        out << j.dump() << "\n";
    }
    if (!out.flush()) fail("train-router: writing --fit-log %s failed", path.c_str());
}

void train_router(const TrainCliOptions& c) {
    if (c.steps < 1) fail("train-router: --steps must be >= 1");
    if (c.batch < 1) fail("train-router: --batch must be >= 1");
    if (c.ranks < 1 || c.ranks > c.batch) fail("train-router: --ranks must be between 1 and --batch (%d)", c.batch);
    const dist::RankEnv env = dist::rank_from_env();
    if (env.world > 1)
        fail("train-router: started as rank %d of %d (%s): training across processes or hosts needs a network "
             "communicator (NCCL), which this build does not have; on one host use --ranks N (one thread per GPU)",
             env.rank, env.world, env.source.c_str());
    if (c.ranks > 1) dist::disable_nvlink_multicast();
    const train::TrainConfig config = train::parse_train_config(c.config);
    // The warm start's head scores, read before the model and data (a bad file fails at once).
    const AttentionSpec fit_spec = c.fit_static.empty() ? AttentionSpec{} : AttentionSpec::parse("static:" + c.fit_static, c.fit_msr);
    const bool fit_by_category = c.fit_msr_robust >= 0;
    if (fit_by_category && c.fit_static.empty()) fail("train-router: --fit-msr-robust needs --fit-static");
    const AttentionSpec fit_spec_robust =
        fit_by_category ? AttentionSpec::parse("static:" + c.fit_static, c.fit_msr_robust) : AttentionSpec{};
    if (c.checkpoint_every > 0 && c.checkpoint_dir.empty() && c.resume.empty())
        fail("train-router: --checkpoint-every needs --checkpoint-dir");
    const auto cpu = make_cpu_backend(c.threads);  // sets the OpenMP threads (BLAS single-threaded)
    // Training runs in fp32 on every backend (the router's decisions and the gradients through 30
    // frozen layers must not depend on bf16 rounding; SmolLM2's fp32 weights are 0.5 GB).
    BackendOptions bo;
    bo.backend = c.backend;
    bo.precision = c.backend == "cpu" ? "auto" : "f32";
    auto model = Model::load(c.model);
    std::unique_ptr<Backend> gpu;
    if (c.backend != "cpu") gpu = bo.make(c.threads, *model);
    Backend& be = gpu ? *gpu : *cpu;
    const Engine engine(*model, be);
    std::fprintf(stderr, "train-router: backend %s\n", be.name());
    const ModelConfig& mc = model->config;
    const Tokenizer& tok = model->tok();
    train::DataReport rep;
    const std::vector<train::TrainSample> data = train::read_train_data(
        c.data,
        [&](const train::TextSample& s, std::vector<int32_t>& p, std::vector<int32_t>& a) { train::render_sample(tok, s, p, a); },
        c.max_seq, c.skip_bad, &rep);
    for (const std::string& p : rep.problems) std::fprintf(stderr, "train-router: skipped %s\n", p.c_str());
    int64_t tokens = 0;
    int per_cat[train::kCategories] = {0, 0};
    for (const train::TrainSample& s : data) {
        tokens += int64_t(s.tokens.size());
        per_cat[s.category]++;
    }
    std::fprintf(stderr, "train-router: %zu samples (%d sensitive, %d robust, %lld tokens), %lld skipped\n", data.size(),
                 per_cat[0], per_cat[1], (long long)tokens, (long long)rep.skipped);

    train::TrainerOptions o;
    o.step.config = config;
    o.step.win.sink = c.sink;
    o.step.win.local = c.local;
    o.step.xa.block = c.xa_block;
    o.steps = c.steps;
    o.batch = c.batch;
    o.lr = c.lr;
    o.lambda_lr = c.lambda_lr;
    o.lambda_init = c.lambda_init;
    o.target[train::kSensitive] = c.target_sensitive;
    o.target[train::kRobust] = c.target_robust;
    o.seed = c.seed;
    o.gumbel = c.gumbel;
    o.tau_start = c.tau_start;
    o.tau_end = c.tau_end;
    if (c.gumbel && !(c.tau_start > 0 && c.tau_end > 0)) fail("train-router: --tau-start and --tau-end must be > 0");
    if (c.variant != "softmax" && c.variant != "sigmoid")
        fail("train-router: --variant must be softmax or sigmoid, not '%s'", c.variant.c_str());

    train::TrainState st;
    if (!c.resume.empty()) {
        st = train::load_checkpoint(c.resume, mc.n_layer, mc.head_dim, data.size());
        if (st.schedule_steps != c.steps)
            std::fprintf(stderr,
                         "train-router: warning: the checkpoint's run had --steps %lld, this one %lld: the learning-rate "
                         "schedule changes (not a bit-exact continuation)\n",
                         (long long)st.schedule_steps, (long long)c.steps);
        std::fprintf(stderr, "train-router: resumed from %s at step %lld\n", c.resume.c_str(), (long long)st.step);
        if (c.standardize > 0 || !c.fit_static.empty() || !c.init.empty())
            std::fprintf(stderr, "train-router: warning: --init, --standardize and --fit-static make a fresh run's routers; "
                                 "with --resume the checkpoint's are used\n");
    } else {
        std::vector<RouterLayer> init;
        if (!c.init.empty()) {
            const Router r = Router::load(c.init, mc.n_layer, mc.head_dim);
            for (int l = 0; l < mc.n_layer; ++l) init.push_back(r.layer(l));
        } else {
            init = train::router_init(mc.n_layer, mc.head_dim, c.seed, c.variant == "sigmoid" ? 1 : 2);
        }
        // Data-dependent init: the routers' inputs over some samples (under the warm start's plan
        // when there is one), standardised into fe0, then the fit to that plan.
        auto static_plan = [&](const AttentionSpec& spec) {
            std::vector<std::vector<uint8_t>> p;
            for (int l = 0; l < mc.n_layer; ++l) {
                std::vector<uint8_t> f;
                for (HeadMode m : choose_modes(spec, l, mc.n_kv_head, mc.n_layer, nullptr, 0, 0))
                    f.push_back(m == spec.full_mode ? 1 : 0);
                p.push_back(std::move(f));
            }
            return p;
        };
        std::vector<std::vector<uint8_t>> plan, plan_robust;
        if (!c.fit_static.empty()) plan = static_plan(fit_spec);
        if (fit_by_category) plan_robust = static_plan(fit_spec_robust);
        const int n = std::min<int>(std::max(c.standardize, plan.empty() ? 0 : c.fit_samples), int(data.size()));
        if (n > 0) {
            const auto t0 = std::chrono::steady_clock::now();
            auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
            std::vector<int> cats;
            // Each sample is a whole training forward: minutes on a CPU at 4K, so say how far it is
            // (every sample on a terminal, every tenth of them in a log).
            const bool tty = stderr_is_tty();
            auto on_sample = [&](int done, int total) {
                if (tty) std::fprintf(stderr, "\rtrain-router: router inputs %d/%d samples, %.0f s   ", done, total, secs());
                else if (done == total || done % std::max(1, total / 10) == 0)
                    std::fprintf(stderr, "train-router: router inputs %d/%d samples, %.0f s\n", done, total, secs());
                if (tty && done == total) std::fprintf(stderr, "\n");
            };
            const auto inputs = train::collect_router_inputs(engine, data, n, o.step, init, plan.empty() ? nullptr : &plan,
                                                             fit_by_category ? &plan_robust : nullptr, &cats, on_sample);
            if (c.standardize > 0) {
                const std::vector<double> norm = train::standardize_routers(inputs, init);
                double lo_n = norm.front(), hi_n = norm.front();
                for (double v : norm) lo_n = std::min(lo_n, v), hi_n = std::max(hi_n, v);
                std::fprintf(stderr,
                             "train-router: standardised the routers' input over %d samples (mean |x| per layer "
                             "%.3g-%.3g), %.1f s\n",
                             n, lo_n, hi_n, secs());
            }
            // --fit-temp: targets graded by the heads' rank (nested plans) instead of P(FA) = --fit-p.
            auto fit = [&](const std::vector<const std::vector<std::vector<uint8_t>>*>& plans, const std::vector<int>& of) {
                if (c.fit_temp <= 0) return train::fit_routers_to_plans(inputs, plans, of, c.fit_p, c.fit_iters, 3e-3, init);
                std::vector<std::vector<std::vector<float>>> t;
                for (const auto* p : plans) t.push_back(train::graded_static_targets(fit_spec.static_scores, *p, c.fit_temp));
                std::vector<const std::vector<std::vector<float>>*> tp;
                for (const auto& x : t) tp.push_back(&x);
                return train::fit_routers_to_targets(inputs, tp, of, c.fit_iters, 3e-3, init);
            };
            const std::string p_text = c.fit_temp > 0 ? strprintf("targets graded by rank (temperature %g)", c.fit_temp)
                                                      : strprintf("P(FA) %g / %g", c.fit_p, 1 - c.fit_p);
            if (fit_by_category) {
                // Sensitive samples to the plan at --fit-msr, robust ones to the plan at --fit-msr-robust.
                const train::PlanFit f = fit({&plan, &plan_robust}, cats);
                if (!c.fit_log.empty()) write_fit_log(c.fit_log, f, {"sensitive", "robust"});
                int n_rob = 0;
                for (int k : cats) n_rob += k == train::kRobust;
                std::fprintf(stderr,
                             "train-router: fitted the routers to static:%s at Ω_MSR %g (sensitive, %d samples) and %g "
                             "(robust, %d samples), %s: decisions agree on %.1f %% / %.1f %% of heads, %.1f s\n",
                             c.fit_static.c_str(), c.fit_msr, n - n_rob, c.fit_msr_robust, n_rob, p_text.c_str(),
                             100 * f.plan_agreement[0], 100 * f.plan_agreement[1], secs());
            } else if (!plan.empty()) {
                const train::PlanFit f = fit({&plan}, std::vector<int>(size_t(n), 0));
                if (!c.fit_log.empty()) write_fit_log(c.fit_log, f, {"all"});
                std::fprintf(stderr,
                             "train-router: fitted the routers to static:%s at Ω_MSR %g (%s) over %d samples: "
                             "decisions agree on %.1f %% of heads, %.1f s\n",
                             c.fit_static.c_str(), c.fit_msr, p_text.c_str(), n, 100 * f.agreement, secs());
            }
        }
        st = train::init_state(std::move(init), o, data.size());
        st.standardize = c.standardize > 0 ? n : 0;
        const std::string how = c.fit_temp > 0 ? strprintf("rank temperature %g", c.fit_temp) : strprintf("P(FA) %g", c.fit_p);
        if (fit_by_category)
            st.fit = strprintf("static:%s --msr %g (sensitive) / %g (robust), %s, %d samples",
                               std::filesystem::path(c.fit_static).filename().c_str(), c.fit_msr, c.fit_msr_robust,
                               how.c_str(), n);
        else if (!plan.empty())
            st.fit = strprintf("static:%s --msr %g, %s, %d samples",
                               std::filesystem::path(c.fit_static).filename().c_str(), c.fit_msr, how.c_str(), n);
    }
    // Data parallel on one host: ranks 1..N-1 in threads, each on its own backend (cuda:r, or a CPU
    // backend), the same state and options; rank 0 (this thread) logs and checkpoints.
    dist::LocalGroup group(c.ranks);
    std::vector<std::unique_ptr<Backend>> rank_backends;
    for (int r = 1; r < c.ranks; ++r) {
        BackendOptions rb = bo;
        if (c.backend != "cpu") rb.backend = "cuda:" + std::to_string(r);
        rank_backends.push_back(c.backend == "cpu" ? make_cpu_backend(std::max(1, c.threads / c.ranks)) : rb.make(c.threads, *model));
    }
    auto comm0 = group.rank(0);
    if (c.ranks > 1) {
        o.comm = comm0.get();
        std::fprintf(stderr, "train-router: %d ranks on %s%s (batch %d: %d-%d samples per rank)\n", c.ranks, be.name(),
                     c.backend == "cpu" ? "" : " devices 0..N-1", c.batch, c.batch / c.ranks, (c.batch + c.ranks - 1) / c.ranks);
    }
    // Each rank's copy of the state is made here, before rank 0 starts changing its own.
    std::vector<train::TrainState> rank_states(size_t(c.ranks - 1), st);
    std::vector<std::thread> rank_threads;
    for (int r = 1; r < c.ranks; ++r)
        rank_threads.emplace_back([&, r] {
            try {
                auto comm = group.rank(r);
                const Engine eng(*model, *rank_backends[size_t(r - 1)]);
                train::TrainState& rs = rank_states[size_t(r - 1)];
                train::TrainerOptions ro = o;
                ro.comm = comm.get();
                train::LoopOptions rl;
                rl.stop_at = c.stop_at;
                train::train_loop(eng, data, ro, rl, rs);
            } catch (const std::exception& ex) {  // the other ranks would wait for it forever
                std::fprintf(stderr, "elastic: train-router: rank %d: %s\n", r, ex.what());
                std::_Exit(1);
            }
        });
    train::LoopOptions lo;
    lo.stop_at = c.stop_at;
    lo.checkpoint_dir = !c.checkpoint_dir.empty() ? c.checkpoint_dir : c.resume;
    lo.checkpoint_every = c.checkpoint_every;
    lo.log_path = c.log;
    lo.progress = stderr_is_tty();
    train::train_loop(engine, data, o, lo, st);
    for (auto& t : rank_threads) t.join();
    const double* omega = st.last_omega;
    train::write_trained_router(
        c.out, st.routers,
        {{"format", "elastic-router"},
         {"model", std::filesystem::path(c.model).filename().string()},
         {"model_name", mc.name},
         {"config", c.config},
         {"backend", be.name()},
         {"data", std::filesystem::path(c.data).filename().string()},
         {"data_fnv1a64", train::file_hash(c.data)},
         {"steps", std::to_string(st.step)},
         {"batch", std::to_string(c.batch)},
         {"ranks", std::to_string(c.ranks)},
         {"seed", std::to_string(c.seed)},
         {"variant", st.routers.front().use_softmax() ? "softmax" : "sigmoid"},
         {"standardize", std::to_string(st.standardize)},
         {"fit", st.fit.empty() ? "no" : st.fit},
         {"gumbel", c.gumbel ? strprintf("tau %g -> %g over 60 %% of steps", c.tau_start, c.tau_end) : "no"},
         {"omega_sensitive", omega[0] >= 0 ? strprintf("%.6f", omega[0]) : "n/a"},
         {"omega_robust", omega[1] >= 0 ? strprintf("%.6f", omega[1]) : "n/a"},
         {"lambda1", strprintf("%.6g,%.6g", st.lambda1[0], st.lambda1[1])},
         {"lambda2", strprintf("%.6g,%.6g", st.lambda2[0], st.lambda2[1])}});
    std::fprintf(stderr, "train-router: %lld steps; wrote %s (last Ω: sensitive %s, robust %s)\n", (long long)st.step,
                 c.out.c_str(), omega[0] >= 0 ? strprintf("%.3f", omega[0]).c_str() : "n/a",
                 omega[1] >= 0 ? strprintf("%.3f", omega[1]).c_str() : "n/a");
}

struct ExportOptions {
    std::string ckpt, model, data, out, dtype = "f32";
};

// A router file written by `train-router -o` (f32) as a released one: the same weights in the
// requested dtype, with its metadata as written (the model must be the one it names).
void export_router_file(const ExportOptions& e, DType dt) {
    std::map<std::string, std::string> meta;
    try {
        meta = SafetensorsFile::open(e.ckpt)->metadata();
    } catch (const std::exception& ex) {
        fail("train-router export: %s", ex.what());
    }
    if (meta.count("format") == 0 || meta["format"] != "elastic-router")
        fail("train-router export: %s is not a router file of train-router (no format elastic-router in its metadata)",
             e.ckpt.c_str());
    auto model = Model::load(e.model);
    const std::string model_file = std::filesystem::path(e.model).filename().string();
    if (meta.count("model") && meta["model"] != model_file)
        fail("train-router export: %s was trained for %s, not %s", e.ckpt.c_str(), meta["model"].c_str(), model_file.c_str());
    const Router r = Router::load(e.ckpt, model->config.n_layer, model->config.head_dim);
    std::vector<RouterLayer> layers;
    for (int l = 0; l < model->config.n_layer; ++l) layers.push_back(r.layer(l));
    if (!e.data.empty()) {
        meta["data"] = std::filesystem::path(e.data).filename().string();
        meta["data_fnv1a64"] = train::file_hash(e.data);
    }
    meta["exported_from"] = std::filesystem::path(e.ckpt).filename().string();
    const std::vector<std::pair<std::string, std::string>> pairs(meta.begin(), meta.end());
    train::write_trained_router(e.out, layers, pairs, dt);
    std::printf("train-router export: %s (step %s, %s) -> %s (%s)\n", e.ckpt.c_str(),
                meta.count("steps") ? meta["steps"].c_str() : "?", meta.count("config") ? meta["config"].c_str() : "?",
                e.out.c_str(), e.dtype.c_str());
}

// A checkpoint directory as a released router file: its router.safetensors with the run's metadata
// from state.json (and the model's and data's names, the data's hash, when given), in f32 or bf16.
// For runs stopped at a checkpoint (a device session that ran out of time). A router file (.safetensors)
// instead of a directory: export_router_file.
void export_router(const ExportOptions& e) {
    if (e.dtype != "f32" && e.dtype != "bf16") fail("train-router export: --dtype must be f32 or bf16");
    const DType dt = e.dtype == "f32" ? DType::F32 : DType::BF16;
    if (std::filesystem::is_regular_file(e.ckpt)) return export_router_file(e, dt);
    const std::string state_path = e.ckpt + "/state.json";
    std::ifstream f(state_path);
    if (!f) fail("train-router export: %s not found (not a checkpoint directory?)", state_path.c_str());
    nlohmann::json st;
    try {
        st = nlohmann::json::parse(f);
    } catch (const std::exception& ex) {
        fail("train-router export: %s: %s", state_path.c_str(), ex.what());
    }
    auto model = Model::load(e.model);
    const Router r = Router::load(e.ckpt + "/router.safetensors", model->config.n_layer, model->config.head_dim);
    std::vector<RouterLayer> layers;
    for (int l = 0; l < model->config.n_layer; ++l) layers.push_back(r.layer(l));
    auto num = [&](const char* key, int i) -> std::string {
        if (!st.contains(key) || !st[key].is_array() || int(st[key].size()) <= i || !st[key][size_t(i)].is_number())
            return "n/a";
        const double v = st[key][size_t(i)].get<double>();
        return v >= 0 || std::string(key) != "last_omega" ? strprintf("%.6g", v) : "n/a";
    };
    std::vector<std::pair<std::string, std::string>> meta = {
        {"format", "elastic-router"},
        {"model", std::filesystem::path(e.model).filename().string()},
        {"model_name", model->config.name},
        {"config", st.value("config", std::string("?"))},
        {"steps", std::to_string(st.value("step", int64_t(0)))},
        {"schedule_steps", std::to_string(st.value("steps", int64_t(0)))},
        {"batch", std::to_string(st.value("batch", 0))},
        {"seed", std::to_string(st.value("seed", uint64_t(0)))},
        {"standardize", std::to_string(st.value("standardize", 0))},
        {"fit", st.value("fit", std::string()).empty() ? "no" : st.value("fit", std::string())},
        {"omega_sensitive", num("last_omega", 0)},
        {"omega_robust", num("last_omega", 1)},
        {"lambda1", num("lambda1", 0) + "," + num("lambda1", 1)},
        {"lambda2", num("lambda2", 0) + "," + num("lambda2", 1)},
        {"exported_from_checkpoint", "1"}};
    if (!e.data.empty()) {
        meta.push_back({"data", std::filesystem::path(e.data).filename().string()});
        meta.push_back({"data_fnv1a64", train::file_hash(e.data)});
    }
    train::write_trained_router(e.out, layers, meta, dt);
    std::printf("train-router export: %s (step %s of %s, %s) -> %s (%s)\n", e.ckpt.c_str(), meta[4].second.c_str(),
                meta[5].second.c_str(), meta[3].second.c_str(), e.out.c_str(), e.dtype.c_str());
}

}  // namespace

void add_train_router(CLI::App& app) {
    auto o = std::make_shared<TrainCliOptions>();
    CLI::App* c = app.add_subcommand("train-router", "Train the routers of a frozen model");
    // -m, --data, -o are checked by hand: `train-router plot` needs none of them.
    c->add_option("-m,--model", o->model, "GGUF file or HF directory (required)");
    c->add_option("--data", o->data, "Training data, JSON lines {prompt, answer, task, category} (required)");
    c->add_option("--config", o->config, "fa-ssa | fa-xa | xa-ssa")->capture_default_str();
    c->add_option("--steps", o->steps, "Total optimizer steps")->capture_default_str();
    c->add_option("--batch", o->batch, "Samples per step")->capture_default_str();
    c->add_option("--max-seq", o->max_seq, "Longest sample in tokens (longer lines are errors)")->capture_default_str();
    c->add_option("-o,--out", o->out, "Output router .safetensors (required)");
    c->add_option("--resume", o->resume, "Continue from a checkpoint directory");
    c->add_option("--checkpoint-dir", o->checkpoint_dir, "Write checkpoints here (default: the --resume directory)");
    c->add_option("--checkpoint-every", o->checkpoint_every, "Checkpoint every K steps (and at the end)");
    c->add_option("--stop-at", o->stop_at, "Stop after this step (the schedule still spans --steps)");
    c->add_option("--seed", o->seed, "Seed of the router init and the data order")->capture_default_str();
    c->add_option("--init", o->init, "Start from these routers instead of a random init");
    c->add_option("--standardize", o->standardize,
                  "Data-dependent init: fold the mean/std of the routers' pooled input over N samples into their "
                  "first layer (0: off)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1 << 20));
    c->add_option("--fit-static", o->fit_static,
                  "Warm start: fit the fresh routers to the static plan of this head-score file (as --attention "
                  "static:FILE) at --fit-msr, on the inputs of --fit-samples samples");
    c->add_option("--fit-msr", o->fit_msr, "--fit-static: Ω_MSR of the static plan")->capture_default_str()->check(CLI::Range(0.0, 1.0));
    c->add_option("--fit-p", o->fit_p, "--fit-static: P(FA) the fit aims at for the plan's FA heads (1 − it for the others)")
        ->capture_default_str()
        ->check(CLI::Range(0.5, 1.0));
    c->add_option("--fit-msr-robust", o->fit_msr_robust,
                  "--fit-static: fit robust samples to the plan at this Ω_MSR instead (sensitive ones stay at "
                  "--fit-msr): the routers start adaptive")
        ->check(CLI::Range(0.0, 1.0));
    c->add_option("--fit-temp", o->fit_temp,
                  "--fit-static: graded targets, P(FA) = sigmoid((k - 1/2 - rank) / (T * heads)) for a plan of k FA "
                  "heads, so that the fitted routers keep the best-ranked heads at every Ω (0: P(FA) = --fit-p)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 10.0));
    c->add_option("--fit-iters", o->fit_iters, "--fit-static: full-batch Adam iterations of the fit")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    c->add_option("--fit-log", o->fit_log,
                  "--fit-static: write the fit's curve here, one JSON line per iteration (train-router plot draws it)");
    c->add_option("--fit-samples", o->fit_samples, "--fit-static: samples whose router inputs the fit uses")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    c->add_option("--log", o->log, "Append one JSON line per step to this file");
    c->add_option("--target-sensitive", o->target_sensitive, "Ω_MSR target, sensitive tasks")->capture_default_str();
    c->add_option("--target-robust", o->target_robust, "Ω_MSR target, robust tasks")->capture_default_str();
    c->add_option("--lr", o->lr, "Router peak learning rate")->capture_default_str();
    c->add_option("--lambda-lr", o->lambda_lr, "Lagrange multiplier learning rate")->capture_default_str();
    c->add_option("--lambda-init", o->lambda_init, "Initial λ1, λ2")->capture_default_str();
    c->add_option("--sink", o->sink, "SSA sink tokens")->capture_default_str();
    c->add_option("--local", o->local, "SSA local window")->capture_default_str();
    c->add_option("--xa-block", o->xa_block, "XAttention block size")->capture_default_str();
    c->add_option("--backend", o->backend, "cpu, or cuda / cuda:N (trains in fp32 on the GPU)")->capture_default_str();
    c->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    c->add_option("--ranks,--gpus", o->ranks,
                  "Data-parallel ranks on this host: with --backend cuda one per GPU (cuda:0..N-1); the batch is split, "
                  "gradients summed")
        ->capture_default_str()
        ->check(CLI::Range(1, 1024));
    c->add_flag("--skip-bad", o->skip_bad, "Skip bad data lines (counted) instead of stopping");
    c->add_option("--variant", o->variant, "Router head of a fresh init: softmax (2 logits) or sigmoid (1 logit + LayerNorm over heads)")
        ->capture_default_str();
    c->add_flag("--gumbel", o->gumbel, "Gumbel noise on the router's decisions, temperature annealed --tau-start -> --tau-end over 60 % of the steps");
    c->add_option("--tau-start", o->tau_start, "--gumbel: initial temperature")->capture_default_str();
    c->add_option("--tau-end", o->tau_end, "--gumbel: final temperature")->capture_default_str();
    auto plot = std::make_shared<std::pair<std::string, std::string>>();  // log, image
    CLI::App* p = c->add_subcommand("plot", "Draw a training log: losses, Ω_MSR per category against its target, λ");
    p->add_option("log", plot->first, "The --log (or --fit-log) file of a run (JSON lines)")->required();
    p->add_option("--png", plot->second, "Output image (.png or .svg)")->required();
    p->callback([plot] {
        const std::vector<eval::CurvePanel> panels = eval::training_log_panels(plot->first);
        // A warm start's curve (--fit-log) has an agreement panel; its x is the fit's iteration.
        const bool fit = std::any_of(panels.begin(), panels.end(), [](const auto& p) { return p.ylabel == "agreement"; });
        eval::write_curve_panels(plot->second, panels, (fit ? "router warm start: " : "router training: ") + plot->first,
                                 fit ? "fit iteration" : "step");
        std::printf("training curves: %s\n", plot->second.c_str());
    });
    auto ex = std::make_shared<ExportOptions>();
    CLI::App* x = c->add_subcommand("export", "Write a checkpoint directory, or a router file in another dtype, as a router file with the run's metadata");
    x->add_option("checkpoint", ex->ckpt, "A --checkpoint-dir of train-router, or a router file it wrote (-o)")->required();
    x->add_option("-m,--model", ex->model, "The model it was trained for")->required();
    x->add_option("-o,--out", ex->out, "Output router .safetensors")->required();
    x->add_option("--data", ex->data, "The training data (its name and hash go into the metadata)");
    x->add_option("--dtype", ex->dtype, "f32 | bf16")->capture_default_str();
    x->callback([ex] { export_router(*ex); });
    c->callback([o, p, x] {
        if (p->parsed() || x->parsed()) return;
        for (const auto& [value, flag] : {std::pair<const std::string*, const char*>{&o->model, "-m"}, {&o->data, "--data"},
                                          {&o->out, "-o"}})
            if (value->empty()) fail("train-router: %s is required", flag);
        train_router(*o);
    });
}

}  // namespace elastic::cli
