// Untrained routers (see router-init.h).
#include "train/router-init.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

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

double router_standardize_input(RouterLayer& r, const float* rows, size_t n_rows) {
    const int d = r.fe0.in;
    if (n_rows < 2) fail("router standardisation: %zu pooled rows (need at least 2)", n_rows);
    std::vector<double> mu(size_t(d), 0.0), var(size_t(d), 0.0);
    double norm = 0;
    for (size_t i = 0; i < n_rows; ++i) {
        double n2 = 0;
        for (int j = 0; j < d; ++j) {
            const double x = rows[i * size_t(d) + size_t(j)];
            mu[size_t(j)] += x;
            n2 += x * x;
        }
        norm += std::sqrt(n2);
    }
    for (double& m : mu) m /= double(n_rows);
    for (size_t i = 0; i < n_rows; ++i)
        for (int j = 0; j < d; ++j) {
            const double e = rows[i * size_t(d) + size_t(j)] - mu[size_t(j)];
            var[size_t(j)] += e * e;
        }
    std::vector<double> sd(static_cast<size_t>(d));
    double sd_max = 0;
    for (int j = 0; j < d; ++j) sd_max = std::max(sd_max, sd[size_t(j)] = std::sqrt(var[size_t(j)] / double(n_rows)));
    if (!(sd_max > 0)) fail("router standardisation: the %zu pooled rows are all equal", n_rows);
    for (double& s : sd) s = std::max(s, 1e-3 * sd_max);
    for (int o = 0; o < r.fe0.out; ++o) {
        float* w = r.fe0.w.data() + size_t(o) * size_t(d);
        double shift = 0;
        for (int j = 0; j < d; ++j) {
            const double wj = double(w[j]) / sd[size_t(j)];
            w[j] = float(wj);
            shift += double(w[j]) * mu[size_t(j)];
        }
        r.fe0.b[size_t(o)] = float(double(r.fe0.b[size_t(o)]) - shift);
    }
    return norm / double(n_rows);
}

}  // namespace elastic::train
