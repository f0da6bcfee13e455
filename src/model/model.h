// A loaded model (config, compact weights, tokenizer) and a Session that runs it: the KV cache and
// scratch buffers of one sequence (calm's Config / Weights / RunState split).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attention/elastic.h"
#include "attention/router.h"
#include "model/backend.h"
#include "model/config.h"
#include "model/sampler.h"
#include "model/weights.h"
#include "core/dtype.h"
#include "tokenizer/tokenizer.h"

namespace elastic {

class Model {
public:
    // `path`: a .gguf file, or an HF directory (config.json + *.safetensors + tokenizer.json).
    static std::unique_ptr<Model> load(const std::string& path);

    ModelConfig config;
    ModelWeights weights;
    std::unique_ptr<Tokenizer> tokenizer;  // null for an HF directory without tokenizer.json
    const Tokenizer& tok() const;          // the tokenizer, or an Error naming the model
    std::vector<float> inv_freq;  // [head_dim/2] RoPE frequencies with scaling applied
    std::string path;
};

// A model placed on a backend: its weights (and the router's, if any) uploaded once, as handles
// into the backend's memory. Sessions of the same Engine share them.
class Engine {
public:
    Engine(const Model& model, Backend& backend, const Router* router = nullptr);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    using MatrixRef = std::shared_ptr<const Backend::Matrix>;
    using VectorRef = std::shared_ptr<const Backend::Vector>;
    struct Layer {
        VectorRef attn_norm, ffn_norm, q_norm, k_norm;  // q/k norms: Qwen3 only
        MatrixRef wq, wk, wv, wo, w_gate, w_up, w_down;
        std::unique_ptr<const Backend::RouterWeights> router;  // null: no router for this layer
    };

    const Model& model;
    Backend& backend;
    const Router* router;  // null: no router
    MatrixRef tok_embd, output;  // one object when the embeddings are tied
    VectorRef out_norm, inv_freq;
    std::vector<Layer> layers;
};

// Scratch rows of the layer function (layer.cpp): x, h (f32 residual stream), q, k, v, att (the
// backend's attention type) for `rows` rows, gate and up (f32) for the FFN's chunk of rows.
struct RowBuffers {
    Buf x, h, q, k, v, att, gate, up;
    void alloc(Backend& be, const ModelConfig& c, int64_t rows, int64_t ffn_rows);  // releases the old ones first
    void release(Backend& be);
};

// One sequence on an Engine: its KV caches, plans and scratch buffers. forward() appends tokens;
// every call runs the same layer function (model/layer.cpp) over the new tokens: the first call
// (from position 0) is the prefill (router, plan, hybrid attention over the whole prompt, caches
// filled), later calls append to the caches and decode each new token against them. A one-token
// decode step after the first is recorded once and then replayed as graphs on a backend that has
// them (Backend::graph_begin, step_inputs: CUDA), unless a layer hook is set or all logits are
// asked for.
class Session {
public:
    // capacity: the most tokens this sequence will hold (prompt + generated); <= config.max_ctx.
    // chunk: rows per FFN step (bounds scratch memory).
    Session(const Engine& engine, int64_t capacity, const AttentionSpec& spec = AttentionSpec{}, int64_t chunk = 512);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Called with (index of the token within this call, logits [vocab]) for each requested row.
    using LogitsFn = std::function<void(int64_t, const float*)>;
    // Called after each layer with (layer, name, buffer, rows, row width): intermediates for dumps
    // and layer-by-layer diffs. Names: "attn_out" (attention output [rows, n_head·head_dim], before
    // wo, in the backend's attention type), "layer_out" (residual stream [rows, d_model], f32).
    using LayerHook = std::function<void(int layer, const char* name, Buf buf, int64_t rows, int64_t width)>;

    // Appends n tokens at positions pos()..pos()+n-1.
    // all_logits=false: only the last token's logits are computed (returned by last_logits()).
    // all_logits=true: on_logits is called for every token in order.
    void forward(const int32_t* ids, int64_t n, bool all_logits = false, const LogitsFn& on_logits = nullptr);
    const std::vector<float>& last_logits() const { return last_logits_; }
    // The next token from the last position's logits. Greedy and top-k sampling run their
    // selection on the backend (on a GPU only k candidates leave it, not the vocabulary); other
    // settings sample on the host. limit: only ids [0, limit) (a tokenizer smaller than the
    // padded vocabulary); <= 0 means the whole vocabulary. banned: ids never chosen (greedy and
    // top-k look further down the candidates).
    int32_t sample_next(Sampler& sampler, int32_t limit = 0, const std::vector<int32_t>& banned = {});
    // false: forward() leaves the last logits on the backend (last_logits() is then stale) for
    // sample_next(); true (default): they are copied to the host after every forward().
    void set_host_logits(bool on) { host_logits_ = on; }

