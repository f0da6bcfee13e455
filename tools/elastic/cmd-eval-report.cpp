// `elastic eval report FILES... [--png FILE]`: one Markdown table (stdout) from the JSON of several
// eval runs, and optionally the score-versus-length plot (.png or .svg).
// `elastic eval compare -a A.json... -b B.json...`: two runs compared sample by sample.
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "eval/plot.h"
#include "eval/report.h"

namespace elastic::cli {

void add_eval_report(CLI::App* ev) {
    struct Options {
        std::vector<std::string> files;
        std::string png;
    };
    auto o = std::make_shared<Options>();
    CLI::App* c = ev->add_subcommand("report", "Merge `elastic eval ... --json` results into a Markdown table (and a plot)");
    c->add_option("files", o->files, "Result JSON files")->required();
    c->add_option("--png", o->png, "Also draw score versus length per attention mode (.png or .svg by the extension)");
    c->callback([o] {
        std::vector<eval::RunFile> runs;
        for (const auto& f : o->files) {
            runs.push_back(eval::read_run_file(f));
            if (!runs.back().complete)
                std::fprintf(stderr, "eval report: %s is a partial run (%zu task x length results so far)\n", f.c_str(),
                             runs.back().results.size());
        }
        const eval::Report rep = eval::build_report(runs);
        std::printf("%s", eval::report_markdown(rep).c_str());
        if (!o->png.empty()) eval::write_score_plot(o->png, eval::score_vs_length(rep));
    });
}

void add_eval_compare(CLI::App* ev) {
    struct Options {
        std::vector<std::string> a, b;
    };
    auto o = std::make_shared<Options>();
    CLI::App* c = ev->add_subcommand(
        "compare", "Compare two runs sample by sample (both with --predictions): paired differences with 95 % CIs");
    c->add_option("-a", o->a, "Result JSON files of run A (e.g. its ruler and robust files)")->required();
    c->add_option("-b", o->b, "Result JSON files of run B, over the same samples")->required();
    c->callback([o] {
        auto read = [](const std::vector<std::string>& files, std::string& name) {
            std::vector<eval::RunFile> runs;
            for (const auto& f : files) {
                runs.push_back(eval::read_run_file(f));
                if (name.empty())
                    name = runs.back().attention + (runs.back().router.empty() ? "" : " (" + runs.back().router + ")");
            }
            return runs;
        };
        std::string na, nb;
        const auto ra = read(o->a, na);
        const auto rb = read(o->b, nb);
        std::printf("%s", eval::paired_markdown(eval::compare_runs(ra, rb), na, nb).c_str());
    });
}

}  // namespace elastic::cli
