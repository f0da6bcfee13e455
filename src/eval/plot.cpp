// Layout and drawing of the score-versus-length plot (see plot.h): title, plot area with grid and
// tick labels, lines with markers and CI bars, legend to the right.
#include "eval/plot.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "eval/canvas.h"
#include "eval/results.h"

namespace elastic::eval {

namespace {

constexpr uint32_t kInk = 0x262626, kMuted = 0x5a5a5a, kGrid = 0xe3e3e3;
constexpr uint32_t kPalette[] = {0x1f77b4, 0xd62728, 0x2ca02c, 0xff7f0e, 0x9467bd, 0x8c564b, 0xe377c2, 0x17becf};
constexpr double kLabel = 11, kAxis = 12, kTitle = 16, kPad = 16, kPlotW = 560, kPlotH = 320, kInset = 28;
constexpr double kTwoPi = 6.283185307179586;

}  // namespace

void write_score_plot(const std::string& path, const ScoreSeries& series, const std::string& title) {
    image_format(path);
    std::set<double> xs;
    bool any_ci = false;
    for (const auto& [name, pts] : series)
        for (const auto& p : pts) {
            if (p.x > 0) xs.insert(p.x);
            any_ci |= p.ci > 0;
        }
    if (xs.empty())
        fail("%s: no score-versus-length points to plot (only length-controlled, higher-is-better tasks are plotted)", path.c_str());

    const double left = kPad + kAxis + 12 + text_width("100", kLabel) + 8;
    const double top = kPad + kTitle + 18, bottom = 8 + kLabel + 14 + kAxis + kPad;
    double legend_w = 0;
    for (const auto& [name, pts] : series) legend_w = std::max(legend_w, 30 + text_width(name, kLabel));
    if (any_ci) legend_w = std::max(legend_w, text_width("bars: 95 % CI", kLabel));
    const double legend_x = left + kPlotW + 24;
    const double legend_h = 20.0 * double(series.size() + (any_ci ? 1 : 0));
    const int W = int(std::ceil(std::max(legend_x + legend_w + kPad, left + text_width(title, kTitle, true) + kPad)));
    const int H = int(std::ceil(top + std::max(kPlotH + bottom, legend_h + kPad)));

    const double lx0 = std::log2(*xs.begin()), lx1 = std::log2(*xs.rbegin());
    auto X = [&](double x) {
        if (lx1 - lx0 < 1e-9) return left + kPlotW / 2;
        return left + kInset + (std::log2(x) - lx0) / (lx1 - lx0) * (kPlotW - 2 * kInset);
    };
    auto Y = [&](double y) { return top + kPlotH - std::clamp(y, 0.0, 100.0) / 100.0 * kPlotH; };

    Canvas cv(path, W, H, title);
    cairo_t* cr = cv.cr();
    cairo_set_line_width(cr, 1);
    for (int v = 0; v <= 100; v += 20) {
        set_rgb(cr, kGrid);
        cairo_move_to(cr, left, std::round(Y(v)) + 0.5);
        cairo_line_to(cr, left + kPlotW, std::round(Y(v)) + 0.5);
        cairo_stroke(cr);
        set_rgb(cr, kInk);
        cv.text(left - 7, Y(v), std::to_string(v), {kLabel, false, 1, 0.5});
    }
    double last_right = -1e9;
    for (double x : xs) {
        const double px = std::round(X(x)) + 0.5;
        set_rgb(cr, kGrid);
        cairo_move_to(cr, px, top);
        cairo_line_to(cr, px, top + kPlotH);
        cairo_stroke(cr);
        const std::string s = length_label(int64_t(x));
        const double w = text_width(s, kLabel);
        if (px - w / 2 < last_right + 6) continue;
        last_right = px + w / 2;
        set_rgb(cr, kInk);
        cairo_move_to(cr, px, top + kPlotH);
        cairo_line_to(cr, px, top + kPlotH + 4);
        cairo_stroke(cr);
        cv.text(px, top + kPlotH + 8, s, {kLabel, false, 0.5, 0});
    }
    set_rgb(cr, kInk);
    cairo_move_to(cr, left + 0.5, top);
    cairo_line_to(cr, left + 0.5, top + kPlotH + 0.5);
    cairo_line_to(cr, left + kPlotW, top + kPlotH + 0.5);
    cairo_stroke(cr);
    cv.text(left + kPlotW / 2, top + kPlotH + 8 + kLabel + 14, "context length (tokens, log scale)", {kAxis, false, 0.5, 0});
    cv.text(kPad + kAxis / 2, top + kPlotH / 2, "score (0-100)", {kAxis, false, 0.5, 0.5, kUp});
    cv.text(left + kPlotW / 2, kPad, title, {kTitle, true, 0.5, 0});

    const double n = double(series.size());
    int i = 0;
    double ly = top + 6;
    for (const auto& [name, unsorted] : series) {
        std::vector<ScorePoint> pts = unsorted;
        std::sort(pts.begin(), pts.end(), [](const ScorePoint& a, const ScorePoint& b) { return a.x < b.x; });
        pts.erase(std::remove_if(pts.begin(), pts.end(), [](const ScorePoint& p) { return !(p.x > 0); }), pts.end());
        const double dodge = any_ci ? (i - (n - 1) / 2) * 5 : 0;  // keeps overlapping bars apart
        const uint32_t color = kPalette[size_t(i) % std::size(kPalette)];
        set_rgb(cr, color);
        cairo_set_line_width(cr, 1.3);
        for (const auto& p : pts) {
            if (p.ci <= 0) continue;
            const double px = X(p.x) + dodge, y0 = Y(p.y - p.ci), y1 = Y(p.y + p.ci);
            cairo_move_to(cr, px, y0);
            cairo_line_to(cr, px, y1);
            cairo_move_to(cr, px - 4, y0);
            cairo_line_to(cr, px + 4, y0);
            cairo_move_to(cr, px - 4, y1);
            cairo_line_to(cr, px + 4, y1);
        }
        cairo_stroke(cr);
        cairo_set_line_width(cr, 2);
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
        for (const auto& p : pts) cairo_line_to(cr, X(p.x) + dodge, Y(p.y));  // no current point: moves
        cairo_stroke(cr);
        for (const auto& p : pts) {
            cairo_arc(cr, X(p.x) + dodge, Y(p.y), 3.5, 0, kTwoPi);
            cairo_fill(cr);
        }
        cairo_move_to(cr, legend_x, ly);
        cairo_line_to(cr, legend_x + 22, ly);
        cairo_stroke(cr);
        cairo_arc(cr, legend_x + 11, ly, 3.5, 0, kTwoPi);
        cairo_fill(cr);
        set_rgb(cr, kInk);
        cv.text(legend_x + 30, ly, name, {kLabel, false, 0, 0.5});
        ly += 20;
        ++i;
    }
    if (any_ci) {
        set_rgb(cr, kMuted);
        cv.text(legend_x, ly, "bars: 95 % CI", {kLabel, false, 0, 0.5});
    }
    cv.save();
}

}  // namespace elastic::eval
