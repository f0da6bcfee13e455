// Cairo surfaces by file extension, text placement, and writing PNG/SVG files (see canvas.h).
#include "eval/canvas.h"

#include <cairo-svg.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace elastic::eval {

namespace {

constexpr const char* kFont = "sans-serif";

cairo_status_t append(void* closure, const unsigned char* data, unsigned int n) {
    static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), n);
    return CAIRO_STATUS_SUCCESS;
}

void use_font(cairo_t* cr, double size, bool bold) {
    cairo_select_font_face(cr, kFont, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            default: out += c;
        }
    }
    return out;
}

void write_file(const std::string& path, const std::string& bytes) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) fail("%s: cannot write (%s)", path.c_str(), std::strerror(errno));
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    if (std::fclose(f) != 0 || !ok) fail("%s: write failed", path.c_str());
}

}  // namespace

ImageFormat image_format(const std::string& path) {
    const size_t dot = path.find_last_of('.');
    std::string ext = dot == std::string::npos ? "" : path.substr(dot + 1);
    for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (ext == "png") return ImageFormat::PNG;
    if (ext == "svg") return ImageFormat::SVG;
    fail("%s: unknown image type (the extension must be .png or .svg)", path.c_str());
}

void set_rgb(cairo_t* cr, uint32_t rgb) {
    cairo_set_source_rgb(cr, ((rgb >> 16) & 0xff) / 255.0, ((rgb >> 8) & 0xff) / 255.0, (rgb & 0xff) / 255.0);
}

double text_width(const std::string& s, double size, bool bold) {
    cairo_surface_t* surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 1, 1);
    cairo_t* cr = cairo_create(surf);
    use_font(cr, size, bold);
    cairo_text_extents_t te;
    cairo_text_extents(cr, s.c_str(), &te);
    cairo_destroy(cr);
    cairo_surface_destroy(surf);
    return te.x_advance;
}

Canvas::Canvas(std::string path, int width, int height, std::string title)
    : path_(std::move(path)), title_(std::move(title)), format_(image_format(path_)) {
    surface_ = format_ == ImageFormat::PNG ? cairo_image_surface_create(CAIRO_FORMAT_ARGB32, width, height)
                                           : cairo_svg_surface_create_for_stream(append, &svg_, width, height);
    cr_ = cairo_create(surface_);
    if (cairo_status(cr_) != CAIRO_STATUS_SUCCESS)
        fail("%s: cairo could not start (%s)", path_.c_str(), cairo_status_to_string(cairo_status(cr_)));
    cairo_set_source_rgb(cr_, 1, 1, 1);
    cairo_paint(cr_);
}

Canvas::~Canvas() {
    if (cr_) cairo_destroy(cr_);
    if (surface_) cairo_surface_destroy(surface_);
}

void Canvas::text(double x, double y, const std::string& s, const TextStyle& st) const {
    use_font(cr_, st.size, st.bold);
    cairo_text_extents_t te, cap;
    cairo_text_extents(cr_, s.c_str(), &te);
    cairo_text_extents(cr_, "H", &cap);
    const double dy = -cap.y_bearing * (1 - st.ay);  // from the anchor down to the baseline
    cairo_save(cr_);
    cairo_translate(cr_, x, y);
    cairo_rotate(cr_, st.angle);
    cairo_move_to(cr_, -st.ax * te.x_advance, dy);
    cairo_show_text(cr_, s.c_str());
    cairo_restore(cr_);
}

void Canvas::save() {
    if (cairo_status(cr_) != CAIRO_STATUS_SUCCESS)
        fail("%s: drawing failed (%s)", path_.c_str(), cairo_status_to_string(cairo_status(cr_)));
    std::string bytes;
    if (format_ == ImageFormat::PNG) {
        cairo_surface_flush(surface_);
        const cairo_status_t st = cairo_surface_write_to_png_stream(surface_, append, &bytes);
        if (st != CAIRO_STATUS_SUCCESS) fail("%s: PNG encoding failed (%s)", path_.c_str(), cairo_status_to_string(st));
    } else {
        cairo_surface_finish(surface_);
        const cairo_status_t st = cairo_surface_status(surface_);
        if (st != CAIRO_STATUS_SUCCESS) fail("%s: SVG output failed (%s)", path_.c_str(), cairo_status_to_string(st));
        bytes = svg_;
        const size_t open = bytes.find("<svg");
        const size_t end = open == std::string::npos ? open : bytes.find('>', open);
        if (end != std::string::npos) bytes.insert(end + 1, "\n<title>" + xml_escape(title_) + "</title>");
    }
    write_file(path_, bytes);
}

}  // namespace elastic::eval
