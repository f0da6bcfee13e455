// The cairo pictures: the routing map and the score-versus-length plot written as PNG and SVG and
// read back (size, mode colours, title text), the errors for a bad extension or path, and the CI
// that score_vs_length carries to the plot. Without cairo only the stub's message is checked.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <unistd.h>

#ifdef ELASTIC_HAVE_CAIRO
#include <cairo.h>
#endif

#include "core/error.h"
#include "eval/plot.h"
#include "eval/training-plot.h"
#include "eval/report.h"
#include "eval/routing-map.h"

using namespace elastic;
using namespace elastic::eval;

namespace {

std::string tmp(const std::string& name) { return "/tmp/elastic-plots-" + std::to_string(getpid()) + "-" + name; }

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::vector<std::vector<HeadMode>> mixed_plan(int layers, int heads) {
    const HeadMode cycle[] = {HeadMode::FA, HeadMode::SSA, HeadMode::XA, HeadMode::SSA};
    std::vector<std::vector<HeadMode>> m(size_t(layers), std::vector<HeadMode>(size_t(heads), HeadMode::FA));
    for (int l = 0; l < layers; ++l)
        for (int h = 0; h < heads; ++h) m[size_t(l)][size_t(h)] = cycle[(l + h) % 4];
    return m;
}

ScoreSeries series_with_ci() {
    return {{"full", {{1024, 92, 3}, {4096, 88, 4}, {16384, 81, 5}}},
            {"fa-ssa", {{1024, 90, 3.5}, {4096, 84, 4.5}, {16384, 70, 6}}}};
}

const RoutingMapInfo kInfo{"tiny-model", 1943, 0.611, 0.495, "fa-ssa"};

#ifdef ELASTIC_HAVE_CAIRO
struct Png {
    int width = 0, height = 0;
    std::vector<uint32_t> rgb;  // 0xRRGGBB per pixel
};

Png read_png(const std::string& path) {
    EXPECT_EQ(slurp(path).substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    cairo_surface_t* s = cairo_image_surface_create_from_png(path.c_str());
    EXPECT_EQ(cairo_surface_status(s), CAIRO_STATUS_SUCCESS) << path;
    Png p;
    p.width = cairo_image_surface_get_width(s);
    p.height = cairo_image_surface_get_height(s);
    const int stride = cairo_image_surface_get_stride(s);
    const unsigned char* data = cairo_image_surface_get_data(s);
    for (int y = 0; data && y < p.height; ++y)
        for (int x = 0; x < p.width; ++x)
            p.rgb.push_back(reinterpret_cast<const uint32_t*>(data + size_t(y) * size_t(stride))[x] & 0xffffff);
    cairo_surface_destroy(s);
    return p;
}

size_t count(const Png& p, uint32_t rgb) { return size_t(std::count(p.rgb.begin(), p.rgb.end(), rgb)); }

#define NEED_CAIRO()
#else
#define NEED_CAIRO() GTEST_SKIP() << "built without cairo"
#endif

}  // namespace

TEST(RoutingMap, PngShowsEveryModeColour) {
    NEED_CAIRO();
#ifdef ELASTIC_HAVE_CAIRO
    const std::string small = tmp("map-small.png"), tall = tmp("map-tall.png");
    write_routing_map(small, mixed_plan(6, 4), kInfo);
    write_routing_map(tall, mixed_plan(24, 4), kInfo);
    const Png a = read_png(small), b = read_png(tall);
    EXPECT_GE(a.width, 4 * 16);
    EXPECT_LE(a.width, 2000);
    EXPECT_GE(a.height, 6 * 8 + 60);
    EXPECT_GT(b.height, a.height);
    ASSERT_EQ(a.rgb.size(), size_t(a.width) * size_t(a.height));
    for (HeadMode m : {HeadMode::FA, HeadMode::SSA, HeadMode::XA})
        EXPECT_GT(count(a, routing_map_color(m)), 16u * 8u * 4u) << head_mode_name(m);  // > 4 cells' worth
    std::remove(small.c_str());
    std::remove(tall.c_str());
#endif
}

TEST(RoutingMap, ShadesByRouterProbability) {
    NEED_CAIRO();
#ifdef ELASTIC_HAVE_CAIRO
    const auto modes = mixed_plan(4, 2);
    std::vector<std::vector<float>> prob(4, std::vector<float>(2));
    for (int l = 0; l < 4; ++l)
        for (int h = 0; h < 2; ++h) prob[size_t(l)][size_t(h)] = modes[size_t(l)][size_t(h)] == HeadMode::FA ? 0.55f : 0.0f;
    const std::string path = tmp("map-prob.png");
    write_routing_map(path, modes, kInfo, prob);
    const Png p = read_png(path);
    EXPECT_LE(count(p, routing_map_color(HeadMode::FA)), 14u * 14u);  // only the legend swatch: the FA cells are pale
    EXPECT_GT(count(p, routing_map_color(HeadMode::SSA)), 14u * 14u);  // P(FA) = 0: full colour
    std::remove(path.c_str());
#endif
}

TEST(RoutingMap, SvgCarriesTheTitle) {
    NEED_CAIRO();
    const std::string path = tmp("map.svg");
    write_routing_map(path, mixed_plan(5, 3), kInfo);
    const std::string svg = slurp(path);
    EXPECT_NE(svg.find("<svg"), std::string::npos);
    EXPECT_NE(svg.find("Routing map: tiny-model"), std::string::npos);
    EXPECT_NE(svg.find("1,943 tokens"), std::string::npos);
    std::remove(path.c_str());
}

TEST(ScorePlot, PngAndSvgWithErrorBars) {
    NEED_CAIRO();
#ifdef ELASTIC_HAVE_CAIRO
    const std::string png = tmp("plot.png"), svg = tmp("plot.svg");
    write_score_plot(png, series_with_ci(), "RULER on tiny-model");
    write_score_plot(svg, series_with_ci(), "RULER on tiny-model");
    const Png p = read_png(png);
    EXPECT_GE(p.width, 560);
    EXPECT_GE(p.height, 320);
    EXPECT_GT(count(p, 0x1f77b4), 20u);  // the first series' colour
    EXPECT_GT(count(p, 0xd62728), 20u);
    EXPECT_NE(slurp(svg).find("<title>RULER on tiny-model</title>"), std::string::npos);
    std::remove(png.c_str());
    std::remove(svg.c_str());
#endif
}

// A training log (JSON lines, nested per-category fields) becomes three panels: losses, Ω with its
// targets dashed, λ; they draw as a PNG; a line that is not JSON is an error naming it.
TEST(TrainingPlot, LogToPanelsAndPng) {
    const std::string log = tmp("train.jsonl");
    {
        std::ofstream f(log);
        for (int step = 1; step <= 30; ++step)
            f << "{\"step\": " << step << ", \"lm_loss\": " << 3.0 - 0.05 * step << ", \"reg_loss\": " << 0.5 / step
              << ", \"omega\": {\"sensitive\": " << 0.3 + 0.01 * step << ", \"robust\": " << 0.4 + 0.015 * step
              << "}, \"target\": {\"sensitive\": 0.7, \"robust\": 1.0}, \"lambda\": {\"sensitive\": " << 0.001 * step
              << "}, \"tokens_per_s\": 1234}\n";
    }
    const std::vector<CurvePanel> panels = training_log_panels(log);
    ASSERT_EQ(panels.size(), 3u);
    EXPECT_EQ(panels[0].series.size(), 2u);  // lm_loss, reg_loss
    EXPECT_EQ(panels[1].series.size(), 4u);  // omega.*, target.*
    EXPECT_EQ(panels[1].dashed, (std::set<std::string>{"target.robust", "target.sensitive"}));
    EXPECT_EQ(panels[2].series.at("lambda.sensitive").size(), 30u);
    EXPECT_EQ(panels[0].series.at("lm_loss").front(), (std::pair<double, double>{1.0, 2.95}));
#ifdef ELASTIC_HAVE_CAIRO
    const std::string png = tmp("train.png");
    write_curve_panels(png, panels, "router training on tiny-model");
    const Png p = read_png(png);
    EXPECT_GE(p.width, 560);
    EXPECT_GE(p.height, 3 * 170);
    EXPECT_GT(count(p, 0x1f77b4), 20u);
    std::remove(png.c_str());
#endif
    // A warm start's --fit-log: no λ, an agreement per category (its own panel).
    {
        const std::string fit = tmp("fit.jsonl");
        {
            std::ofstream f(fit);
            for (int it = 0; it <= 10; ++it)
                f << "{\"step\": " << it << ", \"fit_loss\": " << 0.2 / (it + 1) << ", \"omega\": {\"sensitive\": 0.5}, "
                  << "\"target\": {\"sensitive\": 0.4}, \"agreement\": {\"sensitive\": " << 0.5 + 0.05 * it << "}}\n";
        }
        const std::vector<CurvePanel> fp = training_log_panels(fit);
        ASSERT_EQ(fp.size(), 3u);
        EXPECT_EQ(fp[0].ylabel, "loss");
        EXPECT_EQ(fp[1].ylabel, "Ω_MSR");
        EXPECT_EQ(fp[2].ylabel, "agreement");
        EXPECT_EQ(fp[2].series.at("agreement.sensitive").back(), (std::pair<double, double>{10.0, 1.0}));
        std::remove(fit.c_str());
    }
    std::ofstream(log, std::ios::app) << "not json\n";
    try {
        training_log_panels(log);
        ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(":31:"), std::string::npos) << e.what();
    }
    std::remove(log.c_str());
}

