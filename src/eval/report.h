// `elastic eval report`: merges result files into one Markdown table (rows = attention modes,
// columns = task family x length, each score ± its 95 % CI where the results carry one, then mean
// Ω_MSR, Ω_ESR and prefill speed-up against `full`; a second table gives Ω_MSR per task family)
// and the data of the score-versus-length plot.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "eval/plot.h"
#include "eval/results.h"

namespace elastic::eval {

struct Report {
    struct Column {
        std::string family, label;
        int64_t length = 0;
        bool higher_is_better = true;
    };
    std::vector<std::string> rows;  // attention modes (prefixed by the model when several)
    std::vector<Column> columns;
    // cells[row][col]: mean score of the family's tasks at that length (NaN: not run)
    std::vector<std::vector<double>> cells;
    // ci[row][col]: half-width of the cell's 95 % CI, from the results' extra "ci95" (score units),
    // combined as for a mean of independent estimates; 0 unless every result of the cell carries one
    std::vector<std::vector<double>> ci;
    std::vector<double> omega_msr, omega_esr, speedup;  // per row; speedup NaN when no full run matches
    // Mean Ω_MSR per row and task family (all lengths): whether a router adapts to the input.
    std::vector<std::string> families;
    std::vector<std::vector<double>> family_msr;  // [row][family], NaN when not run
};

Report build_report(const std::vector<RunFile>& runs);
std::string report_markdown(const Report& r);

// `elastic eval compare A B`: two runs over the same samples (both with --predictions; the same
// seed, tasks and lengths give the same prompts), compared sample by sample. Per task × length
// present in both: the mean scores, the mean paired difference A − B with its 95 % CI (1.96
// standard errors of the differences) and the samples A wins / loses. Over all cells: the
// difference of the mean of the cells' scores (RULER's score), its CI combining the cells' as
// independent. Scores in the results' units (percent: 100 × the per-sample 0-1 score). Throws Error
// when a run has no per-sample scores, the two share no cell, or a shared cell's samples differ.
struct PairedCell {
    std::string task;
    int64_t length = 0;
    int n = 0, wins = 0, losses = 0;
    double a = 0, b = 0, diff = 0, ci = 0;
};
struct Paired {
    std::vector<PairedCell> cells;
    double a = 0, b = 0, diff = 0, ci = 0;  // over the cells
};
Paired compare_runs(const std::vector<RunFile>& a, const std::vector<RunFile>& b);
std::string paired_markdown(const Paired& p, const std::string& name_a, const std::string& name_b);

// Series for the plot: per row, (length, mean score over the higher-is-better families at that
// length, its 95 % CI half-width or 0).
ScoreSeries score_vs_length(const Report& r);

}  // namespace elastic::eval
