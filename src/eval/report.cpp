#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <map>
#include <set>

#include "core/error.h"

namespace elastic::eval {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string fmt(double x, const char* f) {
    if (std::isnan(x)) return "–";
    char buf[64];
    std::snprintf(buf, sizeof buf, f, x);
    return buf;
}
}  // namespace

Report build_report(const std::vector<RunFile>& runs) {
    if (runs.empty()) fail("report: no result files");
    std::set<std::string> models;
    for (const auto& f : runs) models.insert(f.model);
    std::map<std::string, std::set<std::string>> routers_of;  // attention -> the routers it ran with
    for (const auto& f : runs) routers_of[f.attention].insert(f.router);
    auto row_name = [&](const RunFile& f) {
        // One mode run with two routers (e.g. a warm start and the trained router): named by router.
        const std::string a = routers_of[f.attention].size() > 1 ? f.attention + " (" + f.router + ")" : f.attention;
        if (models.size() <= 1) return a;
        std::string m = f.model.substr(f.model.find_last_of('/') + 1);
        return m + " / " + a;
    };
    Report rep;
    std::map<std::pair<std::string, int64_t>, size_t> col_of;  // (family, length) -> column
    for (const auto& f : runs)
        for (const auto& t : f.results) {
            std::string name = row_name(f);
            if (std::find(rep.rows.begin(), rep.rows.end(), name) == rep.rows.end()) rep.rows.push_back(name);
            const auto key = std::make_pair(t.family, t.length);
            if (!col_of.count(key)) {
                col_of[key] = rep.columns.size();
                rep.columns.push_back({t.family, t.length_label, t.length, t.higher_is_better});
            }
        }
    // order columns: by first appearance of the family, then by length
    std::vector<std::string> fam_order;
    for (const auto& c : rep.columns)
        if (std::find(fam_order.begin(), fam_order.end(), c.family) == fam_order.end()) fam_order.push_back(c.family);
    std::stable_sort(rep.columns.begin(), rep.columns.end(), [&](const Report::Column& a, const Report::Column& b) {
        const long fa = std::find(fam_order.begin(), fam_order.end(), a.family) - fam_order.begin();
        const long fb = std::find(fam_order.begin(), fam_order.end(), b.family) - fam_order.begin();
        return fa != fb ? fa < fb : a.length < b.length;
    });
    col_of.clear();
    for (size_t c = 0; c < rep.columns.size(); ++c) col_of[{rep.columns[c].family, rep.columns[c].length}] = c;

    const size_t R = rep.rows.size(), C = rep.columns.size();
    std::vector<std::vector<double>> sum(R, std::vector<double>(C, 0.0));
    std::vector<std::vector<double>> ci2(R, std::vector<double>(C, 0.0));
    std::vector<std::vector<int>> cnt(R, std::vector<int>(C, 0)), ci_cnt = cnt;
    std::vector<double> msr(R, 0), esr(R, 0);
    std::vector<int> n(R, 0);
    for (const auto& c : rep.columns)
        if (std::find(rep.families.begin(), rep.families.end(), c.family) == rep.families.end())
            rep.families.push_back(c.family);
    std::vector<std::vector<double>> fam_msr(R, std::vector<double>(rep.families.size(), 0.0));
    std::vector<std::vector<int>> fam_n(R, std::vector<int>(rep.families.size(), 0));
    // prefill seconds per (row, task, length) for the speed-up
    std::vector<std::map<std::pair<std::string, int64_t>, double>> prefill(R);
    for (const auto& f : runs) {
        const size_t r = size_t(std::find(rep.rows.begin(), rep.rows.end(), row_name(f)) - rep.rows.begin());
        for (const auto& t : f.results) {
            const size_t c = col_of[{t.family, t.length}];
            sum[r][c] += t.score;
            if (t.extra.is_object() && t.extra.contains("ci95") && t.extra["ci95"].is_number()) {
                const double ci = t.extra["ci95"].get<double>();
                ci2[r][c] += ci * ci;
                ++ci_cnt[r][c];
            }
            ++cnt[r][c];
            msr[r] += t.omega_msr;
            esr[r] += t.omega_esr;
            const size_t fi = size_t(std::find(rep.families.begin(), rep.families.end(), t.family) - rep.families.begin());
            fam_msr[r][fi] += t.omega_msr;
            ++fam_n[r][fi];
            ++n[r];
            prefill[r][{t.task, t.length}] += t.prefill_seconds * std::max(1, t.samples);
        }
    }
    rep.cells.assign(R, std::vector<double>(C, kNaN));
    rep.ci.assign(R, std::vector<double>(C, 0.0));
    for (size_t r = 0; r < R; ++r) {
        for (size_t c = 0; c < C; ++c)
            if (cnt[r][c]) {
                rep.cells[r][c] = sum[r][c] / cnt[r][c];
                if (ci_cnt[r][c] == cnt[r][c]) rep.ci[r][c] = std::sqrt(ci2[r][c]) / cnt[r][c];
            }
        rep.omega_msr.push_back(n[r] ? msr[r] / n[r] : kNaN);
        rep.family_msr.emplace_back();
        for (size_t fi = 0; fi < rep.families.size(); ++fi)
            rep.family_msr.back().push_back(fam_n[r][fi] ? fam_msr[r][fi] / fam_n[r][fi] : kNaN);
        rep.omega_esr.push_back(n[r] ? esr[r] / n[r] : kNaN);
    }
    // speed-up: total prefill time of the `full` row over this row's, on the (task, length) both ran
    for (size_t r = 0; r < R; ++r) {
        double sp = kNaN;
        const std::string& name = rep.rows[r];
        const std::string prefix = name.find(" / ") != std::string::npos ? name.substr(0, name.find(" / ") + 3) : "";
        auto full = std::find(rep.rows.begin(), rep.rows.end(), prefix + "full");
        if (full != rep.rows.end()) {
            const auto& fp = prefill[size_t(full - rep.rows.begin())];
            double a = 0, b = 0;
            for (const auto& [key, secs] : prefill[r]) {
                auto it = fp.find(key);
                if (it == fp.end()) continue;
                a += it->second;
                b += secs;
            }
            if (b > 0) sp = a / b;
        }
        rep.speedup.push_back(sp);
    }
    return rep;
}