TEST(Plots, BadExtensionOrPathIsAnError) {
    NEED_CAIRO();
    for (const std::string& path : {tmp("map.jpg"), tmp("map"), std::string("/nonexistent-dir/map.png")}) {
        try {
            write_routing_map(path, mixed_plan(2, 2), kInfo);
            ADD_FAILURE() << "no error for " << path;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
            if (path.find("nonexistent") == std::string::npos) {
                EXPECT_NE(std::string(e.what()).find(".png or .svg"), std::string::npos) << e.what();
            }
        }
        EXPECT_THROW(write_score_plot(path, series_with_ci()), Error) << path;
    }
    EXPECT_THROW(write_score_plot("/nonexistent-dir/plot.svg", series_with_ci()), Error);
    EXPECT_THROW(write_score_plot(tmp("empty.png"), {}), Error);
    EXPECT_THROW(write_routing_map(tmp("empty.png"), {}, kInfo), Error);
}

TEST(Plots, WithoutCairoTheMessageSaysSo) {
#ifdef ELASTIC_HAVE_CAIRO
    GTEST_SKIP() << "built with cairo";
#else
    try {
        write_routing_map("x.png", mixed_plan(2, 2), kInfo);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("no cairo"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("x.png"), std::string::npos) << e.what();
    }
    EXPECT_THROW(write_score_plot("x.svg", series_with_ci()), Error);
#endif
}

