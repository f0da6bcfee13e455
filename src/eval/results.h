// The JSON every `elastic eval` command prints, and its reading back for `elastic eval report`.
//   {"command": "ruler", "model": ..., "attention": "fa-ssa", "backend": "cpu", "seed": 0,
//    "results": [{"task", "family", "length", "length_label", "samples", "score", "metric",
//                 "higher_is_better", "omega_msr", "omega_esr", "prefill_seconds", "prompt_tokens",
//                 "decode_seconds", "extra": {...}}],
//    "predictions": [...]}           // per sample, with --save-predictions
// score: RULER and LongBench in percent (0-100); perplexity as is (lower is better).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace elastic::eval {

struct TaskResult {
    std::string task, family, metric;
    int64_t length = 0;        // target tokens; 0 = not length-controlled (LongBench)
    std::string length_label;  // "1K", "0-4k", "all"
    int samples = 0;
    double score = 0;
    bool higher_is_better = true;
    double omega_msr = 0, omega_esr = 0;  // means over samples
    double prefill_seconds = 0;           // mean per sample
    double prompt_tokens = 0, decode_seconds = 0;
    nlohmann::json extra = nlohmann::json::object();
};

// Accumulates per-sample numbers into one TaskResult (means), then finish() sets the score.
struct TaskAccumulator {
    TaskResult r;
    double score_sum = 0, score_sq = 0;
    void add(double score, double msr, double esr, double prefill_s, double prompt_tokens, double decode_s);
    // score = scale · mean(score); extra "ci95" = scale · 1.96 · standard error (two samples or more)
    TaskResult finish(double scale = 100.0) const;
};

std::string length_label(int64_t length);  // 1024 -> "1K", 1536 -> "1.5K", 131072 -> "128K"

// One sample's score from a run's "predictions" (`eval --predictions`), in the 0-1 units of the
// prediction (the result's score is 100 × their mean for percent metrics).
struct SampleScore {
    std::string task;
    int64_t length = 0, index = 0;
    double score = 0;
};

struct RunFile {
    std::string command, model, attention, backend;
    std::vector<TaskResult> results;
    bool complete = true;  // false: written by `eval -o` while the run was still going
    std::string router = "";  // the router file's name, for routed modes given --router ("" otherwise)
    std::vector<SampleScore> samples = {};  // the predictions that carry a score (empty without --predictions)
};
nlohmann::json to_json(const TaskResult& r);
TaskResult task_result_from_json(const nlohmann::json& j);
// Reads one eval JSON file (throws Error naming the file when it is not one).
RunFile read_run_file(const std::string& path);
RunFile parse_run_file(const std::string& text, const std::string& path);  // the file's text; path for errors

}  // namespace elastic::eval
