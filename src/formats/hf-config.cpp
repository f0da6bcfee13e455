// HF config.json reader/writer; see hf-config.h. Every key is type-checked: a missing required key
// or a value of the wrong type is one elastic::Error naming the file and the key.
#include "formats/hf-config.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped-file.h"

namespace elastic {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int64_t kMaxInt = (int64_t(1) << 31) - 1;  // bound on every size, so products stay in int64

std::string show(const json& v) {
    std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
    return s.size() > 60 ? s.substr(0, 60) + "..." : s;
}

// Typed access to one JSON object; `ctx` is "" for the top level or e.g. "rope_scaling.".
struct Obj {
    const json& j;
    const std::string& what;
    std::string ctx;

    // nullptr when the key is absent or null (HF writes null for "not set").
    const json* find(const char* key) const {
        auto it = j.find(key);
        return it == j.end() || it->is_null() ? nullptr : &*it;
    }
    [[noreturn]] void bad(const char* key, const char* want, const json& v) const {
        fail("%s: \"%s%s\" must be %s, got %s", what.c_str(), ctx.c_str(), key, want, show(v).c_str());
    }
    const json& need(const char* key) const {
        const json* v = find(key);
        if (!v) fail("%s: missing required key \"%s%s\"", what.c_str(), ctx.c_str(), key);
        return *v;
    }
    int64_t as_int(const char* key, const json& v, int64_t lo) const {
        // via double: exact for everything in range, and 8192.0 is accepted as 8192
        if (!v.is_number() || std::nearbyint(v.get<double>()) != v.get<double>()) bad(key, "an integer", v);
        double d = v.get<double>();
        if (d < double(lo) || d > double(kMaxInt))
            bad(key, lo > 0 ? "a positive integer below 2^31" : "an integer in [0, 2^31)", v);
        return int64_t(d);
    }
    int64_t get_int(const char* key, int64_t lo = 1) const { return as_int(key, need(key), lo); }
    int64_t get_int(const char* key, int64_t lo, int64_t dflt) const {
        const json* v = find(key);
        return v ? as_int(key, *v, lo) : dflt;
    }
    double get_pos_double(const char* key, const double* dflt = nullptr) const {
        const json* v = dflt ? find(key) : &need(key);
        if (!v) return *dflt;
        if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() <= 0) bad(key, "a positive number", *v);
        return v->get<double>();
    }
    bool get_bool(const char* key, bool dflt) const {
        const json* v = find(key);
        if (!v) return dflt;
        if (!v->is_boolean()) bad(key, "true or false", *v);
        return v->get<bool>();
    }
    std::string get_string(const char* key, const std::string& dflt) const {
        const json* v = find(key);
        if (!v) return dflt;
        if (!v->is_string()) bad(key, "a string", *v);
        return v->get<std::string>();
    }
};

// rope scaling from a "rope_scaling" (classic) or "rope_parameters" (transformers 5) object.
RopeScaling parse_rope(const Obj& o) {
    RopeScaling r;
    r.type = o.get_string("rope_type", o.get_string("type", "default"));
    if (r.type == "default") return r;
    if (r.type == "linear") {
        r.factor = o.get_pos_double("factor");
        return r;
    }
    if (r.type == "llama3") {
        r.factor = o.get_pos_double("factor");
        r.low_freq_factor = o.get_pos_double("low_freq_factor");
        r.high_freq_factor = o.get_pos_double("high_freq_factor");
        r.original_max_position_embeddings = o.get_int("original_max_position_embeddings");
        if (r.high_freq_factor <= r.low_freq_factor)
            fail("%s: \"%shigh_freq_factor\" (%g) must exceed \"low_freq_factor\" (%g)", o.what.c_str(), o.ctx.c_str(),
                 r.high_freq_factor, r.low_freq_factor);
        return r;
    }
    fail("%s: rope scaling type '%s' is not supported (supported: default, linear, llama3)", o.what.c_str(),
         r.type.c_str());
}

std::vector<int64_t> parse_token_ids(const Obj& o, const char* key) {
    const json* v = o.find(key);
    std::vector<int64_t> ids;
    if (!v) return ids;
    if (v->is_array()) {
        for (const json& x : *v) ids.push_back(o.as_int(key, x, 0));
    } else {
        ids.push_back(o.as_int(key, *v, 0));
    }
    return ids;
}

}  // namespace

