// A loaded model (config, compact weights, tokenizer) and a Session that runs it: the KV cache and
// scratch buffers of one sequence (calm's Config / Weights / RunState split).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/config.h"
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

class Session {
public:
    // capacity: the most tokens this sequence will hold (prompt + generated); <= config.max_ctx.
    Session(const Model& model, Backend& backend, int64_t capacity, int64_t chunk = 512);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Called with (index of the token within this call, logits [vocab]) for each requested row.
    using LogitsFn = std::function<void(int64_t, const float*)>;

    // Appends n tokens at positions pos()..pos()+n-1, processing them in chunks.
    // all_logits=false: only the last token's logits are computed (returned by last_logits()).
    // all_logits=true: on_logits is called for every token in order.
    void forward(const int32_t* ids, int64_t n, bool all_logits = false, const LogitsFn& on_logits = nullptr);
    const std::vector<float>& last_logits() const { return last_logits_; }

    int64_t pos() const { return pos_; }
    int64_t capacity() const { return cap_; }
    void reset() { pos_ = 0; }
    size_t kv_bytes() const;  // bytes of the KV cache in use

private:
    void forward_chunk(const int32_t* ids, int64_t n, bool all_logits, int64_t base, const LogitsFn& on_logits);
    void logits_rows(const float* h, int64_t rows, float* out);

    const Model& m_;
    Backend& be_;
    int64_t cap_, chunk_;
    int64_t pos_ = 0;
    std::vector<float*> k_cache_, v_cache_;  // per layer [n_kv_head, cap, head_dim]
    float *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *att_ = nullptr;
    float *gate_ = nullptr, *up_ = nullptr, *logits_ = nullptr;
    std::vector<float> last_logits_;
};

// Peak resident memory of this process in bytes (from getrusage).
size_t peak_rss_bytes();

}  // namespace elastic
