// `elastic router-init`: writes untrained routers for a model (PyTorch's default Linear init,
// uniform in ±1/sqrt(fan_in), seeded). For trying the routed modes before routers are trained
// for a model: decisions depend on the input but carry no learned meaning.
#include <cstdio>

#include "attention/router.h"
#include "commands.h"
#include "core/error.h"
#include "model/model.h"
#include "train/router-init.h"

namespace elastic::cli {

namespace {

struct RouterInitOptions {
    std::string model, out;
    uint64_t seed = 0;
};

void router_init(const RouterInitOptions& o) {
    auto model = Model::load(o.model);
    const int d = model->config.head_dim;
    const std::vector<RouterLayer> layers = train::router_init(model->config.n_layer, d, o.seed);
    write_router_safetensors(o.out, layers);
    std::fprintf(stderr, "router-init: wrote %d untrained routers (head_dim %d, seed %llu) to %s\n", model->config.n_layer, d,
                 (unsigned long long)o.seed, o.out.c_str());
}

}  // namespace

void add_router_init(CLI::App& app) {
    auto o = std::make_shared<RouterInitOptions>();
    CLI::App* c = app.add_subcommand("router-init", "Write untrained (random) routers for a model");
    c->add_option("-m,--model", o->model, "GGUF file or HF directory")->required();
    c->add_option("-o,--out", o->out, "Output .safetensors file")->required();
    c->add_option("--seed", o->seed, "Random seed")->capture_default_str();
    c->callback([o] { router_init(*o); });
}

}  // namespace elastic::cli
