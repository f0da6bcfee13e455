#include "model/config.h"

#include <cmath>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/hf-config.h"

namespace elastic {

void ModelConfig::validate(const std::string& what) const {
    auto pos = [&](int v, const char* k) {
        if (v <= 0 || v > (1 << 24)) fail("%s: invalid %s = %d", what.c_str(), k, v);
    };
    pos(n_layer, "layer count");
    pos(d_model, "hidden size");
    pos(n_head, "attention head count");
    pos(n_kv_head, "key/value head count");
    pos(head_dim, "head dimension");
    pos(d_ff, "feed-forward size");
    pos(vocab, "vocabulary size");
    pos(max_ctx, "context length");
    if (n_head % n_kv_head != 0) fail("%s: %d query heads are not a multiple of %d key/value heads", what.c_str(), n_head, n_kv_head);
    if (head_dim % 2 != 0) fail("%s: head dimension %d is odd", what.c_str(), head_dim);
    if (!(rope_theta > 0) || !(rms_eps > 0)) fail("%s: invalid rope theta or rms epsilon", what.c_str());
}

ModelConfig config_from_gguf(const GGUFFile& f) {
    ModelConfig c;
    std::string arch = f.get_string("general.architecture");
    if (arch == "llama" || arch == "mistral" || arch == "smollm") {
        c.arch = Arch::Llama;
    } else if (arch == "qwen3") {
        c.arch = Arch::Qwen3;
        c.qk_norm = true;
    } else {
        fail("%s: unsupported architecture '%s' (supported: llama, mistral, qwen3)", f.path().c_str(), arch.c_str());
    }
    const std::string p = arch + ".";
    c.name = f.get_string("general.name", arch);
    c.n_layer = int(f.req_int(p + "block_count"));
    c.d_model = int(f.req_int(p + "embedding_length"));
    c.d_ff = int(f.req_int(p + "feed_forward_length"));
    c.n_head = int(f.req_int(p + "attention.head_count"));
    c.n_kv_head = int(f.get_int(p + "attention.head_count_kv", c.n_head));
    c.head_dim = c.n_head > 0 ? int(f.get_int(p + "attention.key_length", c.d_model / c.n_head)) : 0;
    c.max_ctx = int(f.get_int(p + "context_length", 2048));
    c.rope_theta = float(f.get_float(p + "rope.freq_base", 10000.0));
    c.rms_eps = float(f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5));
    std::string rs = f.get_string(p + "rope.scaling.type", "none");
    if (rs == "linear") {
        c.rope_scaling.type = RopeConfig::Linear;
        c.rope_scaling.factor = float(f.get_float(p + "rope.scaling.factor", 1.0));
    } else if (rs != "none" && rs != "") {
        fail("%s: unsupported rope scaling '%s'", f.path().c_str(), rs.c_str());
    }
    // Llama-3 scaling: llama.cpp keeps only the rope_freqs.weight tensor (see rope_inv_freq and
    // match_llama3_rope); files we write also carry the parameters, under elastic.rope.llama3.*.
    if (f.has("elastic.rope.llama3.factor")) {
        c.rope_scaling.type = RopeConfig::Llama3;
        c.rope_scaling.factor = float(f.get_float("elastic.rope.llama3.factor", 1.0));
        c.rope_scaling.low_freq_factor = float(f.get_float("elastic.rope.llama3.low_freq_factor", 1.0));
        c.rope_scaling.high_freq_factor = float(f.get_float("elastic.rope.llama3.high_freq_factor", 4.0));
        c.rope_scaling.original_max_pos = f.get_int("elastic.rope.llama3.original_context_length", 8192);
    }
    int64_t vocab = f.get_int(p + "vocab_size", 0);
    if (vocab == 0) vocab = int64_t(f.get_string_array("tokenizer.ggml.tokens").size());
    c.vocab = int(vocab);
    c.tie_embeddings = f.find_tensor("output.weight") == nullptr;
    c.validate(f.path());
    return c;
}

