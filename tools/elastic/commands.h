// Subcommands of the `elastic` binary. Each add_* registers its flags and a callback on the app;
// callbacks throw elastic::Error for user mistakes, which main() prints as one line (exit 1).
#pragma once
#include <CLI/CLI.hpp>

namespace elastic::cli {

void add_run(CLI::App& app);
void add_ppl(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_convert(CLI::App& app);
void add_bench(CLI::App& app);
void add_inspect(CLI::App& app);
void add_router_init(CLI::App& app);
void add_random_model(CLI::App& app);
void add_eval(CLI::App& app);
void add_data(CLI::App& app);  // cmd-data.cpp: router training mix
void add_train_router(CLI::App& app);  // cmd-train.cpp
void add_serve(CLI::App& app);         // cmd-serve.cpp
void add_bench_attention(CLI::App* bench);  // cmd-bench-attention.cpp
void add_bench_gemv(CLI::App* bench);       // cmd-bench-gemv.cpp
void add_bench_tp(CLI::App* bench);         // cmd-bench-tp.cpp
void add_bench_router(CLI::App* bench);     // cmd-bench-router.cpp
void add_eval_report(CLI::App* eval);      // cmd-eval-report.cpp
void add_eval_compare(CLI::App* eval);     // cmd-eval-report.cpp
// cmd-inspect-retrieval.cpp: per-head retrieval scores on NIAH samples, written for static:FILE.
void inspect_retrieval_scores(const std::string& model, const std::string& out, int samples, int64_t length, uint64_t seed,
                              bool aggregate_max, int threads);

// Shared helpers.
std::string read_file(const std::string& path);
bool stderr_is_tty();

}  // namespace elastic::cli
