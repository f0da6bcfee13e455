// A loaded model (config, compact weights, tokenizer) and a Session that runs it: the KV cache and
// scratch buffers of one sequence (calm's Config / Weights / RunState split).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attention/elastic.h"
#include "attention/router.h"
#include "model/backend.h"
#include "model/config.h"
#include "model/sampler.h"
#include "model/weights.h"
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

// One sequence. Prefill (the first call, from position 0) runs layer-major over the whole prompt:
// per layer, Q/K/V of every token, the router on the pre-RoPE keys, the plan, XAttention
// estimation for XA heads, one hybrid attention pass, then each head's KV cache keeps what its mode
// needs. Later tokens are decoded one at a time against those caches.
class Session {
public:
    // capacity: the most tokens this sequence will hold (prompt + generated); <= config.max_ctx.
    // chunk: rows per matmul/FFN step in prefill (bounds scratch memory).
    Session(const Model& model, Backend& backend, int64_t capacity, const AttentionSpec& spec = AttentionSpec{},
            const Router* router = nullptr, int64_t chunk = 512);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Called with (index of the token within this call, logits [vocab]) for each requested row.
    using LogitsFn = std::function<void(int64_t, const float*)>;

    // Appends n tokens at positions pos()..pos()+n-1 (prefill when pos() == 0, else decode steps).
    // all_logits=false: only the last token's logits are computed (returned by last_logits()).
    // all_logits=true: on_logits is called for every token in order.
    void forward(const int32_t* ids, int64_t n, bool all_logits = false, const LogitsFn& on_logits = nullptr);
    const std::vector<float>& last_logits() const { return last_logits_; }
    // The next token from the last position's logits. Greedy and top-k sampling run their
    // selection on the backend (on a GPU only k candidates leave it, not the vocabulary); other
    // settings sample on the host. limit: only ids [0, limit) (a tokenizer smaller than the
    // padded vocabulary); <= 0 means the whole vocabulary.
    int32_t sample_next(Sampler& sampler, int32_t limit = 0);
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
    // Reference decode (tests, --check-decode): also keep the full K/V of every layer on the host and
    // compute decode attention with the fp64 naive kernel over it, using the same plan's masks.
    // Set before the prefill.
    void set_reference_decode(bool on) { reference_decode_ = on; }
    // Eval hook (`elastic inspect --retrieval-scores`): with reference decode on, called in every
    // decode step for each layer with the step's query q [n_head, head_dim] (after RoPE) and the
    // whole K history k [n_keys, n_kv_head, head_dim]. The normal decode path never calls it.
    using DecodeObserver = std::function<void(int layer, const float* q, const float* k, int64_t n_keys)>;
    void set_decode_observer(DecodeObserver fn) { decode_observer_ = std::move(fn); }

private:
    void prefill(const int32_t* ids, int64_t T, bool all_logits, const LogitsFn& on_logits);
    void decode(int32_t id, bool want_logits, int64_t index, const LogitsFn& on_logits);
    void ensure_scratch(int64_t rows, int64_t chunk_rows);
    void logits_of(const float* x, int64_t T, bool all_logits, const LogitsFn& on_logits);

    const Model& m_;
    Backend& be_;
    int64_t cap_, chunk_;
    AttentionSpec spec_;
    const Router* router_;
    int64_t pos_ = 0;
    std::vector<LayerPlan> plans_;                           // [layer]
    std::vector<std::unique_ptr<Backend::LayerCache>> caches_;  // [layer]
    AttentionStats stats_;
    std::function<void(int, int)> progress_;
    bool reference_decode_ = false;
    bool host_logits_ = true;
    int64_t last_row_ = 0;  // row of logits_ that holds the last position's logits
    std::vector<std::pair<float, int32_t>> cand_;
    DecodeObserver decode_observer_;
    std::vector<std::vector<float>> ref_k_, ref_v_;  // [layer][pos, n_kv_head, head_dim], reference decode only
    // Scratch: whole-prompt rows (x, h, q, k, v, att) and chunk rows (gate, up, logits).
    int64_t rows_ = 0, chunk_rows_ = 0;
    float *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *att_ = nullptr;
    float *gate_ = nullptr, *up_ = nullptr, *logits_ = nullptr;
    std::vector<float> last_logits_;
};

// Peak resident memory of this process in bytes (from getrusage).
size_t peak_rss_bytes();

}  // namespace elastic
