// Layout and drawing of the routing map (see routing-map.h): title block, the grid with its axes,
// the legend to the right of the grid.
#include "eval/routing-map.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "eval/canvas.h"

namespace elastic::eval {

namespace {

constexpr uint32_t kInk = 0x262626, kMuted = 0x5a5a5a;
constexpr double kLabel = 11, kAxis = 12, kTitle = 15, kSub = 12, kPad = 16;

// Smallest of 1, 2, 5, 10, 20, ... items between labels that leaves need_px per label.
int label_step(double px_per_item, double need_px) {
    for (int s = 1;; s *= 10)
        for (int m : {1, 2, 5})
            if (s * m * px_per_item >= need_px) return s * m;
}

uint32_t toward_white(uint32_t rgb, double t) {  // t = 1: rgb, t = 0: white
    uint32_t out = 0;
    for (int sh = 0; sh <= 16; sh += 8) {
        const double c = double((rgb >> sh) & 0xff);
        out |= uint32_t(std::lround(255 - (255 - c) * t)) << sh;
    }
    return out;
}

bool is_dark(uint32_t rgb) {
    return 0.299 * ((rgb >> 16) & 0xff) + 0.587 * ((rgb >> 8) & 0xff) + 0.114 * (rgb & 0xff) < 140;
}

std::string thousands(int64_t n) {
    std::string s = std::to_string(n);
    for (int i = int(s.size()) - 3; i > (n < 0 ? 1 : 0); i -= 3) s.insert(size_t(i), ",");
    return s;
}

}  // namespace

void write_routing_map(const std::string& path, const std::vector<std::vector<HeadMode>>& modes,
                       const RoutingMapInfo& info, const std::vector<std::vector<float>>& prob_fa) {
    image_format(path);
    size_t cols = 0;
    for (const auto& row : modes) cols = std::max(cols, row.size());
    if (modes.empty() || cols == 0) fail("%s: the routing map has no layers or heads to draw", path.c_str());
    const int R = int(modes.size()), C = int(cols);
    const bool has_prob = std::any_of(prob_fa.begin(), prob_fa.end(), [](const auto& r) { return !r.empty(); });

    const int cw = std::clamp(420 / C, 16, 56), ch = std::clamp(540 / R, 8, 22);
    const int grid_w = C * cw, grid_h = R * ch;
    const int ystep = label_step(ch, kLabel + 3);
    const int xstep = label_step(cw, text_width(std::to_string(C - 1), kLabel) + 8);
    const bool cell_numbers = has_prob && cw >= 32 && ch >= 13;

    const std::string title = "Routing map: " + info.model + (info.attention.empty() ? "" : ", attention " + info.attention);
    char sub[160];
    std::snprintf(sub, sizeof sub, "%s tokens  ·  Ω_MSR %.3f  ·  Ω_ESR %.3f", thousands(info.tokens).c_str(),
                  info.omega_msr, info.omega_esr);

    int count[3] = {0, 0, 0};
    for (const auto& row : modes)
        for (HeadMode m : row) ++count[int(m)];
    const HeadMode order[3] = {HeadMode::FA, HeadMode::SSA, HeadMode::XA};
    const char* meaning[3] = {"full attention", "streaming sparse", "XAttention block-sparse"};
    std::vector<std::string> legend;
    for (int i = 0; i < 3; ++i)
        legend.push_back(std::string(head_mode_name(order[i])) + "  " + meaning[i] + " (" + std::to_string(count[int(order[i])]) + ")");
    std::vector<std::string> notes;
    if (has_prob && cell_numbers) notes = {"numbers: the router's P(FA);", "paler = P(FA) nearer 0.5"};
    else if (has_prob) notes = {"paler = the router's P(FA)", "nearer 0.5"};

    const double left = kPad + kAxis + 10 + text_width(std::to_string(R - 1), kLabel) + 6;
    const double top = kPad + kTitle + 10 + kSub + 22;
    const double bottom = 6 + kLabel + 12 + kAxis + kPad;
    double legend_w = text_width("Attention mode (KV heads)", kAxis, true);
    for (const auto& s : legend) legend_w = std::max(legend_w, 22 + text_width(s, kLabel));
    for (const auto& s : notes) legend_w = std::max(legend_w, text_width(s, kLabel));
    const double legend_x = std::round(left) + grid_w + 28, legend_h = 22 + 22 * 3 + 18.0 * double(notes.size());
    const double title_w = std::max(text_width(title, kTitle, true), text_width(sub, kSub));
    const int W = int(std::ceil(std::max(legend_x + legend_w + kPad, 2 * kPad + title_w)));
    const int H = int(std::ceil(top + std::max(double(grid_h) + bottom, legend_h + kPad)));

    Canvas cv(path, W, H, title + " (" + sub + ")");
    cairo_t* cr = cv.cr();
    set_rgb(cr, kInk);
    cv.text(kPad, kPad, title, {kTitle, true, 0, 0});
    set_rgb(cr, kMuted);
    cv.text(kPad, kPad + kTitle + 10, sub, {kSub, false, 0, 0});

    const double gx = std::round(left), gy = std::round(top);
    for (int l = 0; l < R; ++l)
        for (int k = 0; k < int(modes[size_t(l)].size()); ++k) {
            uint32_t c = routing_map_color(modes[size_t(l)][size_t(k)]);
            const bool prob_here = size_t(l) < prob_fa.size() && size_t(k) < prob_fa[size_t(l)].size();
            const double p = prob_here ? double(prob_fa[size_t(l)][size_t(k)]) : 0.0;
            if (prob_here) c = toward_white(c, 0.55 + 0.45 * std::min(1.0, std::fabs(2 * p - 1)));
            set_rgb(cr, c);
            cairo_rectangle(cr, gx + k * cw, gy + l * ch, cw - 1, ch - 1);
            cairo_fill(cr);
            if (cell_numbers && prob_here) {
                char buf[16];
                std::snprintf(buf, sizeof buf, "%.2f", p);
                set_rgb(cr, is_dark(c) ? 0xffffff : kInk);
                cv.text(gx + k * cw + (cw - 1) / 2.0, gy + l * ch + (ch - 1) / 2.0, buf, {std::min(10.0, ch - 4.0), false, 0.5, 0.5});
            }
        }

    set_rgb(cr, kInk);
    cairo_set_line_width(cr, 1);
    for (int l = 0; l < R; l += ystep) {
        const double y = gy + l * ch + (ch - 1) / 2.0;
        cairo_move_to(cr, gx - 5, std::floor(y) + 0.5);
        cairo_line_to(cr, gx - 1, std::floor(y) + 0.5);
        cairo_stroke(cr);
        cv.text(gx - 7, y, std::to_string(l), {kLabel, false, 1, 0.5});
    }
    for (int k = 0; k < C; k += xstep) {
        const double x = gx + k * cw + (cw - 1) / 2.0;
        cairo_move_to(cr, std::floor(x) + 0.5, gy + grid_h);
        cairo_line_to(cr, std::floor(x) + 0.5, gy + grid_h + 4);
        cairo_stroke(cr);
        cv.text(x, gy + grid_h + 7, std::to_string(k), {kLabel, false, 0.5, 0});
    }
    cv.text(gx + grid_w / 2.0, gy + grid_h + 6 + kLabel + 12, "KV head", {kAxis, false, 0.5, 0});
    cv.text(kPad + kAxis / 2, gy + grid_h / 2.0, "layer", {kAxis, false, 0.5, 0.5, kUp});

    double ly = gy;
    cv.text(legend_x, ly, "Attention mode (KV heads)", {kAxis, true, 0, 0});
    ly += 22;
    for (int i = 0; i < 3; ++i, ly += 22) {
        set_rgb(cr, routing_map_color(order[i]));
        cairo_rectangle(cr, legend_x, ly - 1, 14, 14);
        cairo_fill(cr);
        set_rgb(cr, kInk);
        cv.text(legend_x + 22, ly + 6, legend[size_t(i)], {kLabel, false, 0, 0.5});
    }
    set_rgb(cr, kMuted);
    for (const auto& s : notes) {
        cv.text(legend_x, ly + 6, s, {kLabel, false, 0, 0.5});
        ly += 18;
    }
    cv.save();
}

}  // namespace elastic::eval
