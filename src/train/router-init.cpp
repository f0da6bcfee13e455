// Untrained routers (see router-init.h).
#include "train/router-init.h"

#include <cmath>

namespace elastic::train {

namespace {

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

}  // namespace

RouterLayer router_layer_init(int head_dim, std::mt19937_64& rng, int n_out) {
    const int d = head_dim;
    RouterLayer r;
    r.fe0 = linear(d, 4 * d, rng);
    r.fe2 = linear(4 * d, d, rng);
    r.rh0 = linear(d, 4 * d, rng);
    r.rh2 = linear(4 * d, d, rng);
    r.rh4 = linear(d, n_out, rng);
    return r;
}

std::vector<RouterLayer> router_init(int n_layer, int head_dim, uint64_t seed, int n_out) {
    std::mt19937_64 rng(seed);
    std::vector<RouterLayer> layers;
    layers.reserve(size_t(n_layer));
    for (int l = 0; l < n_layer; ++l) layers.push_back(router_layer_init(head_dim, rng, n_out));
    return layers;
}

}  // namespace elastic::train