HFConfig parse_hf_config_text(const std::string& text, const std::string& what) {
    const char* w = what.c_str();
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        fail("%s: invalid JSON: %s", w, e.what());
    }
    if (!j.is_object()) fail("%s: config is a JSON %s, not an object", w, j.type_name());
    Obj o{j, what, ""};
    HFConfig c;

    const json& archs = o.need("architectures");
    if (!archs.is_array() || archs.empty() || !archs[0].is_string())
        o.bad("architectures", "a non-empty list of strings", archs);
    c.architecture = archs[0].get<std::string>();
    if (c.architecture != "LlamaForCausalLM" && c.architecture != "Qwen3ForCausalLM")
        fail("%s: architecture '%s' is not supported (supported: LlamaForCausalLM, Qwen3ForCausalLM)", w,
             c.architecture.c_str());

    c.hidden_size = o.get_int("hidden_size");
    c.intermediate_size = o.get_int("intermediate_size");
    c.num_hidden_layers = o.get_int("num_hidden_layers");
    c.num_attention_heads = o.get_int("num_attention_heads");
    c.num_key_value_heads = o.get_int("num_key_value_heads", 1, c.num_attention_heads);
    const json* hd = o.find("head_dim");
    if (hd) {
        c.head_dim = o.as_int("head_dim", *hd, 1);
    } else {
        if (c.hidden_size % c.num_attention_heads != 0)
            fail("%s: hidden_size %lld is not a multiple of num_attention_heads %lld (and head_dim is not given)", w,
                 (long long)c.hidden_size, (long long)c.num_attention_heads);
        c.head_dim = c.hidden_size / c.num_attention_heads;
    }
    if (c.num_attention_heads % c.num_key_value_heads != 0)
        fail("%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld", w,
             (long long)c.num_attention_heads, (long long)c.num_key_value_heads);
    c.vocab_size = o.get_int("vocab_size");
    c.max_position_embeddings = o.get_int("max_position_embeddings");
    c.rms_norm_eps = o.get_pos_double("rms_norm_eps");
    c.tie_word_embeddings = o.get_bool("tie_word_embeddings", false);

    const double default_theta = 10000.0;
    if (const json* rp = o.find("rope_parameters")) {  // transformers >= 5
        if (!rp->is_object()) o.bad("rope_parameters", "an object", *rp);
        Obj ro{*rp, what, "rope_parameters."};
        c.rope_theta = ro.get_pos_double("rope_theta", &default_theta);
        c.rope_scaling = parse_rope(ro);
    } else {
        c.rope_theta = o.get_pos_double("rope_theta", &default_theta);
        if (const json* rs = o.find("rope_scaling")) {
            if (!rs->is_object()) o.bad("rope_scaling", "an object or null", *rs);
            c.rope_scaling = parse_rope(Obj{*rs, what, "rope_scaling."});
        }
    }

    std::vector<int64_t> bos = parse_token_ids(o, "bos_token_id");
    if (bos.size() > 1) o.bad("bos_token_id", "a single integer", o.need("bos_token_id"));
    if (!bos.empty()) c.bos_token_id = bos[0];
    c.eos_token_ids = parse_token_ids(o, "eos_token_id");
    c.torch_dtype = o.get_string("torch_dtype", o.get_string("dtype", ""));

    // What the forward pass does not implement: refuse rather than run it wrongly.
    std::string act = o.get_string("hidden_act", "silu");
    if (act != "silu") fail("%s: hidden_act '%s' is not supported (only silu)", w, act.c_str());
    if (o.get_bool("attention_bias", false)) fail("%s: attention_bias=true is not supported", w);
    if (o.get_bool("mlp_bias", false)) fail("%s: mlp_bias=true is not supported", w);
    if (o.get_bool("use_sliding_window", false)) fail("%s: use_sliding_window=true is not supported", w);
    return c;
}

HFConfig parse_hf_config(const std::string& path) {
    std::error_code ec;
    std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "config.json").string() : path;
    std::shared_ptr<MappedFile> m = MappedFile::open(file);
    if (m->size() > (16u << 20)) fail("%s: %zu bytes is too large for a config.json", file.c_str(), m->size());
    return parse_hf_config_text(std::string(reinterpret_cast<const char*>(m->data()), m->size()), file);
}

std::string write_hf_config(const HFConfig& c) {
    json j;
    j["architectures"] = {c.architecture};
    j["model_type"] = c.model_type();
    j["attention_bias"] = false;
    j["attention_dropout"] = 0.0;
    j["bos_token_id"] = c.bos_token_id ? json(*c.bos_token_id) : json(nullptr);
    if (c.eos_token_ids.empty()) j["eos_token_id"] = nullptr;
    else if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
    else j["eos_token_id"] = c.eos_token_ids;
    j["head_dim"] = c.head_dim;
    j["hidden_act"] = "silu";
    j["hidden_size"] = c.hidden_size;
    j["initializer_range"] = 0.02;
    j["intermediate_size"] = c.intermediate_size;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["num_attention_heads"] = c.num_attention_heads;
    j["num_hidden_layers"] = c.num_hidden_layers;
    j["num_key_value_heads"] = c.num_key_value_heads;
    j["rms_norm_eps"] = c.rms_norm_eps;
    j["rope_theta"] = c.rope_theta;
    const RopeScaling& r = c.rope_scaling;
    if (r.type == "linear") {
        j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", r.factor}};
    } else if (r.type == "llama3") {
        j["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", r.factor},
                             {"low_freq_factor", r.low_freq_factor},
                             {"high_freq_factor", r.high_freq_factor},
                             {"original_max_position_embeddings", r.original_max_position_embeddings}};
    } else {
        j["rope_scaling"] = nullptr;
    }
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
    j["use_cache"] = true;
    j["vocab_size"] = c.vocab_size;
    if (c.is_qwen3()) {
        j["use_sliding_window"] = false;
        j["sliding_window"] = nullptr;
        j["max_window_layers"] = c.num_hidden_layers;
    } else {
        j["mlp_bias"] = false;
        j["pretraining_tp"] = 1;
    }
    return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace elastic
