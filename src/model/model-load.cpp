// Loading a model from a GGUF file or an HF directory into the canonical (HF) layout.
#include <sys/stat.h>

#include <memory>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/hf-config.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "model/tensor-names.h"

namespace elastic {

namespace {

bool is_dir(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool ends_with(const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// Looks up tensors by name in either container and reports the missing one clearly.
template <typename File>
const TensorRef& need(const File& f, const std::string& name, const std::string& what) {
    const TensorRef* t = f.find_tensor(name);
    if (!t) fail("%s: missing tensor %s", what.c_str(), name.c_str());
    return *t;
}

// Every layer's tensors, named by the shared table (src/model/tensor-names.h).
template <typename File>
void load_layers(Model& m, const File& f, Layout layout, const std::string& what) {
    const ModelConfig& c = m.config;
    for (int l = 0; l < c.n_layer; ++l) {
        const std::string p = layer_prefix(layout, l);
        LayerWeights L;
        for (const VectorSlot& s : kLayerVectors)
            if (!s.qk_norm || c.qk_norm)
                L.*s.field = vector_from_tensor(need(f, p + slot_name(layout, s), what), vector_length(c, s.field), what);
        for (const MatrixSlot& s : kLayerMatrices) {
            auto [rows, cols] = matrix_shape(c, s.field);
            Weight w = weight_from_tensor(need(f, p + slot_name(layout, s), what), rows, cols, what);
            if (layout == Layout::GGUF && gguf_permutes(c, s.field)) w = unpermute_qk_rows(w, qk_heads(c, s.field), c.head_dim);
            L.*s.field = std::move(w);
        }
        // The down projection's input (the SwiGLU product) has outlier channels like the final hidden
        // state: int8 rounding per 32 values there changed `make demo`'s greedy answer. fp32 for it.
        L.w_down.f32_activations = true;
        m.weights.layers.push_back(std::move(L));
    }
}

void load_gguf(Model& m, const std::string& path) {
    auto f = std::shared_ptr<GGUFFile>(GGUFFile::open(path).release());
    m.config = config_from_gguf(*f);
    ModelConfig& c = m.config;
    ModelWeights& w = m.weights;
    w.keep_alive.push_back(f);
    const int64_t D = c.d_model, hd = c.head_dim;
    w.tok_embd = weight_from_tensor(need(*f, embedding_name(Layout::GGUF), path), c.vocab, D, path);
    w.output = c.tie_embeddings ? w.tok_embd : weight_from_tensor(need(*f, output_name(Layout::GGUF), path), c.vocab, D, path);
    w.output.f32_activations = true;
    w.tok_embd.f32_activations = true;  // the tied output is uploaded from it (Engine)
    w.out_norm = vector_from_tensor(need(*f, output_norm_name(Layout::GGUF), path), D, path);
    if (const TensorRef* rf = f->find_tensor("rope_freqs.weight")) {
        // Keep the factors only when the parameters that made them are unknown; never apply both.
        std::vector<float> factors = vector_from_tensor(*rf, hd / 2, path);
        if (m.config.rope_scaling.type != RopeConfig::Llama3 && !match_llama3_rope(m.config, factors))
            w.rope_freqs = std::move(factors);
    }
    load_layers(m, *f, Layout::GGUF, path);
    if (f->has("tokenizer.ggml.tokens")) m.tokenizer = Tokenizer::from_gguf(*f);
}

void load_hf(Model& m, const std::string& dir) {
    HFConfig hc = parse_hf_config(dir);
    m.config = config_from_hf(hc);
    const ModelConfig& c = m.config;
    auto ck = std::shared_ptr<SafetensorsCheckpoint>(SafetensorsCheckpoint::open(dir).release());
    ModelWeights& w = m.weights;
    w.keep_alive.push_back(ck);
    const int64_t D = c.d_model;
    w.tok_embd = weight_from_tensor(need(*ck, embedding_name(Layout::HF), dir), c.vocab, D, dir);
    const TensorRef* head = ck->find_tensor(output_name(Layout::HF));
    if (c.tie_embeddings || !head) {
        if (!c.tie_embeddings) fail("%s: missing tensor lm_head.weight (and tie_word_embeddings is false)", dir.c_str());
        w.output = w.tok_embd;
    } else {
        w.output = weight_from_tensor(*head, c.vocab, D, dir);
    }
    w.output.f32_activations = true;
    w.tok_embd.f32_activations = true;  // the tied output is uploaded from it (Engine)
    w.out_norm = vector_from_tensor(need(*ck, output_norm_name(Layout::HF), dir), D, dir);
    load_layers(m, *ck, Layout::HF, dir);
    struct stat st;
    if (stat((dir + "/tokenizer.json").c_str(), &st) == 0) m.tokenizer = Tokenizer::from_path(dir + "/tokenizer.json");
}

}  // namespace

const Tokenizer& Model::tok() const {
    if (!tokenizer) fail("%s: the model has no tokenizer (tokenizer.json is missing)", path.c_str());
    return *tokenizer;
}

std::unique_ptr<Model> Model::load(const std::string& path) {
    auto m = std::make_unique<Model>();
    m->path = path;
    if (is_dir(path)) {
        load_hf(*m, path);
    } else if (ends_with(path, ".gguf")) {
        load_gguf(*m, path);
    } else {
        struct stat st;
        if (stat(path.c_str(), &st) != 0) fail("%s: no such file or directory", path.c_str());
        fail("%s: not a model (expected a .gguf file or an HF directory with config.json)", path.c_str());
    }
    if (m->tokenizer && m->tokenizer->vocab_size() > m->config.vocab)
        fail("%s: tokenizer has %d tokens but the model's vocabulary is %d", path.c_str(), m->tokenizer->vocab_size(),
             m->config.vocab);
    m->inv_freq = rope_inv_freq(m->config, m->weights.rope_freqs);
    return m;
}

}  // namespace elastic
