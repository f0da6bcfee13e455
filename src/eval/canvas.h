// What the routing map and the eval plot share (internal to src/eval, cairo builds only): a cairo
// surface whose format follows the file extension (.png or .svg), text drawn and measured with the
// toy font API, and the write to disk that reports failures as elastic::Error.
#pragma once
#include <cairo.h>

#include <cstdint>
#include <memory>
#include <string>

namespace elastic::eval {

enum class ImageFormat { PNG, SVG };

// From the extension, case-insensitive; anything else fails naming the path.
ImageFormat image_format(const std::string& path);

struct TextStyle {
    double size = 12;
    bool bold = false;
    double ax = 0;     // anchor: 0 = left, 0.5 = centre, 1 = right edge at x
    double ay = 0.5;   // 0 = top, 0.5 = middle, 1 = baseline at y
    double angle = 0;  // radians; kUp: reads bottom to top
};
constexpr double kUp = -1.5707963267948966;

void set_rgb(cairo_t* cr, uint32_t rgb);

// Text width in pixels with the canvas font (measured without a canvas).
double text_width(const std::string& s, double size, bool bold = false);

class Canvas {
public:
    // Width and height in pixels (SVG: in user units of the same size). title goes into the SVG's
    // <title> element, since cairo writes text as glyph outlines.
    Canvas(std::string path, int width, int height, std::string title);
    ~Canvas();
    Canvas(const Canvas&) = delete;
    Canvas& operator=(const Canvas&) = delete;

    cairo_t* cr() const { return cr_; }
    void text(double x, double y, const std::string& s, const TextStyle& st) const;
    void save();  // writes the file; Error when it cannot

private:
    std::string path_, title_;
    ImageFormat format_;
    std::string svg_;  // the SVG stream as cairo writes it
    cairo_surface_t* surface_ = nullptr;
    cairo_t* cr_ = nullptr;
};

}  // namespace elastic::eval
