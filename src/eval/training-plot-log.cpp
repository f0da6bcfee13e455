// Reading a training log into curve panels (training-plot.h); needs no cairo.
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/training-plot.h"

namespace elastic::eval {

namespace {

void flatten(const nlohmann::json& j, const std::string& prefix, std::map<std::string, double>& out) {
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string name = prefix.empty() ? it.key() : prefix + "." + it.key();
        if (it->is_object()) flatten(*it, name, out);
        else if (it->is_number()) out[name] = it->get<double>();
    }
}

}  // namespace

std::vector<CurvePanel> training_log_panels(const std::string& log_path) {
    std::ifstream f(log_path);
    if (!f) fail("%s: cannot open the training log", log_path.c_str());
    std::vector<CurvePanel> panels(4);
    panels[0].ylabel = "loss";
    panels[1].ylabel = "Ω_MSR";
    panels[2].ylabel = "λ";
    panels[3].ylabel = "agreement";
    std::string line;
    int64_t lineno = 0;
    while (std::getline(f, line)) {
        ++lineno;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
            fail("%s:%lld: not JSON: %s", log_path.c_str(), (long long)lineno, e.what());
        }
        if (!j.is_object()) fail("%s:%lld: expected one JSON object per line", log_path.c_str(), (long long)lineno);
        std::map<std::string, double> v;
        flatten(j, "", v);
        const double x = v.count("step") ? v["step"] : double(lineno);
        for (const auto& [name, y] : v) {
            int panel = -1;
            if (name.find("loss") != std::string::npos) panel = 0;
            else if (name.rfind("omega", 0) == 0 || name.rfind("target", 0) == 0) panel = 1;
            else if (name.rfind("lambda", 0) == 0) panel = 2;
            else if (name.rfind("agreement", 0) == 0) panel = 3;
            if (panel < 0) continue;
            panels[size_t(panel)].series[name].push_back({x, y});
            if (name.rfind("target", 0) == 0) panels[size_t(panel)].dashed.insert(name);
        }
    }
    // λ exists only in training logs, the agreement only in a warm start's (--fit-log).
    std::vector<CurvePanel> drawn;
    for (auto& p : panels)
        if (!p.series.empty()) drawn.push_back(std::move(p));
    return drawn;
}

}  // namespace elastic::eval
