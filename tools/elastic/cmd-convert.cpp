// `elastic convert IN OUT`: GGUF file -> HF directory (config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json), or HF directory -> GGUF file. Weights go through the
// canonical in-memory model, so GGUF's Q/K row permutation is undone / redone on the way.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "formats/gguf.h"
#include "formats/hf-config.h"
#include "formats/quants.h"
#include "formats/safetensors.h"
#include "formats/tokenizer-meta.h"
#include "model/model.h"
#include "model/tensor-names.h"

namespace elastic::cli {

namespace {

struct ConvertOptions {
    std::string in, out, type;
    bool force = false;
};

bool ends_with(const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

DType parse_type(const std::string& s, bool plain_only) {
    static const std::pair<const char*, DType> names[] = {
        {"f32", DType::F32}, {"f16", DType::F16}, {"bf16", DType::BF16}, {"q8_0", DType::Q8_0},
        {"q4_0", DType::Q4_0}, {"q4_1", DType::Q4_1}, {"q4_k", DType::Q4_K}, {"q6_k", DType::Q6_K}};
    for (auto& [n, t] : names)
        if (s == n) {
            if (plain_only && dtype_is_quantized(t)) fail("convert: safetensors cannot hold %s; use f32, f16 or bf16", n);
            return t;
        }
    fail("convert: unknown --type '%s' (f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q6_k)", s.c_str());
}

// Bytes of w stored as `type` (a straight copy when the type already matches).
std::vector<uint8_t> encode_weight(const Weight& w, DType type) {
    if (w.type == type) return std::vector<uint8_t>(w.data, w.data + w.nbytes());
    if (w.cols % dtype_block_size(type) != 0) fail("convert: rows of %lld elements do not fit %s blocks", (long long)w.cols, dtype_name(type));
    std::vector<float> f = weight_to_f32(w);
    std::vector<uint8_t> out(dtype_nbytes(type, w.rows * w.cols));
    const size_t rb = dtype_nbytes(type, w.cols);
    for (int64_t r = 0; r < w.rows; ++r) quantize(type, f.data() + r * w.cols, out.data() + size_t(r) * rb, w.cols);
    return out;
}

// Emits every tensor of the model under its name in `layout` (src/model/tensor-names.h); GGUF gets
// llama's permuted Q/K rows back.
template <typename MatrixFn, typename VectorFn>
void write_weights(const ModelConfig& c, const ModelWeights& w, Layout layout, MatrixFn&& matrix, VectorFn&& vec) {
    matrix(embedding_name(layout), w.tok_embd);
    if (!c.tie_embeddings) matrix(output_name(layout), w.output);
    vec(output_norm_name(layout), w.out_norm);
    for (int l = 0; l < c.n_layer; ++l) {
        const LayerWeights& L = w.layers[size_t(l)];
        const std::string p = layer_prefix(layout, l);
        for (const VectorSlot& s : kLayerVectors)
            if (!s.qk_norm || c.qk_norm) vec(p + slot_name(layout, s), L.*s.field);
        for (const MatrixSlot& s : kLayerMatrices) {
            const Weight& m = L.*s.field;
            if (layout == Layout::GGUF && gguf_permutes(c, s.field))
                matrix(p + slot_name(layout, s), permute_qk_rows(m, qk_heads(c, s.field), c.head_dim));
            else
                matrix(p + slot_name(layout, s), m);
        }
    }
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream o(path, std::ios::binary);
    if (!o || !(o << text) || !o.flush()) fail("%s: cannot write", path.c_str());
}

void gguf_to_hf(const ConvertOptions& o) {
    auto model = Model::load(o.in);
    const ModelConfig& c = model->config;
    if (c.rope_scaling.type == RopeConfig::None && !model->weights.rope_freqs.empty())
        fail("convert: %s has rope_freqs factors from unknown Llama-3 scaling parameters; cannot write config.json", o.in.c_str());
    if (mkdir(o.out.c_str(), 0755) != 0 && errno != EEXIST) fail("%s: cannot create directory", o.out.c_str());
    const ModelWeights& w = model->weights;
    SafetensorsWriter sw;
    sw.set_metadata("format", "pt");
    auto matrix = [&](const std::string& name, const Weight& wt) {
        DType t = o.type.empty() ? (dtype_is_quantized(wt.type) ? DType::F32 : wt.type) : parse_type(o.type, true);
        std::vector<uint8_t> b = encode_weight(wt, t);
        sw.add_tensor(name, t, {wt.rows, wt.cols}, b.data(), b.size() * sizeof(b[0]));
    };
    auto vec = [&](const std::string& name, const std::vector<float>& v) {
        sw.add_tensor(name, DType::F32, {int64_t(v.size())}, v.data(), v.size() * sizeof(v[0]));
    };
    write_weights(c, w, Layout::HF, matrix, vec);
    sw.write(o.out + "/model.safetensors");
    HFConfig hc = config_to_hf(c);
    if (model->tokenizer) {
        hc.bos_token_id = model->tokenizer->bos_id();
        hc.eos_token_ids = {model->tokenizer->eos_id()};
    }
    write_text(o.out + "/config.json", write_hf_config(hc));
    if (model->tokenizer) {
        auto f = GGUFFile::open(o.in);
        write_text(o.out + "/tokenizer.json", tokenizer_json_from_gguf(*f));
        nlohmann::ordered_json tc;
        const Tokenizer& tok = *model->tokenizer;
        if (tok.bos_id() >= 0) tc["bos_token"] = tok.token_text(tok.bos_id());
        if (tok.eos_id() >= 0) tc["eos_token"] = tok.token_text(tok.eos_id());
        if (f->has("tokenizer.chat_template")) tc["chat_template"] = f->get_string("tokenizer.chat_template");
        tc["tokenizer_class"] = "PreTrainedTokenizerFast";
        write_text(o.out + "/tokenizer_config.json", tc.dump(2));
    }
    std::fprintf(stderr, "convert: wrote %s (config.json, model.safetensors%s)\n", o.out.c_str(),
                 model->tokenizer ? ", tokenizer.json, tokenizer_config.json" : "");
}

void hf_to_gguf(const ConvertOptions& o) {
    auto model = Model::load(o.in);
    const ModelConfig& c = model->config;
    const ModelWeights& w = model->weights;
    GGUFWriter gw;
    const std::string a = c.arch_name();
    gw.set_string("general.architecture", a);
    gw.set_string("general.name", c.name);
    gw.set_u32(a + ".block_count", uint32_t(c.n_layer));
    gw.set_u32(a + ".context_length", uint32_t(c.max_ctx));
    gw.set_u32(a + ".embedding_length", uint32_t(c.d_model));
    gw.set_u32(a + ".feed_forward_length", uint32_t(c.d_ff));
    gw.set_u32(a + ".attention.head_count", uint32_t(c.n_head));
    gw.set_u32(a + ".attention.head_count_kv", uint32_t(c.n_kv_head));
    gw.set_u32(a + ".attention.key_length", uint32_t(c.head_dim));
    gw.set_u32(a + ".attention.value_length", uint32_t(c.head_dim));
    gw.set_u32(a + ".rope.dimension_count", uint32_t(c.head_dim));
    gw.set_u32(a + ".vocab_size", uint32_t(c.vocab));
    gw.set_f32(a + ".rope.freq_base", c.rope_theta);
    gw.set_f32(a + ".attention.layer_norm_rms_epsilon", c.rms_eps);
    if (c.rope_scaling.type == RopeConfig::Linear) {
        gw.set_string(a + ".rope.scaling.type", "linear");
        gw.set_f32(a + ".rope.scaling.factor", c.rope_scaling.factor);
    }
    std::set<DType> matrix_types;
    auto matrix = [&](const std::string& name, const Weight& wt) {
        DType t = o.type.empty() ? wt.type : parse_type(o.type, false);
        matrix_types.insert(t);
        std::vector<uint8_t> b = encode_weight(wt, t);
        gw.add_tensor(name, t, {wt.rows, wt.cols}, b.data());
    };
    auto vec = [&](const std::string& name, const std::vector<float>& v) {
        gw.add_tensor(name, DType::F32, {int64_t(v.size())}, v.data());
    };
    if (c.rope_scaling.type == RopeConfig::Llama3) {  // GGUF keeps llama3 scaling as frequency factors
        ModelConfig plain = c;
        plain.rope_scaling = RopeConfig{};
        std::vector<float> base = rope_inv_freq(plain), scaled = rope_inv_freq(c);
        std::vector<float> factors(base.size());
        for (size_t i = 0; i < base.size(); ++i) factors[i] = base[i] / scaled[i];
        vec("rope_freqs.weight", factors);
        gw.set_f32("elastic.rope.llama3.factor", c.rope_scaling.factor);
        gw.set_f32("elastic.rope.llama3.low_freq_factor", c.rope_scaling.low_freq_factor);
        gw.set_f32("elastic.rope.llama3.high_freq_factor", c.rope_scaling.high_freq_factor);
        gw.set_u32("elastic.rope.llama3.original_context_length", uint32_t(c.rope_scaling.original_max_pos));
    }
    write_weights(c, w, Layout::GGUF, matrix, vec);
    // llama.cpp's file type (llama_ftype) when every matrix has one type; otherwise it guesses.
    if (matrix_types.size() == 1) {
        static const std::pair<DType, uint32_t> ftypes[] = {{DType::F32, 0},  {DType::F16, 1},  {DType::Q4_0, 2},
                                                           {DType::Q4_1, 3}, {DType::Q8_0, 7}, {DType::Q4_K, 14},
                                                           {DType::Q6_K, 18}, {DType::BF16, 32}};
        for (auto [t, ft] : ftypes)
            if (t == *matrix_types.begin()) gw.set_u32("general.file_type", ft);
    }
    struct stat st;
    const std::string tj = o.in + "/tokenizer.json";
    if (stat(tj.c_str(), &st) == 0) tokenizer_to_gguf(tj, gw, c.vocab);
    gw.write(o.out);
    std::fprintf(stderr, "convert: wrote %s\n", o.out.c_str());
}

void convert(const ConvertOptions& o) {
    struct stat st;
    if (!o.force && stat(o.out.c_str(), &st) == 0)
        fail("convert: %s exists (use --force to overwrite it)", o.out.c_str());
    const bool in_dir = stat(o.in.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    if (!in_dir && ends_with(o.in, ".gguf")) {
        if (ends_with(o.out, ".gguf")) fail("convert: GGUF to GGUF is not supported; give a directory as OUT");
        gguf_to_hf(o);
    } else if (in_dir) {
        if (!ends_with(o.out, ".gguf")) fail("convert: OUT must end in .gguf when IN is an HF directory");
        hf_to_gguf(o);
    } else {
        fail("convert: IN must be a .gguf file or an HF directory: %s", o.in.c_str());
    }
}

}  // namespace

void add_convert(CLI::App& app) {
    auto o = std::make_shared<ConvertOptions>();
    CLI::App* c = app.add_subcommand("convert", "GGUF file <-> HF directory (safetensors)");
    c->add_option("in", o->in, "Input: .gguf file or HF directory")->required();
    c->add_option("out", o->out, "Output: HF directory or .gguf file")->required();
    c->add_option("--type", o->type,
                  "Weight type of the output (default: keep; quantised -> f32 in safetensors): f32 f16 bf16 q8_0 q4_0 q4_1 q4_k q6_k");
    c->add_flag("--force", o->force, "Overwrite an existing output");
    c->callback([o] { convert(*o); });
}

}  // namespace elastic::cli
