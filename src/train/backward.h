// CPU reference backward passes for router training (DESIGN.md §1.4): activation gradients only,
// the backbone is frozen, so no op here produces a gradient of a model weight. Plain fp32 with
// OpenMP; these are the specification later fast CPU and CUDA versions are checked against, and
// tests/test-backward.cpp holds each of them to central finite differences in fp64.
//   ops-backward.cpp        rms_norm, rope, swiglu, matmul (dx), chunked cross-entropy
//   attention-backward.cpp  hybrid attention forward with log-sum-exp, its FlashAttention-2-style
//                           backward, and the mixed FA/SA attention of training
//   router-backward.cpp     the router (softmax variant) with kept activations and its backward
// Functions that call OpenBLAS inside OpenMP regions need it single-threaded (as cpu::matmul).
#pragma once
#include <cstdint>
#include <vector>

#include "attention/plan.h"
#include "attention/router.h"
#include "model/backend.h"
#include "model/weights.h"

namespace elastic::train {

// ---- elementwise and linear ops (ops-backward.cpp) ----

// y = x / sqrt(mean(x^2) + eps) * w, row by row. x, dy, dx [rows, dim]; w [dim].
// accumulate: dx += gradient (residual streams sum several gradients); otherwise dx = gradient.
void rms_norm_backward(const float* x, const float* w, const float* dy, float* dx, int64_t rows, int64_t dim, float eps,
                       bool accumulate = false);

// The inverse rotation of cpu::rope (HF rotate_half), in place. dx [T, n_heads, head_dim].
void rope_backward(float* dx, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq);

// out = silu(gate) * up. gate, up, dout, dgate, dup [n]; dgate/dup are written.
void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n);

// For y = x @ W^T (cpu::matmul): dx = dy @ W. W [rows, cols] of any stored type; dy [T, W.rows];
// dx [T, W.cols], written or (accumulate) added to.
void matmul_dx(const Weight& W, const float* dy, float* dx, int64_t T, bool accumulate = false);

// Cross-entropy of logits = h @ W^T against targets, and dh = d(mean loss)/dh.
// h, dh [T, D] (h after the final norm; dh written, zero on ignored rows); W [vocab, D];
// targets [T], -1 = ignored. Counted rows are processed chunk_rows at a time, so the only logits
// buffer is [chunk_rows, vocab].
CrossEntropy cross_entropy_chunked(const Weight& W, const float* h, const int32_t* targets, int64_t T, float* dh,
                                   int64_t chunk_rows = 256);

// ---- attention (attention-backward.cpp) ----


// Forward of the hybrid plan (mask = plan_allows) that also keeps the natural-log log-sum-exp of
// each row's scaled scores. q, out [T, n_head, d]; k, v [T, n_kv_head, d]; lse [T, n_head].
void attn_forward_lse(const AttnShape& s, const LayerPlan& plan, const float* q, const float* k, const float* v,
                      float* out, float* lse);

// FlashAttention-2 backward of attn_forward_lse: scores recomputed tile by tile, no [T, T] buffer.
// o, lse from the forward; dout [T, n_head, d]. dq [T, n_head, d], dk, dv [T, n_kv_head, d] are
// ADDED to (a KV head's gradient sums over the query heads of its group). coef [n_kv_head]
// (nullptr: all 1) scales the gradients of each KV head's group; heads with coef 0 are skipped.
void attn_backward(const AttnShape& s, const LayerPlan& plan, const float* q, const float* k, const float* v,
                   const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv,
                   const float* coef = nullptr);

// The mixed attention of training: for KV head g and its query heads,
//   out = z[g] * O_FA + (1 - z[g]) * O_SA
// with O_FA in mode FA and O_SA in the mode `sparse` gives head g (SSA or XA). z [n_kv_head]
// (hard 0/1 in value; any real value is accepted). o_fa, o_sa, out [T, n_head, d];
// lse_fa, lse_sa [T, n_head]; all written.
void mixed_attention_forward(const AttnShape& s, const LayerPlan& sparse, const float* q, const float* k,
                             const float* v, const float* z, float* o_fa, float* o_sa, float* lse_fa, float* lse_sa,
                             float* out);

// Backward of mixed_attention_forward. dq, dk, dv are ADDED to; dz [n_kv_head] is written:
// dz[g] = sum over the group's query heads and rows of <dout, O_FA - O_SA>. The side a head's z
// weights by exactly 0 is skipped.
void mixed_attention_backward(const AttnShape& s, const LayerPlan& sparse, const float* q, const float* k,
                              const float* v, const float* z, const float* o_fa, const float* o_sa, const float* lse_fa,
                              const float* lse_sa, const float* dout, float* dq, float* dk, float* dv, float* dz);

// ---- router (router-backward.cpp) ----

// Gumbel noise on the router's decision (DESIGN.md §1.4, the sigmoid variant's option; accepted for
// both): with margin m (softmax: logit1 − logit0; sigmoid: the LayerNorm output) the decision is
//   soft = sigmoid((m + g) / tau),  hard = (m + g > 0),  g = Gumbel1 − Gumbel2 (a logistic draw).
// Without noise and at tau 1 this is the plain router (softmax(logits)[1] = sigmoid(l1 − l0)).
struct RouterNoise {
    float tau = 1.0f;
    std::vector<float> logistic;  // [H] g per head, or empty: none
};

// The router's forward on one sequence with what its backward needs (both variants).
struct RouterActs {
    int64_t T = 0;
    int n_kv_head = 0, head_dim = 0, window = 0;
    std::vector<float> x;       // [H, d] pooled pre-RoPE keys
    std::vector<float> a1, h1;  // [H, fe0.out] fe0 pre-activation, SiLU of it
    std::vector<float> f;       // [H, fe2.out] task feature
    std::vector<float> a2, h2;  // [H, rh0.out]
    std::vector<float> a3, h3;  // [H, rh2.out]
    std::vector<float> logits;  // [H, rh4.out]: 2 (softmax) or 1 (sigmoid, before the LayerNorm)
    std::vector<float> margin;  // [H] l1 − l0, or the LayerNorm output over the layer's heads
    double ln_inv = 1;          // sigmoid variant: 1 / sqrt(var + 1e-5) of the LayerNorm
    RouterNoise noise;
    std::vector<float> soft;    // [H] sigmoid((margin + g) / tau)
    std::vector<float> z;       // [H] straight-through decision: hard in value (1 = FA), gradient of soft
};

// k_prerope [T, n_kv_head, head_dim]; window as Router::window().
RouterActs router_forward(const RouterLayer& r, const float* k_prerope, int64_t T, int n_kv_head, int head_dim,
                          int window, const RouterNoise& noise = {});

// A RouterLayer of zeros shaped like r: holds the gradients of r's 10 tensors.
RouterLayer router_zero_grads(const RouterLayer& r);

// From dz [H] (dL/dz) through z = hard + soft - stopgrad(soft): grads (shaped like r) += dL/dθ,
// and, if dk_prerope is given, dk_prerope [T, H, d] += dL/dk through router_pool.
void router_backward(const RouterLayer& r, const RouterActs& a, const float* dz, RouterLayer& grads, float* dk_prerope);

}  // namespace elastic::train