ModelConfig config_from_hf(const HFConfig& h) {
    ModelConfig c;
    c.arch = h.is_qwen3() ? Arch::Qwen3 : Arch::Llama;
    c.qk_norm = h.is_qwen3();
    c.name = h.model_type();
    auto narrow = [](int64_t v) { return v > 0 && v < (int64_t(1) << 30) ? int(v) : -1; };
    c.n_layer = narrow(h.num_hidden_layers);
    c.d_model = narrow(h.hidden_size);
    c.n_head = narrow(h.num_attention_heads);
    c.n_kv_head = narrow(h.num_key_value_heads);
    c.head_dim = narrow(h.head_dim);
    c.d_ff = narrow(h.intermediate_size);
    c.vocab = narrow(h.vocab_size);
    c.max_ctx = narrow(h.max_position_embeddings);
    c.rope_theta = float(h.rope_theta);
    c.rms_eps = float(h.rms_norm_eps);
    c.tie_embeddings = h.tie_word_embeddings;
    const RopeScaling& r = h.rope_scaling;
    if (r.type == "linear") {
        c.rope_scaling.type = RopeConfig::Linear;
        c.rope_scaling.factor = float(r.factor);
    } else if (r.type == "llama3") {
        c.rope_scaling.type = RopeConfig::Llama3;
        c.rope_scaling.factor = float(r.factor);
        c.rope_scaling.low_freq_factor = float(r.low_freq_factor);
        c.rope_scaling.high_freq_factor = float(r.high_freq_factor);
        c.rope_scaling.original_max_pos = r.original_max_position_embeddings;
    }
    c.validate("config.json");
    return c;
}

HFConfig config_to_hf(const ModelConfig& c) {
    HFConfig h;
    h.architecture = c.arch == Arch::Qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM";
    h.hidden_size = c.d_model;
    h.intermediate_size = c.d_ff;
    h.num_hidden_layers = c.n_layer;
    h.num_attention_heads = c.n_head;
    h.num_key_value_heads = c.n_kv_head;
    h.head_dim = c.head_dim;
    h.vocab_size = c.vocab;
    h.max_position_embeddings = c.max_ctx;
    h.rms_norm_eps = c.rms_eps;
    h.rope_theta = c.rope_theta;
    h.tie_word_embeddings = c.tie_embeddings;
    h.torch_dtype = "float32";
    if (c.rope_scaling.type == RopeConfig::Linear) {
        h.rope_scaling.type = "linear";
        h.rope_scaling.factor = c.rope_scaling.factor;
    } else if (c.rope_scaling.type == RopeConfig::Llama3) {
        h.rope_scaling.type = "llama3";
        h.rope_scaling.factor = c.rope_scaling.factor;
        h.rope_scaling.low_freq_factor = c.rope_scaling.low_freq_factor;
        h.rope_scaling.high_freq_factor = c.rope_scaling.high_freq_factor;
        h.rope_scaling.original_max_position_embeddings = c.rope_scaling.original_max_pos;
    }
    return h;
}

bool match_llama3_rope(ModelConfig& c, const std::vector<float>& freq_factors) {
    // Parameter sets of the released Llama-3.x models (factor, low, high, original context).
    const RopeConfig known[] = {{RopeConfig::Llama3, 8.0f, 1.0f, 4.0f, 8192}, {RopeConfig::Llama3, 32.0f, 1.0f, 4.0f, 8192},
                                {RopeConfig::Llama3, 16.0f, 1.0f, 4.0f, 8192}};
    ModelConfig plain = c;
    plain.rope_scaling = RopeConfig{};
    const std::vector<float> base = rope_inv_freq(plain);
    for (const RopeConfig& k : known) {
        ModelConfig t = c;
        t.rope_scaling = k;
        const std::vector<float> scaled = rope_inv_freq(t);
        bool ok = freq_factors.size() == base.size();
        for (size_t i = 0; ok && i < base.size(); ++i)
            ok = std::fabs(base[i] / scaled[i] - freq_factors[i]) <= 1e-4f * freq_factors[i];
        if (ok) {
            c.rope_scaling = k;
            return true;
        }
    }
    return false;
}

std::vector<float> rope_inv_freq(const ModelConfig& c, const std::vector<float>& freq_factors) {
    const int half = c.head_dim / 2;
    std::vector<float> inv(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
        double f = 1.0 / std::pow(double(c.rope_theta), double(2 * i) / double(c.head_dim));
        const RopeConfig& s = c.rope_scaling;
        if (s.type == RopeConfig::Linear) {
            f /= s.factor;
        } else if (s.type == RopeConfig::Llama3) {
            // transformers' _compute_llama3_parameters
            double low_wavelen = double(s.original_max_pos) / s.low_freq_factor;
            double high_wavelen = double(s.original_max_pos) / s.high_freq_factor;
            double wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) {
                f = f / s.factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (double(s.original_max_pos) / wavelen - s.low_freq_factor) /
                                (s.high_freq_factor - s.low_freq_factor);
                f = (1.0 - smooth) * f / s.factor + smooth * f;
            }
        }
        if (!freq_factors.empty()) f /= double(freq_factors[size_t(i)]);
        inv[size_t(i)] = float(f);
    }
    return inv;
}

}  // namespace elastic