TEST(ScorePlot, ScoreVsLengthCarriesTheResultsCI) {
    auto result = [](const std::string& family, int64_t len, double score, double ci) {
        TaskResult t;
        t.task = t.family = family;
        t.length = len;
        t.length_label = length_label(len);
        t.samples = 10;
        t.score = score;
        if (ci > 0) t.extra["ci95"] = ci;
        return t;
    };
    RunFile with{"ruler", "m", "fa-ssa", "cpu", {result("niah", 1024, 80, 6), result("qa", 1024, 60, 8)}};
    RunFile without{"ruler", "m", "full", "cpu", {result("niah", 1024, 90, 0), result("qa", 1024, 70, 0)}};
    const ScoreSeries s = score_vs_length(build_report({with, without}));
    ASSERT_EQ(s.at("fa-ssa").size(), 1u);
    EXPECT_DOUBLE_EQ(s.at("fa-ssa")[0].x, 1024);
    EXPECT_DOUBLE_EQ(s.at("fa-ssa")[0].y, 70);
    EXPECT_NEAR(s.at("fa-ssa")[0].ci, 5.0, 1e-12);  // sqrt(6² + 8²) / 2
    EXPECT_DOUBLE_EQ(s.at("full")[0].y, 80);
    EXPECT_EQ(s.at("full")[0].ci, 0);
}

// TaskAccumulator's 95 % interval: 1.96 standard errors (sample variance) in score units; the
// report's table prints it as "score ± ci" and adds Ω_MSR per family for rows that route.
TEST(Report, ConfidenceIntervalsAndOmegaPerFamily) {
    TaskAccumulator acc;
    acc.r.task = acc.r.family = "niah";
    acc.r.length = 2048;
    for (double x : {1.0, 0.0, 1.0, 1.0}) acc.add(x, 0.75, 0.5, 0.01, 2000, 0);
    TaskResult t = acc.finish();
    EXPECT_DOUBLE_EQ(t.score, 75.0);
    // sample sd = 0.5, se = 0.25: 1.96 · 0.25 · 100 = 49
    ASSERT_TRUE(t.extra.contains("ci95"));
    EXPECT_NEAR(t.extra["ci95"].get<double>(), 49.0, 1e-9);
    TaskAccumulator one;
    one.add(1.0, 0, 0, 0, 0, 0);
    EXPECT_FALSE(one.finish().extra.contains("ci95")) << "no interval from one sample";

    TaskResult u = t;
    u.task = u.family = "ppl";
    u.omega_msr = 0.95;
    RunFile routed{"ruler", "m", "fa-ssa", "cpu", {t, u}};
    TaskResult f = t;
    f.omega_msr = 0;
    f.extra = nlohmann::json::object();
    RunFile full{"ruler", "m", "full", "cpu", {f}};
    const std::string md = report_markdown(build_report({routed, full}));
    EXPECT_NE(md.find("| 75.00 ± 49.00 |"), std::string::npos) << md;
    EXPECT_NE(md.find("| Ω_MSR per family | niah | ppl |"), std::string::npos) << md;
    EXPECT_NE(md.find("| fa-ssa | 0.750 | 0.950 |"), std::string::npos) << md;
    EXPECT_EQ(md.find("| full | 0.000"), std::string::npos) << "full attention has no row in the Ω table\n" << md;

    // One mode with two routers (a warm start and the trained router): two rows named by router file;
    // a mode run with one router keeps its plain name.
    RunFile warm = routed, trained = routed;
    warm.router = "fit.safetensors";
    trained.router = "trained.safetensors";
    trained.results[0].score = 0.25;
    const Report two = build_report({warm, trained, full});
    ASSERT_EQ(two.rows.size(), 3u);
    EXPECT_EQ(two.rows[0], "fa-ssa (fit.safetensors)");
    EXPECT_EQ(two.rows[1], "fa-ssa (trained.safetensors)");
    EXPECT_EQ(two.rows[2], "full");
    EXPECT_EQ(build_report({trained, full}).rows[0], "fa-ssa");
}

