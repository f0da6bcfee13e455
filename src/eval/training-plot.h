// Training curves: stacked panels sharing one x axis (the step), each with named series, targets
// drawn dashed. `elastic train-router plot LOG --png F` draws a router-training log with it: the
// losses, Ω_MSR per task category against its target, and the Lagrange multipliers λ.
// Drawn with cairo as .png or .svg (by the file extension).
#pragma once
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace elastic::eval {

struct CurvePanel {
    std::string ylabel;
    std::map<std::string, std::vector<std::pair<double, double>>> series;  // name -> (x, y) points
    std::set<std::string> dashed;                                           // names drawn dashed (targets)
};

// Throws Error when no panel has a point, for an unknown extension, an unwritable path, or (no-cairo
// builds) always.
void write_curve_panels(const std::string& path, const std::vector<CurvePanel>& panels, const std::string& title,
                        const std::string& xlabel = "step");

// The panels of a training log: one JSON object per line; nested objects are flattened to dotted
// names ("omega.sensitive"); x is the field "step" (else the line number). Fields naming a loss go
// to the first panel, "omega*" and "target*" (dashed) to the second, "lambda*" to the third,
// "agreement*" (a warm start's --fit-log) to the fourth; other fields are left out, and so are panels
// without a point. Error naming the line for a line that is not a JSON object.
std::vector<CurvePanel> training_log_panels(const std::string& log_path);

}  // namespace elastic::eval
