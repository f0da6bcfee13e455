// The router-training loop (DESIGN.md §1.4; steps on any backend, see train-step.h): AdamW on the router tensors, gradient
// ascent on the per-category Lagrange multipliers λ1, λ2, cosine schedule with warm-up, global
// gradient-norm clipping, batches of B samples (gradients averaged) in a seeded shuffled order,
// checkpoints that resume bit-exactly, one JSON log line per step.
//
// Checkpoint directory (every file rewritten at each checkpoint; state.json last):
//   router.safetensors   router weights, fp32, released names model.layers.{l}.self_attn.mask_allocator.*
//   adam-m.safetensors   AdamW first moments, same names and shapes
//   adam-v.safetensors   AdamW second moments
//   state.json           format, step, total steps, λ1/λ2 per category, data order, position, epoch,
//                        the shuffle generator's state (std::mt19937_64 text form), last Ω per
//                        category, options
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "train/train-step.h"

namespace elastic::train {

struct TrainerOptions {
    StepOptions step;
    int64_t steps = 300;  // total optimizer steps (the schedule's length)
    int batch = 1;        // samples per step
    double lr = 5e-4;     // router peak learning rate
    double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8, weight_decay = 0.1;
    double warmup = 0.2;  // share of steps with linear warm-up
    double clip = 1.0;    // global gradient-norm limit (<= 0: none)
    double lambda_lr = 1e-3;
    double lambda_init = 0.0;
    double target[kCategories] = {0.7, 1.0};  // Ω_MSR targets: sensitive, robust
    uint64_t seed = 0;
    // Gumbel-sigmoid decisions: logistic noise on every router margin, temperature annealed
    // linearly from tau_start to tau_end over the first tau_share of the steps (DESIGN.md §1.4).
    bool gumbel = false;
    double tau_start = 1.5, tau_end = 1.0, tau_share = 0.6;
    // Data parallel: rank r computes the batch slots b with b % size == r; gradients, λ gradients
    // and the log's sums are all-reduced, and every rank applies the same update. Null: one rank.
    // The result is one rank's on the same batch up to the order of the gradient sums.
    dist::Communicator* comm = nullptr;
};

double temperature(const TrainerOptions& o, int64_t step);  // step 0-based; 1 without gumbel

struct TrainState {
    std::vector<RouterLayer> routers, adam_m, adam_v;
    double lambda1[kCategories] = {0, 0}, lambda2[kCategories] = {0, 0};
    int64_t step = 0;               // steps done
    int64_t schedule_steps = 0;     // load_checkpoint: the run's --steps (the schedule's length)
    std::vector<uint32_t> order;    // shuffled sample indices of the current epoch
    int64_t pos = 0, epoch = 0;     // next index into order
    std::string rng;                // std::mt19937_64 state, text form
    double last_omega[kCategories] = {-1, -1};  // Ω of the latest sample of each category (-1: none yet)
    int standardize = 0;  // samples of the data-dependent init (standardize_routers; 0: none), for the record
    std::string fit;      // the warm start's plan (fit_routers_to_plan; empty: none), for the record
};

// One step's report (averages over the batch; Ω and counts per category).
struct StepLog {
    int64_t step = 0;  // 1-based
    double lm_loss = 0, reg_loss = 0, lr = 0, grad_norm = 0, seconds = 0;
    double omega[kCategories] = {0, 0};
    int count[kCategories] = {0, 0};
    int64_t tokens = 0;
    double lambda1[kCategories] = {0, 0}, lambda2[kCategories] = {0, 0};  // after the update
    double target[kCategories] = {0, 0};  // the Ω targets (constant: drawn as lines by `plot`)
    double tau = 1;                       // the router's temperature at this step
    std::string json() const;
};

TrainState init_state(std::vector<RouterLayer> routers, const TrainerOptions& o, size_t n_samples);

// The routers' inputs over n samples spread evenly over data (indices i·|data|/n): for every layer,
// the pooled keys of all its KV heads, [layer][(sample·H + head)·head_dim + i], from the forward
// with the routers' own hard decisions (no noise), or with forced_full's when given (with
// forced_full_robust's for robust samples when that is given too). `categories`, when set, gets
// each collected sample's category, in order. on_sample, when set, is called after each sample with
// (samples done, n): a progress line for what can be a long step.
std::vector<std::vector<float>> collect_router_inputs(const Engine& engine, const std::vector<TrainSample>& data, int n,
                                                      const StepOptions& o, const std::vector<RouterLayer>& routers,
                                                      const std::vector<std::vector<uint8_t>>* forced_full = nullptr,
                                                      const std::vector<std::vector<uint8_t>>* forced_full_robust = nullptr,
                                                      std::vector<int>* categories = nullptr,
                                                      const std::function<void(int, int)>& on_sample = nullptr);

// Data-dependent init: router_standardize_input on every layer with its rows of `inputs`.
// Returns each layer's mean |x| before the fold.
std::vector<double> standardize_routers(const std::vector<std::vector<float>>& inputs, std::vector<RouterLayer>& routers);

// One point of the fit's curve: before the update of iteration `iter` (iter = iters: the end).
struct PlanFitPoint {
    int iter = 0;
    double mse = 0;                  // over all rows × heads
    std::vector<double> agreement;   // per plan: share of its samples' decisions on the target's side
    std::vector<double> omega;       // per plan: share of its samples' decisions that are sparse (Ω_MSR)
};

// Warm start from a fixed plan (e.g. the static retrieval-head set): fits every layer's router so
// that its FA probability on each row of `inputs` is `p_fa` for the heads with full[layer][head]
// = 1 and 1 − p_fa for the others (squared error on the probability, full-batch Adam, `iters`
// iterations at learning rate `lr`). p_fa < 1 leaves the margins finite (|m| = logit(p_fa)),
// so the straight-through gradient of training can still move them. Softmax variant only.
struct PlanFit {
    double agreement = 0;  // share of rows × heads whose hard decision equals the plan's
    double mse = 0;        // mean squared error of the probability at the end
    std::vector<double> plan_agreement;  // the agreement over the samples of each plan (fit_routers_to_plans)
    std::vector<double> plan_omega;      // the Ω_MSR of each plan's targets (share of targets below 1/2)
    std::vector<PlanFitPoint> curve;     // iterations 0..iters, summed over the layers
};
PlanFit fit_routers_to_plan(const std::vector<std::vector<float>>& inputs, const std::vector<std::vector<uint8_t>>& full,
                            double p_fa, int iters, double lr, std::vector<RouterLayer>& routers);
// The same with a plan per sample: sample s (in the order of `inputs`) is fitted to
// *plans[plan_of[s]]. With the static plan at a low Ω for sensitive samples and at a high Ω for
// robust ones, the routers start from the retrieval-head ranking and must tell the inputs apart
// to meet both (a supervised start of the adaptive routing the min-max objective asks for).
PlanFit fit_routers_to_plans(const std::vector<std::vector<float>>& inputs,
                             const std::vector<const std::vector<std::vector<uint8_t>>*>& plans,
                             const std::vector<int>& plan_of, double p_fa, int iters, double lr,
                             std::vector<RouterLayer>& routers);
// The general form: target FA probabilities per plan, [layer][head] each in (0, 1); a decision
// agrees when it is on the same side of 1/2 as its target. Graded targets (graded_static_targets)
// teach a router whose logits follow one ranking, so that the plans it makes are nested.
PlanFit fit_routers_to_targets(const std::vector<std::vector<float>>& inputs,
                               const std::vector<const std::vector<std::vector<float>>*>& targets,
                               const std::vector<int>& plan_of, int iters, double lr, std::vector<RouterLayer>& routers);
// Targets graded by a head ranking: with the heads of all layers ranked by `scores` (highest first,
// rank 0..N-1) and `plan` keeping its k heads FA, head h's target is sigmoid((k - 1/2 - rank_h) /
// (temp * N)). Heads above the plan's cut get P > 1/2, the rest P < 1/2, and the logit falls linearly
// with the rank: a fit to two such targets (sensitive at a low Ω, robust at a high one) makes the
// routers of an input in between keep the best-ranked heads, not an arbitrary mix of the two plans.
// A head whose side of 1/2 would disagree with `plan` (ties in the scores) gets 1/2 ± 0.05 on the
// plan's side.
std::vector<std::vector<float>> graded_static_targets(const std::vector<std::vector<float>>& scores,
                                                      const std::vector<std::vector<uint8_t>>& plan, double temp);

double learning_rate(const TrainerOptions& o, int64_t step);  // step 0-based

// One optimizer step over the next `batch` samples.
StepLog train_step_batch(const Engine& engine, const std::vector<TrainSample>& data, const TrainerOptions& o,
                         TrainState& st);

void save_checkpoint(const std::string& dir, const TrainState& st, const TrainerOptions& o);
// n_layer, head_dim: the model's (checked). Error naming the file when something is missing.
TrainState load_checkpoint(const std::string& dir, int n_layer, int head_dim, size_t n_samples);

struct LoopOptions {
    int64_t stop_at = -1;          // stop after this step (< 0: at o.steps); for tests and split runs
    std::string checkpoint_dir;    // empty: no checkpoints
    int64_t checkpoint_every = 0;  // also written at the end when checkpoint_dir is set
    std::string log_path;          // JSON lines, appended
    bool progress = false;         // a progress line on stderr
    std::function<void(const StepLog&)> on_step;  // called after each step
};

// Runs steps until o.steps (or stop_at); returns the last step's log.
StepLog train_loop(const Engine& engine, const std::vector<TrainSample>& data, const TrainerOptions& o,
                   const LoopOptions& lo, TrainState& st);

// Router weights with metadata (model, config, data hash, steps, Ω ...), released names; dtype F32,
// BF16 or F16 (a released router in bf16 is half the bytes; the router computes in fp32 either way).
void write_trained_router(const std::string& path, const std::vector<RouterLayer>& routers,
                          const std::vector<std::pair<std::string, std::string>>& metadata,
                          DType dtype = DType::F32);

}  // namespace elastic::train
