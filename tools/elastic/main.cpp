// The `elastic` command: one binary, one subcommand per job (run, ppl, tokenize, convert, ...).
// User mistakes surface here as one line on stderr and exit code 1.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <new>
#include <sstream>

#include "commands.h"
#include "core/error.h"

namespace elastic::cli {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("%s: cannot open", path.c_str());
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) fail("%s: read error", path.c_str());
    return ss.str();
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }

}  // namespace elastic::cli

int main(int argc, char** argv) {
    CLI::App app{"elastic: long-context LLM engine with Elastic Attention"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "elastic 0.1.0");
    elastic::cli::add_run(app);
    elastic::cli::add_ppl(app);
    elastic::cli::add_tokenize(app);
    elastic::cli::add_convert(app);
    elastic::cli::add_bench(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        std::fprintf(stderr, "elastic: %s\n", e.what());
        return 1;
    } catch (const elastic::Error& e) {
        std::fprintf(stderr, "elastic: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "elastic: out of memory\n");
        return 1;
    }
    return 0;
}
