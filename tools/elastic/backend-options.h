// --backend cpu|cuda[:N], shared by run, ppl, inspect and bench model.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "model/backend.h"

namespace elastic::cli {

struct BackendOptions {
    std::string backend = "cpu";

    void add_to(CLI::App* c);
    // The chosen backend; elastic::Error when this build has no CUDA or the device is missing.
    std::unique_ptr<Backend> make(int threads) const;
};

}  // namespace elastic::cli
