// One training step of the routers on a backend for one sample (DESIGN.md §1.4): forward over all
// layers with BOTH attention paths of every KV head mixed by the router's straight-through z,
// loss = CE(answer tokens) + λ1·|Ω − t| + λ2·(Ω − t)², and the backward through the frozen
// backbone (activation gradients only) into the router tensors. Activation checkpointing: the
// forward keeps only each layer's input residual; the backward recomputes a layer from it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "attention/plan.h"
#include "attention/router.h"
#include "model/model.h"

namespace elastic::train {

// {mode of FA-routed heads}-{mode of SA-routed heads} (DESIGN.md §1.2).
enum class TrainConfig { FA_SSA, FA_XA, XA_SSA };
TrainConfig parse_train_config(const std::string& s);  // "fa-ssa" | "fa-xa" | "xa-ssa"; Error otherwise
const char* train_config_name(TrainConfig c);

enum Category { kSensitive = 0, kRobust = 1, kCategories = 2 };
const char* category_name(int c);

struct StepOptions {
    TrainConfig config = TrainConfig::FA_SSA;
    StreamingWindow win;  // SSA heads
    XAParams xa;          // XA heads (block lists from cpu::xa_fill_plan on the layer's q, k)
    // Test only: the forward uses the router's soft probability as z instead of the hard 0/1
    // decision, so the loss is a smooth function of the router weights (finite differences).
    bool soft_forward = false;
    // Gumbel-sigmoid decisions (router-backward.cpp, RouterNoise): temperature, and the key of this
    // sample's noise (0: none). Noise of layer l, head h is a function of (noise_key, l, h) only,
    // so a step is reproducible and a resumed run draws what the uninterrupted one drew.
    float tau = 1.0f;
    uint64_t noise_key = 0;
    // If set, the forward appends each layer's router input (the pooled pre-RoPE keys, [H_kv, d])
    // to (*pooled)[layer] (resized to n_layer): the statistics of router_standardize_input.
    std::vector<std::vector<float>>* pooled = nullptr;
    // If set, every layer's decisions are forced_full[layer][head] (1 = FA side) instead of the
    // router's (the router still runs; no gradient reaches it): the forward of a fixed plan, for
    // collecting router inputs under the plan a fit aims at (fit_routers_to_plan).
    const std::vector<std::vector<uint8_t>>* forced_full = nullptr;
};

// The logistic draw (Gumbel1 − Gumbel2) of layer l, head h for a noise key.
float router_noise(uint64_t key, int layer, int head);

// tokens = prompt + answer; targets[t] = tokens[t + 1] where that token is an answer token, else -1.
struct TrainSample {
    std::vector<int32_t> tokens;   // [T]
    std::vector<int32_t> targets;  // [T]
    int category = kSensitive;
    int64_t line = 0;  // line of the data file (0: not from a file)
    // Rows the router pools over: the prompt's (0: all of tokens). At inference the router decides
    // at prefill from the prompt alone, so training conditions it on the same rows, not on the answer.
    int64_t prompt_len = 0;
};
TrainSample make_sample(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer, int category);

struct StepResult {
    double lm_loss = 0;   // mean CE over the answer tokens
    double reg_loss = 0;  // λ1·|Ω − t| + λ2·(Ω − t)²
    double omega = 0;     // Ω_MSR = 1 − mean z over all layers' KV heads (forward value)
    double dlambda1 = 0, dlambda2 = 0;  // ∂loss/∂λ: |Ω − t|, (Ω − t)² (ascent directions)
    int64_t answer_tokens = 0;
    // Fingerprint of every layer's XA block lists (FNV-1a; 0 when no head is XA). The lists are
    // picked from q and k with no gradient through the choice, so the loss steps where they change:
    // finite-difference checks compare it to tell a step from a slope.
    uint64_t xa_selection = 0;
};

// One sample's step on the engine's backend (the backbone's weights are the engine's; a GPU
// backend must hold them in F32). routers [n_layer] (softmax variant) run on the host from the
// downloaded pre-RoPE keys; grads [n_layer] shaped like routers (router_zero_grads): dloss/dθ is
// ADDED to them.
StepResult train_step(const Engine& engine, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
                      double lambda2, double target, const StepOptions& o, std::vector<RouterLayer>& grads);

// The loss only (forward, no gradients): for finite-difference checks.
StepResult train_loss(const Engine& engine, const std::vector<RouterLayer>& routers, const TrainSample& s, double lambda1,
                      double lambda2, double target, const StepOptions& o);

}  // namespace elastic::train
