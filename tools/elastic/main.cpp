// The `elastic` command: one binary, one subcommand per job (run, ppl, tokenize, convert, ...).
// User mistakes surface here as one line on stderr and exit code 1.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "core/error.h"

int main(int argc, char** argv) {
    CLI::App app{"elastic: long-context LLM engine with Elastic Attention"};
    app.require_subcommand(0, 1);
    app.set_version_flag("--version", "elastic 0.1.0");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 1;
    }
    return 0;
}
