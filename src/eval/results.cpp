#include "eval/results.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace elastic::eval {

void TaskAccumulator::add(double score, double msr, double esr, double prefill_s, double prompt_tokens, double decode_s) {
    ++r.samples;
    score_sum += score;
    score_sq += score * score;
    r.omega_msr += msr;
    r.omega_esr += esr;
    r.prefill_seconds += prefill_s;
    r.prompt_tokens += prompt_tokens;
    r.decode_seconds += decode_s;
}

TaskResult TaskAccumulator::finish(double scale) const {
    TaskResult o = r;
    const double n = std::max(1, r.samples);
    o.score = std::round(scale * score_sum / n * 100.0) / 100.0;
    o.omega_msr /= n;
    o.omega_esr /= n;
    o.prefill_seconds /= n;
    o.prompt_tokens /= n;
    o.decode_seconds /= n;
    if (o.length_label.empty()) o.length_label = length_label(o.length);
    if (r.samples >= 2) {  // normal approximation: 1.96 standard errors of the mean (sample variance)
        const double mean = score_sum / n, var = std::max(0.0, (score_sq - n * mean * mean) / (n - 1));
        o.extra["ci95"] = std::round(scale * 1.96 * std::sqrt(var / n) * 100.0) / 100.0;
    }
    return o;
}

std::string length_label(int64_t length) {
    if (length <= 0) return "all";
    char buf[32];
    if (length % 1024 == 0) {
        std::snprintf(buf, sizeof buf, "%lldK", (long long)(length / 1024));
    } else if (length >= 1024) {
        std::snprintf(buf, sizeof buf, "%.1fK", double(length) / 1024.0);
    } else {
        std::snprintf(buf, sizeof buf, "%lld", (long long)length);
    }
    return buf;
}

nlohmann::json to_json(const TaskResult& r) {
    return {{"task", r.task},
            {"family", r.family},
            {"metric", r.metric},
            {"length", r.length},
            {"length_label", r.length_label},
            {"samples", r.samples},
            {"score", r.score},
            {"higher_is_better", r.higher_is_better},
            {"omega_msr", r.omega_msr},
            {"omega_esr", r.omega_esr},
            {"prefill_seconds", r.prefill_seconds},
            {"prompt_tokens", r.prompt_tokens},
            {"decode_seconds", r.decode_seconds},
            {"extra", r.extra}};
}

TaskResult task_result_from_json(const nlohmann::json& j) {
    TaskResult r;
    r.task = j.at("task").get<std::string>();
    r.family = j.value("family", r.task);
    r.metric = j.value("metric", "");
    r.length = j.value("length", int64_t(0));
    r.length_label = j.value("length_label", length_label(r.length));
    r.samples = j.value("samples", 0);
    r.score = j.at("score").get<double>();
    r.higher_is_better = j.value("higher_is_better", true);
    r.omega_msr = j.value("omega_msr", 0.0);
    r.omega_esr = j.value("omega_esr", 0.0);
    r.prefill_seconds = j.value("prefill_seconds", 0.0);
    r.prompt_tokens = j.value("prompt_tokens", 0.0);
    r.decode_seconds = j.value("decode_seconds", 0.0);
    if (j.contains("extra")) r.extra = j["extra"];
    return r;
}

RunFile read_run_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) fail("%s: cannot open", path.c_str());
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_run_file(ss.str(), path);
}

RunFile parse_run_file(const std::string& text, const std::string& path) {
    RunFile f;
    try {
        const nlohmann::json j = nlohmann::json::parse(text);
        f.command = j.value("command", "");
        f.model = j.value("model", "");
        f.attention = j.at("attention").get<std::string>();
        f.backend = j.value("backend", "");
        f.router = j.value("router", "");
        f.complete = !j.contains("complete") || !j["complete"].is_boolean() || j["complete"].get<bool>();
        for (const auto& r : j.at("results")) f.results.push_back(task_result_from_json(r));
        if (j.contains("predictions") && j["predictions"].is_array())
            for (const auto& p : j["predictions"])
                if (p.is_object() && p.contains("score") && p["score"].is_number())
                    f.samples.push_back({p.at("task").get<std::string>(), p.at("length").get<int64_t>(),
                                         p.at("index").get<int64_t>(), p["score"].get<double>()});
    } catch (const nlohmann::json::exception& e) {
        fail("%s: not an `elastic eval` result file: %s", path.c_str(), e.what());
    }
    return f;
}

}  // namespace elastic::eval
