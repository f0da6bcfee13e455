#include "attention/heatmap.h"

#include <png.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "core/error.h"

namespace elastic {

namespace {
struct Rgb { uint8_t r, g, b; };
constexpr Rgb kFA{178, 24, 43}, kSSA{146, 197, 222}, kXA{244, 165, 130}, kGrid{255, 255, 255};

Rgb color_of(HeadMode m) { return m == HeadMode::FA ? kFA : m == HeadMode::SSA ? kSSA : kXA; }
}  // namespace

void write_png_rgb(const std::string& path, int w, int h, const std::vector<uint8_t>& img) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
    if (!f) fail("%s: cannot write", path.c_str());
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        fail("%s: libpng could not start", path.c_str());
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fail("%s: libpng write error", path.c_str());
    }
    png_init_io(png, f.get());
    png_set_IHDR(png, info, png_uint_32(w), png_uint_32(h), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; ++y) png_write_row(png, &img[size_t(y) * size_t(w) * 3]);
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
}

void write_routing_png(const std::string& path, const std::vector<std::vector<HeadMode>>& modes, int cell) {
    if (modes.empty() || modes[0].empty()) fail("heatmap: nothing to draw");
    const int rows = int(modes.size()), cols = int(modes[0].size());
    const int cw = std::max(cell, 160 / cols), ch = cell;  // few heads: wider cells
    const int w = cols * cw + 1, h = rows * ch + 1;
    std::vector<uint8_t> img(size_t(w) * size_t(h) * 3, 255);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            Rgb c = kGrid;
            if (x % cw != 0 && y % ch != 0) {
                const int l = y / ch, k = x / cw;
                c = k < int(modes[size_t(l)].size()) ? color_of(modes[size_t(l)][size_t(k)]) : kGrid;
            }
            uint8_t* p = &img[(size_t(y) * size_t(w) + size_t(x)) * 3];
            p[0] = c.r;
            p[1] = c.g;
            p[2] = c.b;
        }
    write_png_rgb(path, w, h, img);
}

}  // namespace elastic