std::string report_markdown(const Report& r) {
    std::string s = "| attention |";
    std::string sep = "|---|";
    for (const auto& c : r.columns) {
        s += " " + c.family + " " + c.label + (c.higher_is_better ? "" : " ↓") + " |";
        sep += "---:|";
    }
    s += " Ω_MSR | Ω_ESR | prefill speed-up vs full |\n";
    sep += "---:|---:|---:|\n";
    s += sep;
    for (size_t i = 0; i < r.rows.size(); ++i) {
        s += "| " + r.rows[i] + " |";
        for (size_t c = 0; c < r.columns.size(); ++c) {
            const double ci = i < r.ci.size() && c < r.ci[i].size() ? r.ci[i][c] : 0.0;
            s += " " + fmt(r.cells[i][c], "%.2f") + (ci > 0 ? " ± " + fmt(ci, "%.2f") : "") + " |";
        }
        s += " " + fmt(r.omega_msr[i], "%.3f") + " | " + fmt(r.omega_esr[i], "%.3f") + " | " + fmt(r.speedup[i], "%.2f×") + " |\n";
    }
    // Ω_MSR per family, for the rows that route (some Ω > 0).
    std::string t = "\n| Ω_MSR per family |";
    std::string tsep = "|---|";
    for (const auto& f : r.families) {
        t += " " + f + " |";
        tsep += "---:|";
    }
    t += "\n" + tsep + "\n";
    bool any = false;
    for (size_t i = 0; i < r.rows.size(); ++i) {
        if (!(r.omega_msr[i] > 0)) continue;
        any = true;
        t += "| " + r.rows[i] + " |";
        for (size_t fi = 0; fi < r.families.size(); ++fi) t += " " + fmt(r.family_msr[i][fi], "%.3f") + " |";
        t += "\n";
    }
    if (any) s += t;
    return s;
}

ScoreSeries score_vs_length(const Report& r) {
    ScoreSeries out;
    for (size_t i = 0; i < r.rows.size(); ++i) {
        struct Acc {
            double sum = 0, ci2 = 0;
            int n = 0;
            bool all_ci = true;
        };
        std::map<int64_t, Acc> by_len;
        for (size_t c = 0; c < r.columns.size(); ++c) {
            const auto& col = r.columns[c];
            if (!col.higher_is_better || col.length <= 0 || std::isnan(r.cells[i][c])) continue;
            Acc& a = by_len[col.length];
            a.sum += r.cells[i][c];
            const double ci = i < r.ci.size() && c < r.ci[i].size() ? r.ci[i][c] : 0.0;
            a.ci2 += ci * ci;
            a.all_ci &= ci > 0;
            ++a.n;
        }
        for (const auto& [len, a] : by_len) out[r.rows[i]].push_back({double(len), a.sum / a.n, a.all_ci ? std::sqrt(a.ci2) / a.n : 0.0});
    }
    return out;
}

