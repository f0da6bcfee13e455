// `elastic bench attention`: one layer of hybrid prefill attention on random inputs through the
// Backend interface (--backend cpu | cuda[:N]), timed against all-FA on the same inputs in the same
// run (reps interleaved, so drifting machine load hits both alike), for every --seq × --msr. Prints
// median time and spread, GFLOP/s (TFLOP/s on a GPU) counting only attended (q, k) pairs (4·d FLOPs
// each: QK and PV), density (attended / causal pairs), the speed-up over full and the ideal
// speed-up 1/density, and with --check the max relative error against the naive fp64 reference.
// --decode-ctx N: also one decode token at context N, all-FA and the config's lean cache: device
// time per call (events around 50 back-to-back calls rotating over cache copies past 256 MiB, so
// the L2 holds none of the next call's K/V), KV bytes read, GB/s, and one call's host-side time.
//
// Ω_MSR is realised per KV head: the FIRST round(Ω·Hkv) KV heads run the sparse mode of the config
// (`fa-ssa`: heads 0..n-1 SSA, the rest FA; `fa-xa`: 0..n-1 XA, rest FA; `xa-ssa`: 0..n-1 SSA,
// rest XA). `full`, `ssa`, `xa` put every head in one mode. With Hkv = 3 only Ω in {0, 1/3, 2/3, 1}
// exists; the actual Ω is printed.
//
//   elastic bench attention --seq 8192 --q-heads 9 --kv-heads 3 --head-dim 64 --sink 64 --local 512 --config fa-ssa
//   elastic bench attention --backend cuda --precision bf16 --seq 32768,131072 --msr 0,0.75 --decode-ctx 131072
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "attention/elastic.h"
#ifdef ELASTIC_HAVE_CUDA
#include "cuda/attention.h"
#endif
#include "backend-options.h"
#include "commands.h"
#include "core/error.h"
#include "cpu/attention.h"
#include "model/backend.h"

