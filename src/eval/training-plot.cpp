// Drawing of stacked curve panels (see training-plot.h): title, one plot area per panel with its
// own y range, grid and tick labels, the shared x axis labelled under the last panel, a legend to
// the right of each panel.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "eval/canvas.h"
#include "eval/training-plot.h"

namespace elastic::eval {

namespace {

constexpr uint32_t kInk = 0x262626, kGrid = 0xe3e3e3;
constexpr uint32_t kPalette[] = {0x1f77b4, 0xd62728, 0x2ca02c, 0xff7f0e, 0x9467bd, 0x8c564b, 0xe377c2, 0x17becf};
constexpr double kLabel = 11, kAxis = 12, kTitle = 16, kPad = 16, kPlotW = 560, kPlotH = 170, kGap = 26;

std::string tick(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3g", v);
    return b;
}

}  // namespace

void write_curve_panels(const std::string& path, const std::vector<CurvePanel>& all, const std::string& title,
                        const std::string& xlabel) {
    image_format(path);
    std::vector<const CurvePanel*> panels;
    double x0 = INFINITY, x1 = -INFINITY;
    for (const CurvePanel& p : all) {
        bool any = false;
        for (const auto& [name, pts] : p.series)
            for (const auto& [x, y] : pts)
                if (std::isfinite(x) && std::isfinite(y)) {
                    x0 = std::min(x0, x);
                    x1 = std::max(x1, x);
                    any = true;
                }
        if (any) panels.push_back(&p);
    }
    if (panels.empty()) fail("%s: nothing to plot (no numeric loss, omega or lambda fields)", path.c_str());
    if (x1 - x0 < 1e-12) x1 = x0 + 1;

    double legend_w = 0;
    for (const CurvePanel* p : panels)
        for (const auto& [name, pts] : p->series) legend_w = std::max(legend_w, 30 + text_width(name, kLabel));
    const double left = kPad + kAxis + 12 + text_width("-0.000", kLabel) + 8, top = kPad + kTitle + 18;
    const double legend_x = left + kPlotW + 24;
    const int W = int(std::ceil(std::max(legend_x + legend_w + kPad, left + text_width(title, kTitle, true) + kPad)));
    const double n = double(panels.size());
    const int H = int(std::ceil(top + n * kPlotH + (n - 1) * kGap + 8 + kLabel + 14 + kAxis + kPad));
    auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * kPlotW; };

    Canvas cv(path, W, H, title);
    cairo_t* cr = cv.cr();
    set_rgb(cr, kInk);
    cv.text(left + kPlotW / 2, kPad, title, {kTitle, true, 0.5, 0});
    int color = 0;
    for (size_t pi = 0; pi < panels.size(); ++pi) {
        const CurvePanel& p = *panels[pi];
        const double ptop = top + double(pi) * (kPlotH + kGap);
        double y0 = INFINITY, y1 = -INFINITY;
        for (const auto& [name, pts] : p.series)
            for (const auto& [x, y] : pts)
                if (std::isfinite(y)) y0 = std::min(y0, y), y1 = std::max(y1, y);
        const double span = y1 - y0 < 1e-12 ? std::max(1.0, std::fabs(y0)) : y1 - y0;
        y0 -= 0.05 * span;
        y1 += 0.05 * span;
        auto Y = [&](double y) { return ptop + kPlotH - (y - y0) / (y1 - y0) * kPlotH; };
        cairo_set_line_width(cr, 1);
        for (int t = 0; t <= 4; ++t) {
            const double v = y0 + (y1 - y0) * t / 4.0;
            set_rgb(cr, kGrid);
            cairo_move_to(cr, left, std::round(Y(v)) + 0.5);
            cairo_line_to(cr, left + kPlotW, std::round(Y(v)) + 0.5);
            cairo_stroke(cr);
            set_rgb(cr, kInk);
            cv.text(left - 7, Y(v), tick(v), {kLabel, false, 1, 0.5});
        }
        set_rgb(cr, kInk);
        cairo_move_to(cr, left + 0.5, ptop);
        cairo_line_to(cr, left + 0.5, ptop + kPlotH + 0.5);
        cairo_line_to(cr, left + kPlotW, ptop + kPlotH + 0.5);
        cairo_stroke(cr);
        cv.text(kPad + kAxis / 2, ptop + kPlotH / 2, p.ylabel, {kAxis, false, 0.5, 0.5, kUp});
        double ly = ptop + 6;
        std::map<std::string, uint32_t> by_key;  // "omega.robust" and "target.robust" share a colour
        for (const auto& [name, unsorted] : p.series) {
            auto pts = unsorted;
            std::sort(pts.begin(), pts.end());
            const bool dashed = p.dashed.count(name) > 0;
            const size_t dot = name.find('.');
            const std::string prefix = dot == std::string::npos ? name : name.substr(0, dot);
            const bool paired = prefix == "omega" || prefix == "target";  // λ1 and λ2 keep their own
            const std::string key = paired && dot != std::string::npos ? name.substr(dot + 1) : name;
            if (!by_key.count(key)) by_key[key] = kPalette[size_t(color++) % std::size(kPalette)];
            set_rgb(cr, by_key[key]);
            const double dash[] = {5, 4};
            cairo_set_dash(cr, dash, dashed ? 2 : 0, 0);
            cairo_set_line_width(cr, 1.8);
            cairo_new_path(cr);
            for (const auto& [x, y] : pts)
                if (std::isfinite(y)) cairo_line_to(cr, X(x), Y(y));
            cairo_stroke(cr);
            cairo_move_to(cr, legend_x, ly);
            cairo_line_to(cr, legend_x + 22, ly);
            cairo_stroke(cr);
            cairo_set_dash(cr, dash, 0, 0);
            set_rgb(cr, kInk);
            cv.text(legend_x + 30, ly, name, {kLabel, false, 0, 0.5});
            ly += 18;
        }
    }
    const double bottom = top + n * kPlotH + (n - 1) * kGap;
    set_rgb(cr, kInk);
    for (int t = 0; t <= 5; ++t) {
        const double v = x0 + (x1 - x0) * t / 5.0;
        cv.text(X(v), bottom + 8, tick(v), {kLabel, false, 0.5, 0});
    }
    cv.text(left + kPlotW / 2, bottom + 8 + kLabel + 14, xlabel, {kAxis, false, 0.5, 0});
    cv.save();
}

}  // namespace elastic::eval
