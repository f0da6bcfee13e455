#include "eval/plot.h"


#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <set>

#include "attention/heatmap.h"
#include "core/error.h"
#include "eval/results.h"

namespace elastic::eval {

namespace {

struct Rgb { uint8_t r, g, b; };

// 5x7 glyphs, one byte per row, bit 4 = leftmost pixel. Lowercase is drawn as uppercase.
const uint8_t* glyph(char c) {
    static const struct { char c; uint8_t rows[7]; } font[] = {
        {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
        {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
        {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
        {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
        {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
        {'A', {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
        {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
        {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
        {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
        {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
        {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
        {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
        {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
        {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
        {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
        {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
        {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
        {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
        {'-', {0, 0, 0, 0x1F, 0, 0, 0}},                   {'.', {0, 0, 0, 0, 0, 0x0C, 0x0C}},
        {':', {0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0}},          {'/', {0, 0x01, 0x02, 0x04, 0x08, 0x10, 0}},
        {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
        {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}}, {'_', {0, 0, 0, 0, 0, 0, 0x1F}},
        {'+', {0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0}},       {',', {0, 0, 0, 0, 0x0C, 0x04, 0x08}},
        {'=', {0, 0, 0x1F, 0, 0x1F, 0, 0}},                {'*', {0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0}},
    };
    if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
    for (const auto& g : font)
        if (g.c == c) return g.rows;
    return nullptr;  // space and anything unknown: blank
}

class Canvas {
public:
    Canvas(int w, int h) : w_(w), h_(h), px_(size_t(w) * size_t(h) * 3, 255) {}
    void set(int x, int y, Rgb c) {
        if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
        uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
        p[0] = c.r;
        p[1] = c.g;
        p[2] = c.b;
    }
    void rect(int x0, int y0, int x1, int y1, Rgb c) {
        for (int y = y0; y <= y1; ++y)
            for (int x = x0; x <= x1; ++x) set(x, y, c);
    }
    void line(int x0, int y0, int x1, int y1, Rgb c, int thick = 1) {  // Bresenham
        int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1, err = dx + dy;
        for (;;) {
            rect(x0 - thick / 2, y0 - thick / 2, x0 + (thick - 1) / 2, y0 + (thick - 1) / 2, c);
            if (x0 == x1 && y0 == y1) break;
            const int e2 = 2 * err;
            if (e2 >= dy) { err += dy; x0 += sx; }
            if (e2 <= dx) { err += dx; y0 += sy; }
        }
    }
    // Text with its top-left corner at (x, y); scale 2 doubles every pixel. Returns the width drawn.
    int text(int x, int y, const std::string& s, Rgb c, int scale = 1) {
        for (size_t i = 0; i < s.size(); ++i)
            if (const uint8_t* g = glyph(s[i]))
                for (int r = 0; r < 7; ++r)
                    for (int b = 0; b < 5; ++b)
                        if (g[r] & (0x10 >> b)) rect(x + (int(i) * 6 + b) * scale, y + r * scale, x + (int(i) * 6 + b) * scale + scale - 1, y + r * scale + scale - 1, c);
        return int(s.size()) * 6 * scale;
    }
    static int text_width(const std::string& s, int scale = 1) { return int(s.size()) * 6 * scale; }
    void write(const std::string& path) const {
        write_png_rgb(path, w_, h_, px_);
    }

private:
    int w_, h_;
    std::vector<uint8_t> px_;
};

}  // namespace

void write_score_plot(const std::string& path, const std::map<std::string, std::vector<std::pair<double, double>>>& series,
                      const std::string& title) {
    static const Rgb palette[] = {{31, 119, 180}, {214, 39, 40}, {44, 160, 44}, {255, 127, 14},
                                  {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {23, 190, 207}};
    const Rgb ink{40, 40, 40}, grid{225, 225, 225};
    std::set<double> xs;
    for (const auto& [name, pts] : series)
        for (const auto& p : pts) xs.insert(p.first);
    if (xs.empty()) fail("plot: no score-versus-length points (only length-controlled, higher-is-better tasks are plotted)");
    int legend_w = 0;
    for (const auto& [name, pts] : series) legend_w = std::max(legend_w, Canvas::text_width(name));
    const int L = 56, R = 40 + legend_w + 24, T = 40, B = 48, PW = 520, PH = 320;
    Canvas cv(L + PW + R, T + PH + B);
    const double lx0 = std::log2(*xs.begin()), lx1 = std::log2(*xs.rbegin());
    auto X = [&](double x) {
        if (lx1 - lx0 < 1e-9) return L + PW / 2;
        return L + 20 + int(std::lround((std::log2(x) - lx0) / (lx1 - lx0) * (PW - 40)));
    };
    auto Y = [&](double y) { return T + PH - int(std::lround(std::clamp(y, 0.0, 100.0) / 100.0 * PH)); };
    for (int v = 0; v <= 100; v += 25) {
        cv.line(L, Y(v), L + PW, Y(v), grid);
        const std::string s = std::to_string(v);
        cv.text(L - 6 - Canvas::text_width(s), Y(v) - 3, s, ink);
    }
    for (double x : xs) {
        cv.line(X(x), T, X(x), T + PH, grid);
        const std::string s = length_label(int64_t(x));
        cv.text(X(x) - Canvas::text_width(s) / 2, T + PH + 8, s, ink);
    }
    cv.line(L, T, L, T + PH, ink);
    cv.line(L, T + PH, L + PW, T + PH, ink);
    cv.text(L, 12, title, ink, 2);
    cv.text(L + PW / 2 - Canvas::text_width("CONTEXT LENGTH (TOKENS)") / 2, T + PH + 28, "CONTEXT LENGTH (TOKENS)", ink);
    cv.text(6, T - 14, "SCORE", ink);
    int i = 0;
    for (const auto& [name, pts] : series) {
        const Rgb c = palette[i % 8];
        for (size_t k = 0; k + 1 < pts.size(); ++k) cv.line(X(pts[k].first), Y(pts[k].second), X(pts[k + 1].first), Y(pts[k + 1].second), c, 2);
        for (const auto& p : pts) cv.rect(X(p.first) - 3, Y(p.second) - 3, X(p.first) + 3, Y(p.second) + 3, c);
        const int ly = T + 8 + i * 16;
        cv.rect(L + PW + 20, ly, L + PW + 32, ly + 6, c);
        cv.text(L + PW + 38, ly, name, ink);
        ++i;
    }
    cv.write(path);
}

}  // namespace elastic::eval
