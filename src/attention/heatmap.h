// The layer x KV-head routing map of one input as a PNG: one row per layer (layer 0 at the top),
// one column per KV head; FA cells dark red, SSA light blue, XA amber. Written with libpng.
#pragma once
#include <string>
#include <vector>

#include "attention/plan.h"

namespace elastic {

// modes[layer][kv_head]. Throws Error when the file cannot be written.
void write_routing_png(const std::string& path, const std::vector<std::vector<HeadMode>>& modes, int cell_px = 18);

}  // namespace elastic
