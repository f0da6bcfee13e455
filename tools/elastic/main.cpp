// The `elastic` command: one binary, one subcommand per job (run, ppl, tokenize, convert, ...).
// User mistakes surface here as one line on stderr and exit code 1.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
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

// How OpenMP threads wait between parallel regions. Spinning without end collapses when another
// process shares the cores (decode of SmolLM2 on this 2-core machine: 1.3 tok/s with two spinning
// threads beside a compiler); sleeping at once (OMP_WAIT_POLICY=PASSIVE, our earlier default) pays
// a futex wake-up for each of the ~300 parallel regions of a decode token, a quarter of decode's
// time in the kernel. A short bounded spin keeps both: decode 37 -> 90 tok/s on the quiet machine
// and the same as PASSIVE beside two CPU-bound processes (docs/performance.md, "OpenMP wait").
// libgomp reads these before main(), so when the user has set neither we set GOMP_SPINCOUNT and
// re-execute.
static void prefer_short_spin_openmp(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
    setenv("GOMP_SPINCOUNT", "10000", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run with the default policy
}

int main(int argc, char** argv) {
    prefer_short_spin_openmp(argv);
    CLI::App app{"elastic: long-context LLM engine with Elastic Attention"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "elastic 0.1.0");
    elastic::cli::add_run(app);
    elastic::cli::add_ppl(app);
    elastic::cli::add_tokenize(app);
    elastic::cli::add_convert(app);
    elastic::cli::add_bench(app);
    elastic::cli::add_inspect(app);
    elastic::cli::add_router_init(app);
    elastic::cli::add_random_model(app);
    elastic::cli::add_eval(app);
    elastic::cli::add_data(app);
    elastic::cli::add_train_router(app);
    elastic::cli::add_serve(app);
    if (argc > 1 && argv[1][0] != '-') {
        std::string names;
        bool known = false;
        for (const CLI::App* sub : app.get_subcommands({})) {
            names += (names.empty() ? "" : ", ") + sub->get_name();
            known |= sub->get_name() == argv[1];
        }
        if (!known) {
            std::fprintf(stderr, "elastic: unknown command '%s' (commands: %s)\n", argv[1], names.c_str());
            return 1;
        }
    }
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
