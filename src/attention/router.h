// The Elastic Attention router, CPU reference (DESIGN.md §1.1). Per layer and per sequence it pools
// the pre-RoPE keys at the sequence boundaries, runs two small head-agnostic MLPs row by row (one row
// per KV head) and decides for each KV head: full attention (FA) or sparse.
//   softmax variant: ... -> Linear(·,2) -> softmax -> argmax (first index wins ties); channel 1 = FA.
//   sigmoid variant: ... -> Linear(·,1) -> LayerNorm over the layer's KV heads (no affine, eps 1e-5)
//                    -> sigmoid; FA when > 0.5. Told apart by the shape of the last weight.
// Weight names (PyTorch Linear layout, weight [out, in]), under a prefix such as
// `model.layers.{l}.self_attn.`:
//   mask_allocator.cls_feat_extractor.{0,2}.{weight,bias}              (task MLP)
//   mask_allocator.cls_router_head_agnostic.{0,2,4}.{weight,bias}      (router MLP)
// Hidden widths are read from the shapes (the released routers use 4d; older variants 2d or 8d).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace elastic {

class SafetensorsFile;
struct TensorRef;

// One Linear layer, fp32: y = W x + b.
struct RouterLinear {
    int in = 0, out = 0;
    std::vector<float> w;  // [out, in]
    std::vector<float> b;  // [out]
};

struct RouterLayer {
    // Task MLP: fe0 [h1, d] -> SiLU -> fe2 [f, h1]             (the output is `pooled`, [H_kv, f])
    RouterLinear fe0, fe2;
    // Router MLP: rh0 [h2, f] -> SiLU -> rh2 [h3, h2] -> SiLU -> rh4 [n_out, h3], n_out = 2 or 1
    RouterLinear rh0, rh2, rh4;

    int head_dim() const { return fe0.in; }
    bool use_softmax() const { return rh4.out == 2; }
    // Checks the chain of shapes fits together; elastic::Error naming `what` if not.
    void validate(const std::string& what) const;
};

struct RouterDecision {
    std::vector<float> logits;   // [H_kv, 2] softmax variant; [H_kv, 1] sigmoid variant, after the LayerNorm
                                 // (the reference's `binary_logits`: LayerNorm is its module .5)
    std::vector<float> prob_fa;  // [H_kv] softmax(logits)[1], or sigmoid(logits)
    std::vector<uint8_t> full;   // [H_kv] 1 = full attention, 0 = sparse
    std::vector<float> margin;   // [H_kv] logit1 - logit0 (softmax) or prob_fa - 0.5 (sigmoid): > 0 <=> FA
};

// Boundary pooling with Python slice semantics: out[h, :] = mean of the rows of
// concat(k[:window], k[-window:]) (the reference's `x[:, :100]`, `x[:, -100:]`), i.e. rows
// 0..min(window,T)-1 then max(0,T-window)..T-1; rows in both slices count twice. (Not k[T-window:T]
// literally: for window/2 < T < window Python would wrap that negative start to 2T-window.)
// k [T, H_kv, d] token-major; out [H_kv, d]; T >= 1.
void router_pool(const float* k, int64_t T, int n_kv_head, int head_dim, int window, float* out);

class Router {
public:
    static constexpr int kDefaultWindow = 100;

    Router() = default;
    // Layers given explicitly; an empty RouterLayer (fe0.in == 0) means "no router for that layer".
    explicit Router(std::vector<RouterLayer> layers, int window = kDefaultWindow);

    // The routers of all n_layer layers from a checkpoint directory (model.safetensors or sharded
    // with model.safetensors.index.json) or one .safetensors file, names
    // `model.layers.{l}.self_attn.mask_allocator.*`. elastic::Error naming the tensor when one is
    // missing, has the wrong shape or type, or when head_dim does not match the model's.
    static Router load(const std::string& path, int n_layer, int head_dim);

    // One layer from the tensors `<prefix>mask_allocator.*` of a file (tests, fixtures).
    // head_dim <= 0 accepts whatever the file holds.
    static RouterLayer layer_from_tensors(const SafetensorsFile& f, const std::string& prefix, int head_dim = 0);
    // A one-layer Router over layer_from_tensors (routes layer 0).
    static Router from_tensors(const SafetensorsFile& f, const std::string& prefix, int head_dim = 0);

    bool has_layer(int l) const;
    int n_layer() const { return int(layers_.size()); }
    int window() const { return window_; }
    const RouterLayer& layer(int l) const;

    // k_prerope [T, n_kv_head, head_dim] (row stride n_kv_head*head_dim). pooled, if given,
    // receives the task MLP's output [n_kv_head, f].
    RouterDecision route(int layer, const float* k_prerope, int64_t T, int n_kv_head, int head_dim,
                         std::vector<float>* pooled = nullptr) const;

    // The MLPs on already pooled keys x [n_kv_head, d] → logits [n_kv_head, r.rh4.out] (before the
    // sigmoid variant's LayerNorm); pooled, if given, receives the task MLP's output.
    static void mlp(const RouterLayer& r, const float* x, int n_kv_head, float* logits, std::vector<float>* pooled = nullptr);
    // The decision from those logits (LayerNorm over the heads for the sigmoid variant).
    static RouterDecision decision(const RouterLayer& r, std::vector<float> logits, int n_kv_head);
    // Checks that layer l exists and takes this head_dim; elastic::Error otherwise.
    const RouterLayer& checked_layer(int layer, int64_t T, int n_kv_head, int head_dim) const;

    // The MLPs and the decision on already pooled keys x [n_kv_head, d].
    static RouterDecision decide(const RouterLayer& r, const float* x, int n_kv_head, std::vector<float>* pooled = nullptr);

private:
    std::vector<RouterLayer> layers_;
    int window_ = kDefaultWindow;
};

// Writes the given layers' routers (empty ones skipped) as tensors named
// `<prefix>mask_allocator.*`, where prefix is prefix_pattern with "{l}" replaced by the layer index.
// dtype: F32, F16 or BF16. max_shard_bytes > 0: `path` is a directory that receives shards and
// model.safetensors.index.json (as a released sharded checkpoint).
void write_router_safetensors(const std::string& path, const std::vector<RouterLayer>& layers,
                              const std::string& prefix_pattern = "model.layers.{l}.self_attn.",
                              DType dtype = DType::F32, size_t max_shard_bytes = 0);

// Routers with a known decision, for tests of the modules that consume decisions:
//  - constant: every head gets `full`, margin +-1.
//  - threshold: FA iff channel `channel` of the head's pooled keys (router_pool output) is > threshold.
RouterLayer router_layer_constant(int head_dim, bool full);
RouterLayer router_layer_threshold(int head_dim, int channel, float threshold);

// The tensor names of one layer's router, in the order fe0.w, fe0.b, fe2.w, fe2.b, rh0.w, ... rh4.b.
std::vector<std::string> router_tensor_names(const std::string& prefix);

}  // namespace elastic
