// `elastic bench tp`: the tensor-parallel forward (src/dist/tensor-parallel.h) of one request on N
// ranks, as threads of this process over the in-process communicator, with each layer's KV heads
// placed by attended pairs (balanced) and/or in contiguous blocks. For each placement it prints, per
// rank, the KV heads it held, the attended (q, k) pairs of its prefill attention, the CPU time its
// thread spent in attention (prefill and decode) and its KV cache; then the imbalance: the largest
// rank over the mean of the totals, and the sum over layers of each layer's slowest rank over the
// mean (a layer waits for its slowest rank at the all-reduce). All ranks share this machine's cores,
// so this measures how the work is split, not the speed N GPUs would reach.
//
//   elastic bench tp -m SmolLM2-135M-Instruct.Q4_1.gguf --router routers/smollm2-135m-fa-ssa.safetensors
//       --ranks 3 --placement both -p 4096 -n 16 --local 512
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "attention-options.h"
#include "commands.h"
#include "core/error.h"
#include "dist/tensor-parallel.h"
#include "formats/quants.h"
#include "model/model.h"

namespace elastic::cli {

namespace {

struct TpBenchOptions {
    std::string model, text_file = "/usr/share/common-licenses/GPL-3", placement = "both";
    int ranks = 2, n_gen = 16, threads_per_rank = 1;
    int64_t length = 4096;
    bool check = false, json = false;
    AttentionOptions attn;
};

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Imbalance {
    double of_totals = 0;  // max over ranks of the total / mean total
    double per_layer = 0;  // Σ over layers of the slowest rank / Σ of the mean
};

// x[r][l]: rank r's amount in layer l.
Imbalance imbalance(const std::vector<std::vector<double>>& x) {
    const size_t N = x.size(), L = x.empty() ? 0 : x[0].size();
    double total = 0, max_total = 0, slowest = 0;
    for (size_t r = 0; r < N; ++r) {
        double t = 0;
        for (double v : x[r]) t += v;
        total += t;
        max_total = std::max(max_total, t);
    }
    for (size_t l = 0; l < L; ++l) {
        double m = 0;
        for (size_t r = 0; r < N; ++r) m = std::max(m, x[r][l]);
        slowest += m;
    }
    const double mean = total / double(N);
    if (mean <= 0) return {1.0, 1.0};
    return {max_total / mean, slowest / mean};
}

void bench_tp(const TpBenchOptions& o) {
    if (o.ranks < 1) fail("bench tp: --ranks must be >= 1 (got %d)", o.ranks);
    if (o.placement != "both" && o.placement != "balanced" && o.placement != "contiguous")
        fail("bench tp: --placement must be balanced, contiguous or both (got '%s')", o.placement.c_str());
    if (o.length < 1) fail("bench tp: -p must be >= 1 (got %lld)", (long long)o.length);
    if (o.n_gen < 0) fail("bench tp: -n must be >= 0 (got %d)", o.n_gen);
    if (o.threads_per_rank < 1) fail("bench tp: --threads-per-rank must be >= 1 (got %d)", o.threads_per_rank);
    auto model = Model::load(o.model);
    const ModelConfig& c = model->config;
    if (o.length + o.n_gen > c.max_ctx)
        fail("bench tp: %lld + %d tokens exceed the model's context of %d", (long long)o.length, o.n_gen, c.max_ctx);
    std::unique_ptr<Router> router;
    const AttentionSpec spec = o.attn.resolve(*model, router);
    const std::vector<int32_t> base = model->tok().encode(read_file(o.text_file), false);
    if (base.empty()) fail("bench tp: %s has no tokens", o.text_file.c_str());
    std::vector<int32_t> ids(static_cast<size_t>(o.length));
    for (int64_t i = 0; i < o.length; ++i) ids[size_t(i)] = base[size_t(i) % base.size()];
    std::vector<dist::Placement> placements;
    if (o.placement != "contiguous") placements.push_back(dist::Placement::Balanced);
    if (o.placement != "balanced") placements.push_back(dist::Placement::Contiguous);

    // The one-process reference (--check): logits of the prefill and of each greedy step.
    std::vector<std::vector<float>> ref;
    if (o.check) {
        auto be = make_cpu_backend(0);
        Engine engine(*model, *be, router.get());
        Session s(engine, o.length + o.n_gen, spec);
        s.forward(ids.data(), o.length);
        ref.push_back(s.last_logits());
        for (int i = 0; i < o.n_gen; ++i) {
            const int32_t next = int32_t(std::max_element(ref.back().begin(), ref.back().end()) - ref.back().begin());
            s.forward(&next, 1);
            ref.push_back(s.last_logits());
        }
    }

    nlohmann::json results = nlohmann::json::array();
    for (dist::Placement p : placements) {
        dist::LocalTensorParallel tp(*model, router.get(), o.ranks, o.length + o.n_gen, spec, p, o.threads_per_rank);
        if (!o.json && p == placements.front())  // after the first group is made: a mistake prints only its error
            std::printf("\nmodel %s: %d layers, %d query / %d KV heads; attention %s; %lld prompt tokens, %d decoded; %d ranks "
                        "(threads of this process, %d OpenMP thread%s each)\n",
                        c.name.c_str(), c.n_layer, c.n_head, c.n_kv_head, spec.name.c_str(), (long long)o.length, o.n_gen,
                        o.ranks, o.threads_per_rank, o.threads_per_rank == 1 ? "" : "s");
        const double t0 = now_s();
        tp.forward(ids.data(), o.length);
        const double t_prefill = now_s() - t0;
        double max_err = 0;
        bool same_tokens = true;
        auto compare = [&](size_t step) {
            if (!o.check) return;
            const std::vector<float>& got = tp.last_logits();
            double mref = 0, err = 0;
            for (size_t i = 0; i < got.size(); ++i) {
                mref = std::max(mref, double(std::fabs(ref[step][i])));
                err = std::max(err, double(std::fabs(got[i] - ref[step][i])));
            }
            max_err = std::max(max_err, err / std::max(mref, 1e-30));
        };
        compare(0);
        const double t1 = now_s();
        for (int i = 0; i < o.n_gen; ++i) {
            const std::vector<float>& l = tp.last_logits();
            const int32_t next = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
            if (o.check) {
                const std::vector<float>& r = ref[size_t(i)];
                same_tokens &= next == int32_t(std::max_element(r.begin(), r.end()) - r.begin());
            }
            tp.forward(&next, 1);
            compare(size_t(i) + 1);
        }
        const double t_decode = now_s() - t1;

        std::vector<std::vector<double>> pairs, seconds;
        nlohmann::json ranks = nlohmann::json::array();
        if (!o.json)
            std::printf("\n%s placement: prefill %.2f s, %d decode steps %.2f s (wall, all ranks on this machine)\n\n"
                        "| rank | KV heads (all layers) | attended pairs (prefill) | share | prefill attention s (thread CPU) "
                        "| decode attention s | KV cache MiB |\n|---:|---:|---:|---:|---:|---:|---:|\n",
                        dist::placement_name(p), t_prefill, o.n_gen, t_decode);
        double all_pairs = 0;
        for (int r = 0; r < o.ranks; ++r)
            for (double x : tp.rank(r).load().pairs) all_pairs += x;
        for (int r = 0; r < o.ranks; ++r) {
            const dist::TpSession& s = tp.rank(r);
            const dist::TpSession::Load& ld = s.load();
            int heads = 0;
            for (const std::vector<int>& layer : s.rank_of()) heads += int(std::count(layer.begin(), layer.end(), r));
            double rp = 0, rs = 0;
            for (double x : ld.pairs) rp += x;
            for (double x : ld.prefill_seconds) rs += x;
            pairs.push_back(ld.pairs);
            seconds.push_back(ld.prefill_seconds);
            if (o.json)
                ranks.push_back({{"rank", r}, {"kv_heads", heads}, {"pairs", rp}, {"prefill_attention_s", rs},
                                 {"decode_attention_s", ld.decode_seconds}, {"kv_bytes", s.kv_bytes()}});
            else
                std::printf("| %d | %d | %.4g | %.3f | %.3f | %.3f | %.2f |\n", r, heads, rp, all_pairs > 0 ? rp / all_pairs : 0.0,
                            rs, ld.decode_seconds, double(s.kv_bytes()) / (1 << 20));
        }
        const Imbalance ip = imbalance(pairs), is = imbalance(seconds);
        const AttentionStats& st = tp.rank(0).stats();
        if (o.json) {
            nlohmann::json j{{"placement", dist::placement_name(p)},
                             {"prefill_s", t_prefill},
                             {"decode_s", t_decode},
                             {"omega_msr", st.omega_msr},
                             {"pairs_max_over_mean", ip.of_totals},
                             {"pairs_layer_slowest_over_mean", ip.per_layer},
                             {"attention_s_max_over_mean", is.of_totals},
                             {"attention_s_layer_slowest_over_mean", is.per_layer},
                             {"ranks", ranks}};
            if (o.check) j["check"] = {{"max_rel_logit_err", max_err}, {"same_greedy_tokens", same_tokens}};
            results.push_back(j);
        } else {
            std::printf("\nimbalance (max rank / mean; Σ over layers of the slowest rank / Σ of the mean): attended pairs "
                        "%.3f, %.3f; prefill attention time %.3f, %.3f   (Ω_MSR %.3f)\n",
                        ip.of_totals, ip.per_layer, is.of_totals, is.per_layer, st.omega_msr);
            if (o.check)
                std::printf("check against one process: max |Δ logit| / max |logit| = %.2e over %d steps; greedy tokens %s%s\n",
                            max_err, o.n_gen + 1, same_tokens ? "identical" : "DIFFER",
                            cpu_kernels() == CpuKernels::F32 || o.n_gen == 0
                                ? ""
                                : "\n  (decode quantises activations to int8 for quantised weights, so rounding-level differences "
                                  "can move them by a step of that grid; ELASTIC_CPU_KERNELS=f32 compares the summation order alone)");
        }
    }
    if (o.json) {
        std::printf("%s\n", nlohmann::json{{"model", o.model},
                                           {"attention", spec.name},
                                           {"prompt_tokens", o.length},
                                           {"gen_tokens", o.n_gen},
                                           {"ranks", o.ranks},
                                           {"threads_per_rank", o.threads_per_rank},
                                           {"results", results}}
                                .dump()
                                .c_str());
    } else {
        std::printf("\nNote: the ranks are threads sharing this machine's CPU cores (in-process communicator): this "
                    "measures how the attention work is split between ranks, not multi-GPU speed.\n");
    }
}

}  // namespace

void add_bench_tp(CLI::App* bench) {
    auto o = std::make_shared<TpBenchOptions>();
    CLI::App* c = bench->add_subcommand(
        "tp", "Tensor-parallel forward on N in-process ranks: per-rank attended pairs and attention time, balanced vs contiguous head placement");
    c->add_option("-m,--model", o->model, "GGUF file or HF directory")->required();
    c->add_option("--ranks", o->ranks, "Ranks (threads of this process)")->capture_default_str();
    c->add_option("--placement", o->placement, "balanced | contiguous | both")->capture_default_str();
    c->add_option("-p,--prompt-length", o->length, "Prompt tokens")->capture_default_str();
    c->add_option("-n,--n-gen", o->n_gen, "Greedy decode steps after the prompt")->capture_default_str();
    c->add_option("--threads-per-rank", o->threads_per_rank, "OpenMP threads of each rank")->capture_default_str();
    c->add_option("--text", o->text_file, "Text whose tokens fill the prompt")->capture_default_str();
    c->add_flag("--check", o->check, "Also run one process and compare logits and greedy tokens");
    c->add_flag("--json", o->json, "Print one JSON object");
    o->attn.add_to(c);
    c->footer("The ranks share this machine's cores: the table shows how the work is split, not multi-GPU speed.");
    c->callback([o] { bench_tp(*o); });
}

}  // namespace elastic::cli