Paired compare_runs(const std::vector<RunFile>& a, const std::vector<RunFile>& b) {
    using Key = std::pair<std::string, int64_t>;  // task, length
    // Per cell: index -> score, in percent when the cell's result is reported in percent.
    auto collect = [](const std::vector<RunFile>& runs, const char* side) {
        std::map<Key, std::map<int64_t, double>> cells;
        size_t n = 0;
        for (const auto& f : runs) {
            for (const auto& s : f.samples) {
                if (!cells[{s.task, s.length}].emplace(s.index, s.score).second)
                    fail("compare: run %s has sample %lld of %s at %lld twice", side, (long long)s.index, s.task.c_str(),
                         (long long)s.length);
                ++n;
            }
        }
        if (n == 0) fail("compare: run %s has no per-sample scores (run `elastic eval` with --predictions)", side);
        // The result's score is 100 × the mean of its samples' (RULER, code) or the mean itself.
        std::map<Key, double> scale;
        for (const auto& f : runs)
            for (const auto& r : f.results) {
                auto it = cells.find({r.task, r.length});
                if (it == cells.end()) continue;
                double m = 0;
                for (const auto& [i, v] : it->second) m += v;
                m /= double(it->second.size());
                const double tol = 0.01 + 1e-6 * std::fabs(r.score);  // results keep two decimals
                if (std::fabs(100 * m - r.score) <= tol) scale[it->first] = 100;
                else if (std::fabs(m - r.score) <= tol) scale[it->first] = 1;
                else
                    fail("compare: run %s: the samples of %s at %lld average %g, not the result's %g", side, r.task.c_str(),
                         (long long)r.length, m, r.score);
            }
        return std::make_pair(cells, scale);
    };
    const auto [ca, sa] = collect(a, "A");
    const auto [cb, sb] = collect(b, "B");
    Paired p;
    double var = 0;
    for (const auto& [key, xa] : ca) {
        auto jt = cb.find(key);
        if (jt == cb.end()) continue;
        const auto& xb = jt->second;
        if (xa.size() != xb.size() || !std::equal(xa.begin(), xa.end(), xb.begin(), [](const auto& u, const auto& v) {
                return u.first == v.first;
            }))
            fail("compare: %s at %lld: the runs scored different samples (%zu and %zu); same --seed and --samples?",
                 key.first.c_str(), (long long)key.second, xa.size(), xb.size());
        const double scale = sa.count(key) ? sa.at(key) : sb.count(key) ? sb.at(key) : 100;
        PairedCell c;
        c.task = key.first;
        c.length = key.second;
        c.n = int(xa.size());
        std::vector<double> d;
        for (auto ia = xa.begin(), ib = xb.begin(); ia != xa.end(); ++ia, ++ib) {
            c.a += scale * ia->second;
            c.b += scale * ib->second;
            d.push_back(scale * (ia->second - ib->second));
            c.wins += ia->second > ib->second;
            c.losses += ia->second < ib->second;
        }
        c.a /= c.n;
        c.b /= c.n;
        c.diff = c.a - c.b;
        double ss = 0;
        for (double x : d) ss += (x - c.diff) * (x - c.diff);
        const double se2 = c.n > 1 ? ss / double(c.n - 1) / double(c.n) : 0.0;
        c.ci = 1.96 * std::sqrt(se2);
        var += se2;
        p.a += c.a;
        p.b += c.b;
        p.cells.push_back(c);
    }
    if (p.cells.empty()) fail("compare: the two runs share no task x length with per-sample scores");
    const double k = double(p.cells.size());
    p.a /= k;
    p.b /= k;
    p.diff = p.a - p.b;
    p.ci = 1.96 * std::sqrt(var) / k;
    return p;
}

std::string paired_markdown(const Paired& p, const std::string& name_a, const std::string& name_b) {
    std::string s = "A: " + name_a + "\nB: " + name_b + "\n\n";
    s += "| task | length | samples | A | B | A − B (paired 95 % CI) | A better / worse |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& c : p.cells)
        s += "| " + c.task + " | " + length_label(c.length) + " | " + std::to_string(c.n) + " | " + fmt(c.a, "%.2f") + " | " +
             fmt(c.b, "%.2f") + " | " + fmt(c.diff, "%+.2f") + " ± " + fmt(c.ci, "%.2f") + " | " + std::to_string(c.wins) +
             " / " + std::to_string(c.losses) + " |\n";
    s += "| **mean of the " + std::to_string(p.cells.size()) + " cells** | | | " + fmt(p.a, "%.2f") + " | " + fmt(p.b, "%.2f") +
         " | **" + fmt(p.diff, "%+.2f") + " ± " + fmt(p.ci, "%.2f") + "** | |\n";
    return s;
}

}  // namespace elastic::eval
