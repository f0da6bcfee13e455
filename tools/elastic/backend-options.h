// --backend cpu|cuda[:N] and --precision, shared by run, ppl, inspect, bench model and eval.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "model/backend.h"
#include "model/model.h"

namespace elastic::cli {

struct BackendOptions {
    std::string backend = "cpu";
    std::string precision = "auto";

    void add_to(CLI::App* c);
    // The chosen backend for model m (auto precision: f32 for models up to 2 B parameters, whose
    // fp32 weights cost little and keep the GPU within 1e-3 of the CPU; bf16 above). elastic::Error
    // when this build has no CUDA, the device is missing or the precision is unknown.
    std::unique_ptr<Backend> make(int threads, const Model& m) const;
    // Without a model (kernel benchmarks): auto means bf16.
    std::unique_ptr<Backend> make_for_shape(int threads) const;

private:
    std::unique_ptr<Backend> make_with(int threads, DType auto_precision) const;
};

}  // namespace elastic::cli
