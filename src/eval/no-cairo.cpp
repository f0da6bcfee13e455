// The routing map and the eval plot in a build without cairo (CMake found no libcairo2-dev): both
// fail with a message saying how to get them.
#include "core/error.h"
#include "eval/plot.h"
#include "eval/training-plot.h"
#include "eval/routing-map.h"

namespace elastic::eval {

namespace {
[[noreturn]] void no_cairo(const std::string& path) {
    fail("this build has no cairo (install libcairo2-dev and rebuild); cannot draw %s", path.c_str());
}
}  // namespace

void write_routing_map(const std::string& path, const std::vector<std::vector<HeadMode>>&, const RoutingMapInfo&,
                       const std::vector<std::vector<float>>&) {
    no_cairo(path);
}

void write_score_plot(const std::string& path, const ScoreSeries&, const std::string&) { no_cairo(path); }

void write_curve_panels(const std::string& path, const std::vector<CurvePanel>&, const std::string&, const std::string&) {
    no_cairo(path);
}

}  // namespace elastic::eval