    int64_t pos() const { return pos_; }
    int64_t capacity() const { return cap_; }
    void reset();
    size_t kv_bytes() const;                              // bytes of the KV caches of all layers
    const AttentionStats& stats() const { return stats_; }  // of the last prefill
    const std::vector<LayerPlan>& plans() const { return plans_; }
    // Called after each layer of a prefill (layer, n_layer), e.g. for a progress line.
    void set_progress(std::function<void(int, int)> fn) { progress_ = std::move(fn); }
    void set_layer_hook(LayerHook fn) { hook_ = std::move(fn); }

private:
    friend class DecodeBatch;
    void layer(int l, int64_t n, const int32_t* pos);
    void attention(int l, int64_t n, const int32_t* pos);
    void ensure_scratch(int64_t rows);
    void all_logits_of(int64_t n, const LogitsFn& on_logits);
    void last_logits_of(int64_t n);  // the last row's logits into logits_, left on the backend
    int graph_segments() const;      // graphs per decode step (Backend::graph_layers)
    void forget_graphs();            // drops this session's recordings on the backend

    const Engine& e_;
    const ModelConfig& c_;
    Backend& be_;
    int64_t cap_, chunk_;
    AttentionSpec spec_;
    int64_t pos_ = 0;
    int64_t decode_steps_ = 0;  // since the prefill (the first runs uncaptured: Backend::graph_begin)
    int64_t graph_base_ = -1;   // first graph key of this prefill's decode steps; -1: none recorded
    std::vector<std::pair<int, int>> attn_marks_;  // prefill routed on the device: attention spans (Backend::mark)
    int64_t sparse_so_far_ = 0;                                 // prefill: sparse KV heads of the layers so far
    std::vector<LayerPlan> plans_;                              // [layer]
    std::vector<std::unique_ptr<Backend::LayerCache>> caches_;  // [layer]
    AttentionStats stats_;
    std::function<void(int, int)> progress_;
    LayerHook hook_;
    bool host_logits_ = true;
    int64_t last_row_ = 0;  // row of logits_ that holds the last position's logits
    Buf sample_logits_;     // where the last position's logits are (logits_ or a DecodeBatch's rows)
    std::vector<std::pair<float, int32_t>> cand_;
    // Scratch: rows of the current call (x, h: f32; q, k, v, att: attention type), FFN chunk rows
    // (gate, up) and logits rows.
    int64_t rows_ = 0;
    RowBuffers b_;
    Buf logits_;
    std::vector<float> last_logits_;
};

// One decode token for each of several sessions of one Engine, their rows stacked through every
// GEMM (each weight row is read once for all of them) and each attending to its own KV cache: the
// decode step of a continuous-batching server. With at most Backend::max_stable_decode_rows()
// sessions a call gives every session exactly what forward(&id, 1) would (same bits), so batching
// never changes a request's output. The scratch buffers live here, sized for the largest call.
// One session alone on a backend with graphs (CUDA) takes its own decode step, Session::forward,
// so that a server's lone request replays its recorded step too.
class DecodeBatch {
public:
    explicit DecodeBatch(const Engine& engine);
    ~DecodeBatch();
    DecodeBatch(const DecodeBatch&) = delete;
    DecodeBatch& operator=(const DecodeBatch&) = delete;
    int max_rows() const { return max_rows_; }
    // ids[i] is appended to ss[i]; every session must be past its prefill, with room for one more
    // token, and ss.size() <= max_rows(). Afterwards each session's sample_next() and
    // last_logits() (when it keeps host logits) see its new logits.
    void run(const std::vector<Session*>& ss, const int32_t* ids);

private:
    const Engine& e_;
    int max_rows_;
    RowBuffers b_;
    Buf logits_;
};

// Peak resident memory of this process in bytes (from getrusage).
size_t peak_rss_bytes();

}  // namespace elastic