namespace elastic::cli {

namespace {

struct AttnBenchOptions {
    std::string config = "fa-ssa", seqs = "8192", msrs = "0.75", decode_ctx;
    BackendOptions backend;
    int64_t sink = 128, local = 2048, xa_block = 128;
    int q_heads = 32, kv_heads = 8, head_dim = 128, reps = 3, threads = 0;
    double xa_threshold = 0.9;
    bool check = false, json = false;
};

struct Stat {
    double median, min, max;
};
Stat stats(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return {n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v.front(), v.back()};
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

LayerPlan make_plan(const std::string& config, double msr, int n_kv, int* n_sparse) {
    HeadMode dense = HeadMode::FA, sparse = HeadMode::SSA;
    double omega = msr;
    if (config == "full") omega = 0.0;
    else if (config == "ssa") omega = 1.0;
    else if (config == "xa") omega = 1.0, sparse = HeadMode::XA;
    else if (config == "fa-ssa") {}
    else if (config == "fa-xa") sparse = HeadMode::XA;
    else if (config == "xa-ssa") dense = HeadMode::XA;
    else fail("bench attention: unknown --config '%s' (full, ssa, xa, fa-ssa, fa-xa, xa-ssa)", config.c_str());
    if (omega < 0.0 || omega > 1.0) fail("bench attention: --msr must be in [0, 1]");
    *n_sparse = int(std::lround(omega * n_kv));
    LayerPlan plan;
    for (int g = 0; g < n_kv; ++g) plan.mode.push_back(g < *n_sparse ? sparse : dense);
    return plan;
}

bool has_xa(const LayerPlan& p) { return std::count(p.mode.begin(), p.mode.end(), HeadMode::XA) > 0; }

std::vector<double> parse_numbers(const std::string& s, const char* what) {
    std::vector<double> v;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        char* end = nullptr;
        const double x = std::strtod(item.c_str(), &end);
        if (item.empty() || *end) fail("bench attention: %s: '%s' is not a number", what, item.c_str());
        v.push_back(x);
    }
    if (v.empty()) fail("bench attention: %s is empty", what);
    return v;
}

// Random fp32 inputs on the backend (rounded to its attention type on upload).
struct Inputs {
    Backend& be;
    Buf q, k, v, out, out_full;
    std::vector<float> hq, hk, hv;
    Inputs(Backend& b, int64_t T, int Hq, int Hkv, int d) : be(b) {
        std::mt19937_64 rng(42);
        std::normal_distribution<float> nd;
        auto randv = [&](size_t n) {
            std::vector<float> x(n);
            for (float& e : x) e = nd(rng);
            return x;
        };
        hq = randv(size_t(T * Hq * d));
        hk = randv(size_t(T * Hkv * d));
        hv = randv(size_t(T * Hkv * d));
        const DType t = be.attn_type();
        q = be.alloc(hq.size(), t);
        k = be.alloc(hk.size(), t);
        v = be.alloc(hv.size(), t);
        out = be.alloc(hq.size(), t);
        out_full = be.alloc(hq.size(), t);
        be.upload(q, hq.data(), hq.size());
        be.upload(k, hk.data(), hk.size());
        be.upload(v, hv.data(), hv.size());
    }
    ~Inputs() {
        for (Buf b : {q, k, v, out, out_full}) be.release(b);
    }
};

// The max relative error of out against the fp64 reference on every row when cheap, else on 64
// sampled rows (first, last, evenly spaced between), each for every query head. The reference
// reads the inputs as the backend holds them (rounded to its attention type).
double check_rows(Backend& be, const Inputs& in, const LayerPlan& plan, int64_t T, int Hq, int Hkv, int d,
                  const StreamingWindow& win, int64_t xa_block, float scale, int64_t* n_rows) {
    std::vector<int64_t> rows;
    if (double(T) * double(T) * Hq * d <= 4e9) {
        for (int64_t i = 0; i < T; ++i) rows.push_back(i);
    } else {
        for (int x = 0; x < 64; ++x) rows.push_back(int64_t(double(T - 1) * x / 63.0));
        rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    }
    std::vector<float> q(in.hq.size()), k(in.hk.size()), v(in.hv.size()), out(in.hq.size()), ref(in.hq.size(), 0.0f);
    be.download(q.data(), in.q, q.size());
    be.download(k.data(), in.k, k.size());
    be.download(v.data(), in.v, v.size());
    be.download(out.data(), in.out, out.size());
    cpu::attn_hybrid_naive_rows(q.data(), k.data(), v.data(), ref.data(), T, Hq, Hkv, d, plan, win, xa_block, scale, rows);
    double mref = 0, merr = 0;
    for (int64_t i : rows)
        for (int64_t x = i * Hq * d; x < (i + 1) * Hq * d; ++x) {
            mref = std::max(mref, double(std::fabs(ref[size_t(x)])));
            const double e = std::fabs(double(out[size_t(x)]) - ref[size_t(x)]);
            merr = std::isnan(e) ? INFINITY : std::max(merr, e);
        }
    *n_rows = int64_t(rows.size());
    return merr / std::max(mref, 1e-30);
}

double pairs_of(const LayerPlan& p, const StreamingWindow& win, int64_t xa_block, int64_t T, int group) {
    double n = 0;
    for (size_t g = 0; g < p.mode.size(); ++g)
        n += double(group) * double(attended_pairs(p.mode[g], win, p.mode[g] == HeadMode::XA ? &p.xa[g] : nullptr, xa_block, T));
    return n;
}

// One decode token at context ctx, timed two ways:
//   - device: mean per call of kDecodeIters back-to-back calls between two device events (on the
//     GPU; the host's launch work overlaps the kernels, as in a decode loop), median of 7 such
//     reps after a warm-up; the calls rotate over enough copies of the cache that together pass
//     256 MiB, so no call finds the previous one's K/V in the L2 (50-60 MB on an H200; a 32K lean
//     cache is 38 MiB) — as in a forward, where the other layers' caches flush it.
//     bench/peers/decode_peer.py times the PyTorch peers the same way.
//   - host: one call from the host's point of view, launch and host work included, up to a
//     sync() (median of 21 calls), so the per-call host cost is not hidden.
// Plus the KV bytes one cache holds (what decode reads).
struct DecodeResult {
    double ms = 0, host_ms = 0;
    size_t bytes = 0;
    int copies = 0;
};
constexpr int kDecodeIters = 50;
DecodeResult time_decode(Backend& be, const LayerPlan& plan, const StreamingWindow& win, int64_t ctx, int Hq, int Hkv, int d,
                         bool gpu) {
    Inputs in(be, ctx, Hkv, Hkv, d);  // k, v [ctx, Hkv, d] (q, out: a single token's rows are carved from them)
    Buf q = be.alloc(size_t(Hq * d), be.attn_type()), out = be.alloc(size_t(Hq * d), be.attn_type());
    std::vector<float> hq(size_t(Hq * d), 0.5f);
    be.upload(q, hq.data(), hq.size());
    std::vector<std::unique_ptr<Backend::LayerCache>> caches;
    do {
        caches.push_back(be.new_layer_cache(plan, win, ctx, Hkv, d));
        be.cache_store_prefill(*caches.back(), in.k, in.v, ctx - 1);
        be.cache_append(*caches.back(), in.k.at((ctx - 1) * Hkv * d), in.v.at((ctx - 1) * Hkv * d), ctx - 1);
    } while (gpu && caches.size() * caches[0]->bytes() < (size_t(256) << 20));
    const float scale = 1.0f / std::sqrt(float(d));
    const size_t nc = caches.size();
    for (size_t i = 0; i < 2 * nc; ++i) be.attn_decode(q, *caches[i % nc], ctx - 1, out, Hq, scale);  // warm-up
    be.sync();
    const int iters = gpu ? kDecodeIters : 3, reps = gpu ? 7 : 3;
    std::vector<double> t, th;
    size_t k = 0;
    for (int r = 0; r < reps; ++r)
        t.push_back(be.timed_ms([&] {
            for (int i = 0; i < iters; ++i) be.attn_decode(q, *caches[k++ % nc], ctx - 1, out, Hq, scale);
        }) / iters);
#ifdef ELASTIC_HAVE_CUDA
    // ELASTIC_DECODE_TRACE=1: the step stamps of the last back-to-back call, then of a lone call.
    const bool trace = gpu && std::getenv("ELASTIC_DECODE_TRACE");
    if (trace) std::printf("context %lld, back to back: %s\n", (long long)ctx, cuda::decode_trace_summary().c_str());
#endif
    for (int r = 0; r < (gpu ? 21 : 3); ++r) {
        be.sync();
        const double t0 = now_s();
        be.attn_decode(q, *caches[k++ % nc], ctx - 1, out, Hq, scale);
        be.sync();
        th.push_back((now_s() - t0) * 1e3);
    }
#ifdef ELASTIC_HAVE_CUDA
    if (trace) std::printf("context %lld, alone: %s\n", (long long)ctx, cuda::decode_trace_summary().c_str());
#endif
    DecodeResult res{stats(t).median, stats(th).median, caches[0]->bytes(), int(nc)};
    caches.clear();
    be.release(q);
    be.release(out);
    return res;
}

void bench_attention(const AttnBenchOptions& o) {
    if (o.reps < 1 || o.q_heads < 1 || o.kv_heads < 1 || o.head_dim < 1 || o.q_heads % o.kv_heads)
        fail("bench attention: need --reps, heads, --head-dim >= 1 and q-heads a multiple of kv-heads");
    if (o.sink < 0 || o.local < 1) fail("bench attention: need --sink >= 0 and --local >= 1");
    if (o.xa_block < 16 || o.xa_block % 16) fail("bench attention: --xa-block must be a multiple of the stride 16");
    if (!(o.xa_threshold > 0.0 && o.xa_threshold <= 1.0)) fail("bench attention: --xa-threshold must be in (0, 1]");
    const std::vector<double> seqs = parse_numbers(o.seqs, "--seq"), msrs = parse_numbers(o.msrs, "--msr");
    const std::vector<double> dctx = o.decode_ctx.empty() ? std::vector<double>{} : parse_numbers(o.decode_ctx, "--decode-ctx");
    for (double s : seqs)
        if (s < 1 || s != std::floor(s)) fail("bench attention: --seq values must be positive integers");
    for (double c : dctx)
        if (c < 2 || c != std::floor(c)) fail("bench attention: --decode-ctx values must be integers of at least 2");
    for (double msr : msrs) {  // config and Ω checked before anything is printed or allocated
        int n = 0;
        (void)make_plan(o.config, msr, o.kv_heads, &n);
    }
    const BackendOptions& bo = o.backend;
    const auto be = bo.make_for_shape(o.threads);  // auto precision: bf16, what a GPU user runs
    const bool gpu = bo.backend != "cpu";
    const int Hq = o.q_heads, Hkv = o.kv_heads, d = o.head_dim, group = Hq / Hkv;
    const StreamingWindow win{o.sink, o.local};
    XAParams xp;
    xp.block = o.xa_block;
    xp.threshold = o.xa_threshold;
    const float scale = 1.0f / std::sqrt(float(d));
    const double flop_per_pair = 4.0 * d, unit = gpu ? 1e-12 : 1e-9;
    const char* unit_name = gpu ? "TFLOP/s" : "GFLOP/s";
    nlohmann::json rows = nlohmann::json::array();
    if (!o.json) {
        std::printf("attention, %s%s: heads %d/%d, d %d, sink %lld, local %lld, xa block %lld tau %.2f, %d reps\n", be->name(),
                    gpu ? "" : (", " + std::to_string(omp_get_max_threads()) + " threads").c_str(), Hq, Hkv, d,
                    (long long)o.sink, (long long)o.local, (long long)o.xa_block, o.xa_threshold, o.reps);
        std::printf("| T | config | Ω_MSR (sparse KV heads) | density | time ms (min-max) | %s | full ms | speed-up vs full (median; min) | ideal 1/density | %% of ideal |%s\n",
                    unit_name, o.check ? " max rel err |" : "");
        std::printf("|---|---|---|---|---|---|---|---|---|---|%s\n", o.check ? "---|" : "");
    }
    for (double seq : seqs) {
        const int64_t T = int64_t(seq);
        Inputs in(*be, T, Hq, Hkv, d);
        int n_zero = 0;
        const LayerPlan full = make_plan("full", 0.0, Hkv, &n_zero);
        auto run = [&](const LayerPlan& p, Buf dst) {
            be->attn_hybrid_prefill(in.q, in.k, in.v, dst, T, Hq, Hkv, d, p, win, o.xa_block, scale);
        };
        std::vector<double> t_full;
        for (double msr : msrs) {
            int n_sparse = 0;
            LayerPlan plan = make_plan(o.config, msr, Hkv, &n_sparse);
            const bool is_full = n_sparse == 0 && !has_xa(plan);
            // Warm-up (page faults, thread pools, module load), then interleaved timed reps.
            // XA: the forward's path (Backend::xa_prefill_plan: on the GPU the selection stays on the
            // device) is timed, and the host selection (xa_fill_plan) beside it.
            LayerPlan host_plan = plan;
            if (has_xa(plan)) {
                be->xa_fill_plan(in.q, in.k, T, Hq, Hkv, d, xp, host_plan);
                be->xa_prefill_plan(in.q, in.k, T, Hq, Hkv, d, xp, plan);
            }
            run(plan, in.out);
            if (t_full.empty()) run(full, in.out_full);
            be->sync();
            std::vector<double> t_cfg, t_est, t_est_host, t_full_now;
            for (int r = 0; r < o.reps; ++r) {
                if (!is_full) {
                    const double t0 = now_s();
                    run(full, in.out_full);
                    be->sync();
                    t_full_now.push_back(now_s() - t0);
                }
                if (has_xa(plan)) {
                    double t0 = now_s();
                    be->xa_fill_plan(in.q, in.k, T, Hq, Hkv, d, xp, host_plan);
                    be->sync();
                    t_est_host.push_back(now_s() - t0);
                    t0 = now_s();
                    be->xa_prefill_plan(in.q, in.k, T, Hq, Hkv, d, xp, plan);
                    be->sync();
                    t_est.push_back(now_s() - t0);
                }
                const double t0 = now_s();
                run(plan, in.out);
                be->sync();
                t_cfg.push_back(now_s() - t0);
            }
            if (is_full) t_full_now = t_cfg;
            be->xa_download(plan);  // host lists for the pair counts and the check
            t_full.insert(t_full.end(), t_full_now.begin(), t_full_now.end());
            const double pairs_cfg = pairs_of(plan, win, o.xa_block, T, group), pairs_full = pairs_of(full, win, o.xa_block, T, group);
            const Stat sc = stats(t_cfg), sf = stats(t_full_now);
            const Stat se = t_est.empty() ? Stat{0, 0, 0} : stats(t_est);
            const Stat seh = t_est_host.empty() ? Stat{0, 0, 0} : stats(t_est_host);
            const double density = pairs_cfg / pairs_full, ideal = pairs_full / pairs_cfg;
            // On a shared machine load only ever adds time, so the ratio of the fastest reps is the
            // steadier estimate; both are printed.
            const double speedup = sf.median / sc.median, speedup_min = sf.min / sc.min;
            int64_t checked = 0;
            const double err = o.check ? check_rows(*be, in, plan, T, Hq, Hkv, d, win, o.xa_block, scale, &checked) : -1;
            std::string sparse_heads = n_sparse ? "0.." + std::to_string(n_sparse - 1) : "none";
            const double omega = o.config == "ssa" || o.config == "xa" ? 1.0 : double(n_sparse) / Hkv;
            nlohmann::json j = {{"backend", be->name()}, {"seq", T}, {"q_heads", Hq}, {"kv_heads", Hkv}, {"head_dim", d},
                                {"config", o.config}, {"msr_requested", msr}, {"msr", omega},
                                {"sparse_mode_kv_heads", sparse_heads}, {"sink", o.sink}, {"local", o.local},
                                {"xa_block", o.xa_block}, {"xa_threshold", o.xa_threshold}, {"reps", o.reps},
                                {"time_ms", {{"median", sc.median * 1e3}, {"min", sc.min * 1e3}, {"max", sc.max * 1e3}}},
                                {"full_time_ms", {{"median", sf.median * 1e3}, {"min", sf.min * 1e3}, {"max", sf.max * 1e3}}},
                                {"tflops", pairs_cfg * flop_per_pair / sc.median * 1e-12},
                                {"full_tflops", pairs_full * flop_per_pair / sf.median * 1e-12}, {"density", density},
                                {"speedup", speedup}, {"speedup_of_min", speedup_min}, {"ideal_speedup", ideal},
                                {"fraction_of_ideal", speedup / ideal}};
            if (!gpu) j["threads"] = omp_get_max_threads();
            if (has_xa(plan)) {
                j["xa_estimate_ms"] = {{"median", se.median * 1e3}, {"min", se.min * 1e3}, {"max", se.max * 1e3}};
                j["xa_estimate_host_select_ms"] = {{"median", seh.median * 1e3}, {"min", seh.min * 1e3}, {"max", seh.max * 1e3}};
                j["speedup_incl_estimate"] = sf.median / (sc.median + se.median);
            }
            if (o.check) j["check"] = {{"max_rel_err", err}, {"rows", checked}};
            rows.push_back(j);
            if (o.json) continue;
            std::printf("| %lld | %s | %.3f (%s) | %.3f | %.2f (%.2f-%.2f) | %.1f | %.2f | %.2f; %.2f | %.2f | %.0f |", (long long)T,
                        o.config.c_str(), omega, sparse_heads.c_str(), density, sc.median * 1e3, sc.min * 1e3, sc.max * 1e3,
                        pairs_cfg * flop_per_pair / sc.median * unit, sf.median * 1e3, speedup, speedup_min, ideal,
                        100.0 * speedup / ideal);
            if (o.check) std::printf(" %.2e (%lld rows) |", err, (long long)checked);
            std::printf("\n");
            if (has_xa(plan))
                std::printf("  XA estimation: %.2f ms (%.2f-%.2f); speed-up vs full including it: %.2f; "
                            "with the selection on the host (xa_fill_plan): %.2f ms\n",
                            se.median * 1e3, se.min * 1e3, se.max * 1e3, sf.median / (sc.median + se.median),
                            seh.median * 1e3);
            std::fflush(stdout);
        }
    }
    for (double c : dctx) {
        const int64_t ctx = int64_t(c);
        int n_sparse = 0, n_zero = 0;
        const LayerPlan plan = make_plan(o.config, msrs.back(), Hkv, &n_sparse), full = make_plan("full", 0.0, Hkv, &n_zero);
        const DecodeResult df = time_decode(*be, full, win, ctx, Hq, Hkv, d, gpu);
        const DecodeResult dc = time_decode(*be, plan, win, ctx, Hq, Hkv, d, gpu);
        nlohmann::json j = {{"backend", be->name()}, {"decode_ctx", ctx}, {"config", o.config}, {"msr", double(n_sparse) / Hkv},
                            {"timing", gpu ? "device events, mean of 50 back-to-back calls, median of 7; caches rotated past 256 MiB"
                                           : "host, median of 3 x 3 calls"},
                            {"full_ms", df.ms}, {"full_host_ms", df.host_ms}, {"full_kv_bytes", df.bytes},
                            {"full_gbs", double(df.bytes) / df.ms * 1e-6}, {"full_cache_copies", df.copies},
                            {"ms", dc.ms}, {"host_ms", dc.host_ms}, {"kv_bytes", dc.bytes}, {"gbs", double(dc.bytes) / dc.ms * 1e-6},
                            {"cache_copies", dc.copies}};
        rows.push_back(j);
        if (!o.json)
            std::printf("decode, context %lld: full %.4f ms (%.1f MiB of K/V, %.0f GB/s; one call host-timed %.4f ms) | %s Ω %.2f "
                        "%.4f ms (%.1f MiB, %.0f GB/s; host-timed %.4f ms)\n",
                        (long long)ctx, df.ms, double(df.bytes) / (1 << 20), double(df.bytes) / df.ms * 1e-6, df.host_ms,
                        o.config.c_str(), double(n_sparse) / Hkv, dc.ms, double(dc.bytes) / (1 << 20),
                        double(dc.bytes) / dc.ms * 1e-6, dc.host_ms);
    }
    if (o.json) std::printf("%s\n", rows.dump().c_str());
}

}  // namespace

void add_bench_attention(CLI::App* bench) {
    auto o = std::make_shared<AttnBenchOptions>();
    CLI::App* c = bench->add_subcommand("attention", "One layer of hybrid prefill (and decode) attention vs all-FA");
    o->backend.add_to(c);
    c->add_option("--seq", o->seqs, "Sequence lengths T, comma-separated")->capture_default_str();
    c->add_option("--q-heads", o->q_heads, "Query heads")->capture_default_str();
    c->add_option("--kv-heads", o->kv_heads, "KV heads")->capture_default_str();
    c->add_option("--head-dim", o->head_dim, "Head dimension")->capture_default_str();
    c->add_option("--config", o->config, "full, ssa, xa, fa-ssa, fa-xa or xa-ssa")->capture_default_str();
    c->add_option("--msr", o->msrs, "Shares of KV heads in the sparse mode (first round(msr * kv-heads) heads), comma-separated")
        ->capture_default_str();
    c->add_option("--decode-ctx", o->decode_ctx, "Also time one decode token at these contexts (full and the last --msr)");
    c->add_option("--sink", o->sink, "SSA sink tokens")->capture_default_str();
    c->add_option("--local", o->local, "SSA local window")->capture_default_str();
    c->add_option("--xa-block", o->xa_block, "XAttention block size")->capture_default_str();
    c->add_option("--xa-threshold", o->xa_threshold, "XAttention mass threshold")->capture_default_str();
    c->add_option("-r,--reps", o->reps, "Timed repetitions (median and range)")->capture_default_str();
    c->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1 << 20));
    c->add_flag("--check", o->check, "Compare with the naive reference (all rows if cheap, else 64 sampled rows)");
    c->add_flag("--json", o->json, "Print one JSON array (one object per row)");
    c->callback([o] { bench_attention(*o); });
}

}  // namespace elastic::cli
