// The routing map of one input: a layer x KV-head grid of attention modes (layer 0 at the top),
// coloured FA dark red, SSA light blue, XA amber, with axes, a legend and a title naming the model,
// the prompt length and Ω_MSR / Ω_ESR. Drawn with cairo as .png or .svg (by the file extension).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "attention/plan.h"

namespace elastic::eval {

struct RoutingMapInfo {
    std::string model;
    int64_t tokens = 0;
    double omega_msr = 0, omega_esr = 0;
    std::string attention;  // e.g. "fa-ssa"; optional
};

// 0xRRGGBB of a cell at full confidence.
constexpr uint32_t routing_map_color(HeadMode m) {
    return m == HeadMode::FA ? 0xb2182b : m == HeadMode::SSA ? 0x92c5de : 0xf4a582;
}

// modes[layer][kv_head]. prob_fa[layer][kv_head] (optional; empty or empty rows: no router) is
// printed in the cells that have room, and shades them: the nearer P(FA) is to 0.5, the paler.
// Throws Error for an unknown extension, an unwritable path, or (no-cairo builds) always.
void write_routing_map(const std::string& path, const std::vector<std::vector<HeadMode>>& modes,
                       const RoutingMapInfo& info, const std::vector<std::vector<float>>& prob_fa = {});

}  // namespace elastic::eval