namespace elastic::eval {
namespace {

// `eval compare`: per-sample scores read from the predictions, matched by (task, length, index);
// the paired difference per cell with 1.96 standard errors of the differences, and over the cells.
TEST(Compare, PairedDifferencesOverTheSameSamples) {
    auto run = [](const std::string& attention, const std::vector<double>& niah, const std::vector<double>& fwe) {
        nlohmann::json j = {{"command", "ruler"}, {"model", "m"}, {"attention", attention}, {"backend", "cpu"}};
        j["results"] = nlohmann::json::array();
        j["predictions"] = nlohmann::json::array();
        for (const auto& [task, v] : {std::pair<std::string, std::vector<double>>{"niah", niah}, {"fwe", fwe}}) {
            double m = 0;
            for (size_t i = 0; i < v.size(); ++i) {
                j["predictions"].push_back({{"task", task}, {"length", 2048}, {"index", i}, {"score", v[i]}, {"prediction", "x"}});
                m += v[i];
            }
            j["results"].push_back({{"task", task}, {"family", task}, {"length", 2048}, {"length_label", "2K"},
                                    {"samples", v.size()}, {"score", std::round(10000 * m / double(v.size())) / 100},
                                    {"metric", "m"}, {"higher_is_better", true}});
        }
        return parse_run_file(j.dump(), attention + ".json");
    };
    const RunFile a = run("fa-ssa", {1, 1, 0, 1}, {0.5, 1, 1});
    const RunFile b = run("static", {1, 0, 0, 0}, {0.5, 0.5, 1});
    ASSERT_EQ(a.samples.size(), 7u);
    const Paired p = compare_runs({a}, {b});
    ASSERT_EQ(p.cells.size(), 2u);
    const PairedCell& fwe = p.cells[0];  // cells in (task, length) order
    const PairedCell& niah = p.cells[1];
    EXPECT_EQ(niah.task, "niah");
    EXPECT_EQ(niah.n, 4);
    EXPECT_DOUBLE_EQ(niah.a, 75);
    EXPECT_DOUBLE_EQ(niah.b, 25);
    EXPECT_DOUBLE_EQ(niah.diff, 50);
    EXPECT_EQ(niah.wins, 2);
    EXPECT_EQ(niah.losses, 0);
    // differences 0, 100, 0, 100: sd = 57.735, se = 28.868, CI = 1.96 · se
    EXPECT_NEAR(niah.ci, 1.96 * std::sqrt(10000.0 / 3.0) / 2.0, 1e-9);
    // fwe: differences 0, 50, 0 (percent): mean 16.667, sd 28.868, se 16.667
    EXPECT_NEAR(fwe.diff, 50.0 / 3.0, 1e-9);
    EXPECT_NEAR(fwe.ci, 1.96 * std::sqrt(2500.0 / 3.0) / std::sqrt(3.0), 1e-9);
    EXPECT_NEAR(p.diff, (niah.diff + fwe.diff) / 2, 1e-12);
    EXPECT_NEAR(p.ci, std::sqrt(niah.ci * niah.ci + fwe.ci * fwe.ci) / 2, 1e-9);
    const std::string md = paired_markdown(p, "A", "B");
    EXPECT_NE(md.find("| niah | 2K | 4 | 75.00 | 25.00 | +50.00 ± 56.58 | 2 / 0 |"), std::string::npos) << md;
    // A run without predictions, and runs over other samples: one clear error each.
    RunFile bare = b;
    bare.samples.clear();
    auto error_of = [](auto&& f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(error_of([&] { compare_runs({a}, {bare}); }).find("run B has no per-sample scores"), std::string::npos);
    const RunFile shorter = run("static", {1, 0, 0}, {0.5, 0.5, 1});
    EXPECT_NE(error_of([&] { compare_runs({a}, {shorter}); }).find("niah at 2048: the runs scored different samples"),
              std::string::npos)
        << error_of([&] { compare_runs({a}, {shorter}); });
    RunFile off = a;
    off.results[0].score = 10;
    EXPECT_NE(error_of([&] { compare_runs({off}, {b}); }).find("average"), std::string::npos);
}

}  // namespace
}  // namespace elastic::eval
