// Score-versus-length line plot as a PNG, drawn by hand (lines, points, a 5x7 bitmap font for the
// axis labels and legend) and written with libpng.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace elastic::eval {

// series: name -> (x = length in tokens, y = score 0..100) points; x is drawn on a log2 axis.
void write_score_plot(const std::string& path, const std::map<std::string, std::vector<std::pair<double, double>>>& series,
                      const std::string& title = "SCORE VS LENGTH");

}  // namespace elastic::eval
