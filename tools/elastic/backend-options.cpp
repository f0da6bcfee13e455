#include "backend-options.h"

#include "core/error.h"

namespace elastic::cli {

void BackendOptions::add_to(CLI::App* c) {
    c->add_option("--backend", backend, "cpu, or cuda / cuda:N for GPU N (bf16 weights and GEMMs)")->capture_default_str();
}

std::unique_ptr<Backend> BackendOptions::make(int threads) const {
    if (backend == "cpu") return make_cpu_backend(threads);
    if (backend.rfind("cuda", 0) != 0) fail("--backend: '%s' is not cpu, cuda or cuda:N", backend.c_str());
    int device = 0;
    if (backend.size() > 4) {
        size_t used = 0;
        try {
            if (backend[4] != ':') throw std::invalid_argument(backend);
            device = std::stoi(backend.substr(5), &used);
            if (used != backend.size() - 5 || device < 0) throw std::invalid_argument(backend);
        } catch (const std::exception&) {
            fail("--backend: '%s' is not cuda:N with N a device number", backend.c_str());
        }
    }
#ifdef ELASTIC_HAVE_CUDA
    return make_cuda_backend(device);
#else
    (void)device;
    fail("--backend %s: this build has no CUDA backend (configure with the cuda-release preset: make cuda)",
         backend.c_str());
#endif
}

}  // namespace elastic::cli
