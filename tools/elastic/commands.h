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
void add_bench_attention(CLI::App* bench);  // cmd-bench-attention.cpp

// Shared helpers.
std::string read_file(const std::string& path);
bool stderr_is_tty();

}  // namespace elastic::cli
