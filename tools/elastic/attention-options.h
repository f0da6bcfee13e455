// The attention flags shared by run, ppl, inspect and eval: --attention MODE, --router PATH,
// --sink, --local, --xa-block, --xa-threshold, --msr.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "attention/elastic.h"
#include "attention/router.h"

namespace elastic {
class Model;
}

namespace elastic::cli {

struct AttentionOptions {
    std::string mode;    // empty: fa-ssa when a router is available, else full
    std::string router;  // separate router file/dir; default: the model directory's own routers, if any
    int64_t sink = 128, local = 2048, xa_block = 128;
    double xa_threshold = 0.9;
    double msr = -1;

    void add_to(CLI::App* c);
    // Resolves the mode and loads the router (when the mode needs one, or for the default).
    AttentionSpec resolve(const Model& m, std::unique_ptr<Router>& router) const;
};

}  // namespace elastic::cli
