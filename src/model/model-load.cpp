// Loading a model from a GGUF file or an HF directory into the canonical (HF) layout.
#include <sys/stat.h>

#include <memory>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/hf-config.h"
#include "formats/safetensors.h"
#include "model/model.h"

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

void load_gguf(Model& m, const std::string& path) {
    auto f = std::shared_ptr<GGUFFile>(GGUFFile::open(path).release());
    m.config = config_from_gguf(*f);
    ModelConfig& c = m.config;
    ModelWeights& w = m.weights;
    w.keep_alive.push_back(f);
    const int64_t D = c.d_model, hd = c.head_dim;
    w.tok_embd = weight_from_tensor(need(*f, "token_embd.weight", path), c.vocab, D, path);
    w.output = c.tie_embeddings ? w.tok_embd : weight_from_tensor(need(*f, "output.weight", path), c.vocab, D, path);
    w.out_norm = vector_from_tensor(need(*f, "output_norm.weight", path), D, path);
    if (const TensorRef* rf = f->find_tensor("rope_freqs.weight")) {
        // Keep the factors only when the parameters that made them are unknown; never apply both.
        std::vector<float> factors = vector_from_tensor(*rf, hd / 2, path);
        if (m.config.rope_scaling.type != RopeConfig::Llama3 && !match_llama3_rope(m.config, factors))
            w.rope_freqs = std::move(factors);
    }
    for (int l = 0; l < c.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        LayerWeights L;
        L.attn_norm = vector_from_tensor(need(*f, p + "attn_norm.weight", path), D, path);
        L.ffn_norm = vector_from_tensor(need(*f, p + "ffn_norm.weight", path), D, path);
        L.wq = weight_from_tensor(need(*f, p + "attn_q.weight", path), c.n_head * hd, D, path);
        L.wk = weight_from_tensor(need(*f, p + "attn_k.weight", path), c.n_kv_head * hd, D, path);
        L.wv = weight_from_tensor(need(*f, p + "attn_v.weight", path), c.n_kv_head * hd, D, path);
        L.wo = weight_from_tensor(need(*f, p + "attn_output.weight", path), D, c.n_head * hd, path);
        L.w_gate = weight_from_tensor(need(*f, p + "ffn_gate.weight", path), c.d_ff, D, path);
        L.w_up = weight_from_tensor(need(*f, p + "ffn_up.weight", path), c.d_ff, D, path);
        L.w_down = weight_from_tensor(need(*f, p + "ffn_down.weight", path), D, c.d_ff, path);
        if (c.arch == Arch::Llama) {  // llama.cpp permutes Q/K rows of llama models only
            L.wq = unpermute_qk_rows(L.wq, c.n_head, int(hd));
            L.wk = unpermute_qk_rows(L.wk, c.n_kv_head, int(hd));
        }
        if (c.qk_norm) {
            L.q_norm = vector_from_tensor(need(*f, p + "attn_q_norm.weight", path), hd, path);
            L.k_norm = vector_from_tensor(need(*f, p + "attn_k_norm.weight", path), hd, path);
        }
        w.layers.push_back(std::move(L));
    }
    if (f->has("tokenizer.ggml.tokens")) m.tokenizer = Tokenizer::from_gguf(*f);
}

void load_hf(Model& m, const std::string& dir) {
    HFConfig hc = parse_hf_config(dir);
    m.config = config_from_hf(hc);
    const ModelConfig& c = m.config;
    auto ck = std::shared_ptr<SafetensorsCheckpoint>(SafetensorsCheckpoint::open(dir).release());
    ModelWeights& w = m.weights;
    w.keep_alive.push_back(ck);
    const int64_t D = c.d_model, hd = c.head_dim;
    w.tok_embd = weight_from_tensor(need(*ck, "model.embed_tokens.weight", dir), c.vocab, D, dir);
    const TensorRef* head = ck->find_tensor("lm_head.weight");
    if (c.tie_embeddings || !head) {
        if (!c.tie_embeddings) fail("%s: missing tensor lm_head.weight (and tie_word_embeddings is false)", dir.c_str());
        w.output = w.tok_embd;
    } else {
        w.output = weight_from_tensor(*head, c.vocab, D, dir);
    }
    w.out_norm = vector_from_tensor(need(*ck, "model.norm.weight", dir), D, dir);
    for (int l = 0; l < c.n_layer; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerWeights L;
        L.attn_norm = vector_from_tensor(need(*ck, p + "input_layernorm.weight", dir), D, dir);
        L.ffn_norm = vector_from_tensor(need(*ck, p + "post_attention_layernorm.weight", dir), D, dir);
        L.wq = weight_from_tensor(need(*ck, p + "self_attn.q_proj.weight", dir), c.n_head * hd, D, dir);
        L.wk = weight_from_tensor(need(*ck, p + "self_attn.k_proj.weight", dir), c.n_kv_head * hd, D, dir);
        L.wv = weight_from_tensor(need(*ck, p + "self_attn.v_proj.weight", dir), c.n_kv_head * hd, D, dir);
        L.wo = weight_from_tensor(need(*ck, p + "self_attn.o_proj.weight", dir), D, c.n_head * hd, dir);
        L.w_gate = weight_from_tensor(need(*ck, p + "mlp.gate_proj.weight", dir), c.d_ff, D, dir);
        L.w_up = weight_from_tensor(need(*ck, p + "mlp.up_proj.weight", dir), c.d_ff, D, dir);
        L.w_down = weight_from_tensor(need(*ck, p + "mlp.down_proj.weight", dir), D, c.d_ff, dir);
        if (c.qk_norm) {
            L.q_norm = vector_from_tensor(need(*ck, p + "self_attn.q_norm.weight", dir), hd, dir);
            L.k_norm = vector_from_tensor(need(*ck, p + "self_attn.k_norm.weight", dir), hd, dir);
        }
        w.layers.push_back(std::move(L));
    }
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
