// Score-versus-length plot of eval results: one line per series (attention mode) over a log2 axis
// of context lengths, scores 0..100, 95 % CI error bars where a point carries one, a legend and a
// title. Drawn with cairo as .png or .svg (by the file extension).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace elastic::eval {

struct ScorePoint {
    double x = 0;   // length in tokens
    double y = 0;   // score 0..100
    double ci = 0;  // half-width of the 95 % CI in score units; 0 = none (no bar)
};
using ScoreSeries = std::map<std::string, std::vector<ScorePoint>>;  // name -> points

// Throws Error when there is no point, for an unknown extension, an unwritable path, or (no-cairo
// builds) always.
void write_score_plot(const std::string& path, const ScoreSeries& series, const std::string& title = "Score vs context length");

}  // namespace elastic::eval
