#include "attention/elastic.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace elastic {

AttentionSpec AttentionSpec::parse(const std::string& mode, double msr) {
    AttentionSpec s;
    s.name = mode;
    s.msr = msr;
    auto routed = [&](HeadMode full, HeadMode sparse) {
        s.kind = Kind::Routed;
        s.full_mode = full;
        s.sparse_mode = sparse;
    };
    if (mode == "full") {
        s.kind = Kind::Full;
    } else if (mode == "ssa") {
        s.kind = Kind::SSA;
    } else if (mode == "xa") {
        s.kind = Kind::XA;
    } else if (mode == "fa-ssa") {
        routed(HeadMode::FA, HeadMode::SSA);
    } else if (mode == "fa-xa") {
        routed(HeadMode::FA, HeadMode::XA);
    } else if (mode == "xa-ssa") {
        routed(HeadMode::XA, HeadMode::SSA);
    } else if (mode.rfind("static:", 0) == 0) {
        s.kind = Kind::Static;
        s.static_scores = read_head_scores(mode.substr(7));
    } else if (mode.rfind("msr:", 0) == 0) {
        s.kind = Kind::MSR;
        char* end = nullptr;
        const std::string x = mode.substr(4);
        s.msr = std::strtod(x.c_str(), &end);
        if (x.empty() || *end != '\0' || !(s.msr >= 0 && s.msr <= 1)) fail("--attention %s: X must be a number in [0, 1]", mode.c_str());
    } else {
        fail("unknown attention mode '%s' (full, ssa, xa, fa-ssa, fa-xa, xa-ssa, static:FILE, msr:X)", mode.c_str());
    }
    if (s.kind != Kind::Static && s.kind != Kind::MSR && msr >= 0) fail("--msr applies to static:FILE only (use msr:X to force Ω_MSR with the router)");
    if (!(s.msr < 0 || (s.msr >= 0 && s.msr <= 1))) fail("--msr must be in [0, 1]");
    if (s.kind == Kind::Static && s.msr >= 0) s.name += strprintf(" --msr %g", s.msr);  // two static runs differ by it
    return s;
}

std::vector<std::vector<float>> read_head_scores(const std::string& path) {
    std::ifstream in(path);
    if (!in) fail("%s: cannot open head scores", path.c_str());
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_head_scores(ss.str(), path);
}

std::vector<std::vector<float>> parse_head_scores(const std::string& text, const std::string& path) {
    std::vector<std::vector<float>> out;
    const size_t first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && text[first] == '{') {
        try {
            nlohmann::json j = nlohmann::json::parse(text);
            out = j.at("scores").get<std::vector<std::vector<float>>>();
        } catch (const nlohmann::json::exception& e) {
            fail("%s: expected {\"scores\": [[numbers per KV head] per layer]}: %s", path.c_str(), e.what());
        }
    } else {
        std::string line;
        std::istringstream ls(text);
        int lineno = 0;
        while (std::getline(ls, line)) {
            ++lineno;
            if (line.find_first_not_of(" \t\r") == std::string::npos || line[line.find_first_not_of(" \t")] == '#') continue;
            std::istringstream row(line);
            std::vector<float> v;
            std::string tok;
            while (row >> tok) {
                char* end = nullptr;
                float x = std::strtof(tok.c_str(), &end);
                if (*end != '\0' || !std::isfinite(x)) fail("%s:%d: '%s' is not a number", path.c_str(), lineno, tok.c_str());
                v.push_back(x);
            }
            out.push_back(std::move(v));
        }
    }
    if (out.empty()) fail("%s: no head scores", path.c_str());
    return out;
}

int msr_sparse_heads(double msr, int n_kv_head, int64_t sparse_so_far, int64_t heads_so_far) {
    const int64_t want = int64_t(std::llround(msr * double(heads_so_far + int64_t(n_kv_head)))) - sparse_so_far;
    return int(std::clamp<int64_t>(want, 0, int64_t(n_kv_head)));
}

