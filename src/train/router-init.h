// Untrained routers: PyTorch's default Linear init (weight and bias uniform in ±1/sqrt(fan_in)),
// seeded, with the released shapes (hidden widths 4d). Used by `elastic router-init` and as the
// starting point of `elastic train-router`.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "attention/router.h"

namespace elastic::train {

// One layer's router; draws fe0, fe2, rh0, rh2, rh4 in that order (weights, then bias) from rng.
// n_out 2: the softmax variant; 1: the sigmoid variant (Linear(d,1) + LayerNorm over heads).
RouterLayer router_layer_init(int head_dim, std::mt19937_64& rng, int n_out = 2);

// n_layer routers from one generator seeded with `seed` (layer 0 first).
std::vector<RouterLayer> router_init(int n_layer, int head_dim, uint64_t seed, int n_out = 2);

}  // namespace elastic::train
