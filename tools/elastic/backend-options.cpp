#include "backend-options.h"

#include "core/error.h"

namespace elastic::cli {

void BackendOptions::add_to(CLI::App* c) {
    c->add_option("--backend", backend, "cpu, or cuda / cuda:N for GPU N")->capture_default_str();
    c->add_option("--precision", precision,
                  "CUDA weights/GEMM/attention precision: bf16 | f16 | f32 | auto (f32 up to 2B parameters, else bf16)")
        ->capture_default_str();
}

namespace {
double parameter_count(const ModelConfig& c) {
    const double d = c.d_model, q = double(c.n_head) * c.head_dim, kv = double(c.n_kv_head) * c.head_dim;
    const double layer = d * (2 * q + 2 * kv) + 3 * d * c.d_ff;
    return c.n_layer * layer + double(c.vocab) * d * (c.tie_embeddings ? 1 : 2);
}
}  // namespace

std::unique_ptr<Backend> BackendOptions::make(int threads, const Model& m) const {
    return make_with(threads, precision == "auto" && parameter_count(m.config) <= 2e9 ? DType::F32 : DType::BF16);
}

std::unique_ptr<Backend> BackendOptions::make_for_shape(int threads) const { return make_with(threads, DType::BF16); }

std::unique_ptr<Backend> BackendOptions::make_with(int threads, DType auto_precision) const {
    DType prec = auto_precision;
    if (precision == "bf16") prec = DType::BF16;
    else if (precision == "f16") prec = DType::F16;
    else if (precision == "f32") prec = DType::F32;
    else if (precision != "auto") fail("--precision: '%s' is not bf16, f16, f32 or auto", precision.c_str());
    if (backend == "cpu") {
        if (precision != "auto") fail("--precision applies to --backend cuda (the CPU backend computes in fp32)");
        return make_cpu_backend(threads);
    }
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
    return make_cuda_backend(device, prec);
}

}  // namespace elastic::cli
