// The layer x KV-head routing map of one input as a PNG: one row per layer (layer 0 at the top),
// one column per KV head; FA cells dark red, SSA light blue, XA amber. Written with libpng.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "attention/plan.h"

namespace elastic {

// Writes an 8-bit RGB image (rgb: h rows of w pixels, 3 bytes each) as PNG; Error on failure.
void write_png_rgb(const std::string& path, int w, int h, const std::vector<uint8_t>& rgb);

// modes[layer][kv_head]. Throws Error when the file cannot be written.
void write_routing_png(const std::string& path, const std::vector<std::vector<HeadMode>>& modes, int cell_px = 18);

}  // namespace elastic
