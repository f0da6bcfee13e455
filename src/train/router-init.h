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

// Data-dependent init: the router's input x (mean of the boundary keys) is a large component shared
// by every input plus a small input-dependent part (a few % of |x| for SmolLM2), so a plain init
// sees nearly the same x for every prompt and learns per-head biases. This folds a per-dimension
// standardisation of x into the first Linear, fe0(x) := fe0((x − μ) / σ) (weights w/σ, bias
// b − (w/σ)·μ), with μ, σ the mean and standard deviation of `rows` (n_rows × head_dim, e.g. the
// pooled keys of all KV heads of a layer over some training prompts); σ is floored at 1e-3 of its
// largest entry. The architecture and the file format stay those of the released routers.
// Returns the mean |x| of the rows (for the log). Error when n_rows < 2.
double router_standardize_input(RouterLayer& r, const float* rows, size_t n_rows);

}  // namespace elastic::train
