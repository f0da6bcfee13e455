// `elastic router-init`: writes untrained routers for a model (PyTorch's default Linear init,
// uniform in ±1/sqrt(fan_in), seeded). For trying the routed modes before routers are trained
// for a model: decisions depend on the input but carry no learned meaning.
#include <cmath>
#include <cstdio>
#include <random>

#include "attention/router.h"
#include "commands.h"
#include "core/error.h"
#include "model/model.h"

namespace elastic::cli {

namespace {

struct RouterInitOptions {
    std::string model, out;
    uint64_t seed = 0;
};

RouterLinear linear(int in, int out, std::mt19937_64& rng) {
    RouterLinear l;
    l.in = in;
    l.out = out;
    const float bound = 1.0f / std::sqrt(float(in));
    std::uniform_real_distribution<float> u(-bound, bound);
    l.w.resize(size_t(in) * size_t(out));
    l.b.resize(size_t(out));
    for (float& x : l.w) x = u(rng);
    for (float& x : l.b) x = u(rng);
    return l;
}

void router_init(const RouterInitOptions& o) {
    auto model = Model::load(o.model);
    const int d = model->config.head_dim;
    std::mt19937_64 rng(o.seed);
    std::vector<RouterLayer> layers;
    for (int l = 0; l < model->config.n_layer; ++l) {
        RouterLayer r;
        r.fe0 = linear(d, 4 * d, rng);
        r.fe2 = linear(4 * d, d, rng);
        r.rh0 = linear(d, 4 * d, rng);
        r.rh2 = linear(4 * d, d, rng);
        r.rh4 = linear(d, 2, rng);
        layers.push_back(std::move(r));
    }
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