std::vector<HeadMode> choose_modes(const AttentionSpec& spec, int layer, int n_kv_head, int n_layer,
                                   const RouterDecision* d, int64_t sparse_so_far, int64_t heads_so_far) {
    using Kind = AttentionSpec::Kind;
    const size_t H = size_t(n_kv_head);
    switch (spec.kind) {
        case Kind::Full: return std::vector<HeadMode>(H, HeadMode::FA);
        case Kind::SSA: return std::vector<HeadMode>(H, HeadMode::SSA);
        case Kind::XA: return std::vector<HeadMode>(H, HeadMode::XA);
        case Kind::Routed: {
            ELASTIC_ASSERT(d && d->full.size() == H);
            std::vector<HeadMode> m(H);
            for (size_t h = 0; h < H; ++h) m[h] = d->full[h] ? spec.full_mode : spec.sparse_mode;
            return m;
        }
        case Kind::MSR: {
            ELASTIC_ASSERT(d && d->margin.size() == H);
            const int64_t n_sparse = msr_sparse_heads(spec.msr, n_kv_head, sparse_so_far, heads_so_far);
            std::vector<size_t> order(H);
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return d->margin[a] < d->margin[b]; });
            std::vector<HeadMode> m(H, spec.full_mode);
            for (int64_t i = 0; i < n_sparse; ++i) m[order[size_t(i)]] = spec.sparse_mode;
            return m;
        }
        case Kind::Static: {
            const auto& sc = spec.static_scores;
            if (int(sc.size()) != n_layer) fail("static head scores have %zu layers, the model has %d", sc.size(), n_layer);
            if (sc[size_t(layer)].size() != H)
                fail("static head scores: layer %d has %zu heads, the model has %d KV heads", layer, sc[size_t(layer)].size(), n_kv_head);
            std::vector<HeadMode> m(H, spec.full_mode);
            if (spec.msr < 0) {  // a 0/1 set: 1 keeps full attention
                for (size_t h = 0; h < H; ++h) m[h] = sc[size_t(layer)][h] > 0.5f ? spec.full_mode : spec.sparse_mode;
                return m;
            }
            // Global ranking: the lowest-scoring share msr of all heads (ties: earlier layer/head first).
            std::vector<std::pair<float, int64_t>> all;
            for (size_t l = 0; l < sc.size(); ++l)
                for (size_t h = 0; h < sc[l].size(); ++h) all.push_back({sc[l][h], int64_t(l * H + h)});
            std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
            const size_t n_sparse = size_t(std::llround(spec.msr * double(all.size())));
            for (size_t i = 0; i < n_sparse; ++i)
                if (all[i].second / int64_t(H) == layer) m[size_t(all[i].second % int64_t(H))] = spec.sparse_mode;
            return m;
        }
    }
    return {};
}

std::string AttentionStats::to_json(bool per_layer) const {
    nlohmann::json j;
    j["tokens"] = tokens;
    j["omega_msr"] = omega_msr;
    j["omega_esr"] = omega_esr;
    j["omega_esr_all_layers"] = omega_esr_all;
    j["kv_cache_bytes"] = kv_bytes;
    j["router_seconds"] = router_seconds;
    j["xa_estimation_seconds"] = xa_seconds;
    j["attention_seconds"] = attention_seconds;
    j["prefill_seconds"] = prefill_seconds;
    if (per_layer) {
        nlohmann::json layers = nlohmann::json::array();
        for (size_t l = 0; l < modes.size(); ++l) {
            nlohmann::json L;
            std::vector<std::string> m;
            for (HeadMode x : modes[l]) m.push_back(head_mode_name(x));
            L["modes"] = m;
            L["pruned"] = pruned[l];
            if (l < prob_fa.size() && !prob_fa[l].empty()) L["prob_fa"] = prob_fa[l];
            layers.push_back(L);
        }
        j["layers"] = layers;
    }
    return j.dump();
}

bool AttentionSpec::counts_as_sparse(HeadMode m) const {
    switch (kind) {
        case Kind::Full: return false;
        case Kind::SSA: case Kind::XA: return true;
        default: return m == sparse_mode && sparse_mode != full_mode;
    }
}

void AttentionStats::record_layer(const LayerPlan& plan, const AttentionSpec& spec, int64_t T, std::vector<float> p_fa) {
    const size_t H = plan.mode.size();
    std::vector<double> pr(H);
    const double causal = double(T) * double(T + 1) / 2.0;
    for (size_t g = 0; g < H; ++g) {
        const bool xa = plan.mode[g] == HeadMode::XA;
        if (xa && plan.xa_on_device) {  // lists in device memory: the backend counted the pairs
            ELASTIC_ASSERT_MSG(plan.xa_pairs.size() == H, "XA plan on the device without its pair counts (xa_finish_plan)");
            pr[g] = 1.0 - double(plan.xa_pairs[g]) / causal;
            continue;
        }
        pr[g] = 1.0 - double(attended_pairs(plan.mode[g], spec.win, xa ? &plan.xa[g] : nullptr, spec.xa.block, T)) / causal;
    }
    modes.push_back(plan.mode);
    prob_fa.push_back(std::move(p_fa));
    pruned.push_back(std::move(pr));
}

void AttentionStats::finish(int n_layer, int n_kv_head, int64_t sparse_heads, size_t kv_cache_bytes) {
    const double total_heads = double(n_layer) * double(n_kv_head);
    omega_msr = double(sparse_heads) / total_heads;
    double last = 0, all = 0;
    for (size_t l = 0; l < pruned.size(); ++l)
        for (double p : pruned[l]) {
            all += p;
            if (l + 1 == pruned.size()) last += p;
        }
    omega_esr = last / double(n_kv_head);
    omega_esr_all = all / total_heads;
    kv_bytes = kv_cache_bytes;
}

double stats_clock() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace elastic
