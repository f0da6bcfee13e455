// Random-weight HF model directories (see random-model.h). The tensor names and shapes come from
// the loader's own table (tensor-names.h) applied to the config we write, so what is written is
// what Model::load asks for.
#include "model/random-model.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/tensor-names.h"
#include "tokenizer/tokenizer.h"

namespace elastic {

namespace fs = std::filesystem;

namespace {

constexpr float kStd = 0.02f;  // transformers' initializer_range for Llama and Qwen3

HFConfig preset(const std::string& arch) {
    HFConfig c;
    c.tie_word_embeddings = false;
    if (arch == "qwen3-8b" || arch == "tiny-qwen3") {
        c.architecture = "Qwen3ForCausalLM";
        c.vocab_size = 151936;
        c.max_position_embeddings = 40960;
        c.rms_norm_eps = 1e-6;
        c.rope_theta = 1000000.0;
        if (arch == "qwen3-8b") {
            c.hidden_size = 4096, c.intermediate_size = 12288, c.num_hidden_layers = 36;
            c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 128;
        } else {  // Qwen3's vocabulary and context around a 64-wide, 2-layer body: smoke tests of the real tokenizer
            c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 2;
            c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 32;
        }
    } else if (arch == "llama-3.1-8b") {
        c.architecture = "LlamaForCausalLM";
        c.hidden_size = 4096, c.intermediate_size = 14336, c.num_hidden_layers = 32;
        c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 128;
        c.vocab_size = 128256;
        c.max_position_embeddings = 131072;
        c.rms_norm_eps = 1e-5;
        c.rope_theta = 500000.0;
        c.rope_scaling.type = "llama3";
        c.rope_scaling.factor = 8.0;
        c.rope_scaling.low_freq_factor = 1.0;
        c.rope_scaling.high_freq_factor = 4.0;
        c.rope_scaling.original_max_position_embeddings = 8192;
    } else {
        std::string known;
        for (const std::string& a : random_model_archs()) known += (known.empty() ? "" : ", ") + a;
        fail("random-model: unknown arch '%s' (known: %s)", arch.c_str(), known.c_str());
    }
    return c;
}

DType parse_dtype(const std::string& s) {
    if (s == "bf16") return DType::BF16;
    if (s == "f32") return DType::F32;
    fail("random-model: unknown dtype '%s' (bf16 or f32)", s.c_str());
}

// splitmix64's output function: a bijective mix, so counter + mix is splitmix64's stream.
inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Sum of the four 16-bit parts of h (Irwin-Hall, n = 4) scaled to mean 0, variance 1: close to
// normal within ±3.46, one hash per value.
inline float near_normal(uint64_t h) {
    const uint32_t s = uint32_t(h & 0xffff) + uint32_t((h >> 16) & 0xffff) + uint32_t((h >> 32) & 0xffff) + uint32_t(h >> 48);
    constexpr float kMean = 2.0f * 65535.0f, kScale = 1.7320508f / 65536.0f;  // sqrt(12 / 4) per unit uniform
    return (float(s) - kMean) * kScale;
}

// f32_to_bf16 without the NaN branch (the values here are finite), so the loop vectorises.
inline uint16_t bf16_finite(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    x += 0x7fff + ((x >> 16) & 1);
    return uint16_t(x >> 16);
}

// The output directory: created if missing; a non-empty one only with force, and then the weight
// files and config.json of an earlier model are removed (a stale model.safetensors would win over
// the index; config.json comes back last, once the weights are complete).
void prepare_out_dir(const std::string& out, bool force) {
    std::error_code ec;
    if (out.empty()) fail("random-model: no output directory");
    if (fs::exists(out, ec)) {
        if (!fs::is_directory(out, ec)) fail("%s: exists and is not a directory", out.c_str());
        if (!fs::is_empty(out, ec)) {
            if (!force) fail("%s: directory is not empty (--force writes into it)", out.c_str());
            std::vector<fs::path> stale;
            for (const auto& e : fs::directory_iterator(out, ec)) {
                const std::string n = e.path().filename().string();
                const bool weights = n.rfind("model", 0) == 0 && n.find(".safetensors") != std::string::npos;
                if ((weights || n == "config.json") && e.is_regular_file(ec))
                    stale.push_back(e.path());
            }
            if (ec) fail("%s: cannot list: %s", out.c_str(), ec.message().c_str());
            for (const fs::path& p : stale)
                if (fs::remove(p, ec), ec) fail("%s: cannot remove: %s", p.string().c_str(), ec.message().c_str());
        }
    }
    fs::create_directories(out, ec);
    if (ec) fail("%s: cannot create directory: %s", out.c_str(), ec.message().c_str());
}

void copy_into(const fs::path& from, const fs::path& to) {
    std::error_code ec;
    if (fs::equivalent(from, to, ec)) return;  // --force over the directory the tokenizer came from
    fs::remove(to, ec);  // an earlier copy may be read-only, as the source may be
    fs::copy_file(from, to, ec);
    if (ec) fail("%s: cannot copy to %s: %s", from.string().c_str(), to.string().c_str(), ec.message().c_str());
    fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read, ec);
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << text;
    f.close();
    if (!f) fail("%s: cannot write", path.c_str());
}

}  // namespace

const std::vector<std::string>& random_model_archs() {
    static const std::vector<std::string> a = {"qwen3-8b", "llama-3.1-8b", "tiny-qwen3"};
    return a;
}

HFConfig random_model_config(const RandomModelSpec& s) {
    HFConfig c = preset(s.arch);
    if (s.layers < 0 || s.layers > 100000) fail("random-model: --layers %lld is out of range", (long long)s.layers);
    if (s.vocab < 0 || s.vocab > (int64_t(1) << 30)) fail("random-model: --vocab %lld is out of range", (long long)s.vocab);
    if (s.heads < 0 || s.heads > 4096 || s.kv_heads < 0 || s.kv_heads > 4096)
        fail("random-model: --heads %lld / --kv-heads %lld is out of range", (long long)s.heads, (long long)s.kv_heads);
    if (s.layers > 0) c.num_hidden_layers = s.layers;
    if (s.vocab > 0) c.vocab_size = s.vocab;
    if (s.heads > 0) c.num_attention_heads = s.heads;
    if (s.kv_heads > 0) c.num_key_value_heads = s.kv_heads;
    if (c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads != 0)
        fail("random-model: %lld query heads are not a multiple of %lld key/value heads", (long long)c.num_attention_heads,
             (long long)c.num_key_value_heads);
    c.torch_dtype = parse_dtype(s.dtype) == DType::BF16 ? "bfloat16" : "float32";
    return c;
}

uint64_t write_random_model(const RandomModelSpec& s, const std::function<void(const std::string&)>& log) {
    auto say = [&](const std::string& line) {
        if (log) log(line);
    };
    const auto t0 = std::chrono::steady_clock::now();
    HFConfig hc = random_model_config(s);
    const DType dtype = parse_dtype(s.dtype);
    const ModelConfig mc = config_from_hf(hc);

    // The tokenizer: must load, and fit the vocabulary (Model::load checks the same).
    if (s.tokenizer.empty()) fail("random-model: --tokenizer is required (a tokenizer.json; Model::load needs one)");
    std::error_code ec;
    const fs::path tok_json = fs::is_directory(s.tokenizer, ec) ? fs::path(s.tokenizer) / "tokenizer.json" : fs::path(s.tokenizer);
    if (!fs::is_regular_file(tok_json, ec)) fail("%s: no such tokenizer file", tok_json.string().c_str());
    auto tok = Tokenizer::from_json_file(tok_json.string());
    if (tok->vocab_size() > mc.vocab)
        fail("%s: tokenizer has %d tokens but the model's vocabulary is %d", tok_json.string().c_str(), tok->vocab_size(),
             mc.vocab);
    if (tok->bos_id() >= 0) hc.bos_token_id = tok->bos_id();
    if (tok->eos_id() >= 0) hc.eos_token_ids = {tok->eos_id()};

    // Tensors in transformers' state_dict order, named and shaped by the loader's table.
    SafetensorsStreamWriter w;
    w.set_metadata("format", "pt");
    std::vector<bool> ones;  // [tensor] norm weights
    auto add = [&](const std::string& name, std::vector<int64_t> shape, bool one) {
        w.add_tensor(name, dtype, shape);
        ones.push_back(one);
    };
    add(embedding_name(Layout::HF), {mc.vocab, mc.d_model}, false);
    for (int l = 0; l < mc.n_layer; ++l) {
        const std::string p = layer_prefix(Layout::HF, l);
        for (const MatrixSlot& m : kLayerMatrices) {
            auto [rows, cols] = matrix_shape(mc, m.field);
            add(p + slot_name(Layout::HF, m), {rows, cols}, false);
        }
        for (const VectorSlot& v : kLayerVectors)
            if (!v.qk_norm || mc.qk_norm) add(p + slot_name(Layout::HF, v), {vector_length(mc, v.field)}, true);
    }
    add(output_norm_name(Layout::HF), {mc.d_model}, true);
    if (!mc.tie_embeddings) add(output_name(Layout::HF), {mc.vocab, mc.d_model}, false);
    const uint64_t total = w.total_bytes();
    const size_t esize = dtype_nbytes(dtype, 1);

    prepare_out_dir(s.out, s.force);
    struct statvfs vfs;
    if (statvfs(s.out.c_str(), &vfs) == 0) {
        const double free_bytes = double(vfs.f_bavail) * double(vfs.f_frsize);
        if (free_bytes < double(total) + (64 << 20))
            fail("%s: the weights need %.2f GB, the disk has %.2f GB free", s.out.c_str(), double(total) / 1e9, free_bytes / 1e9);
    }
    say(strprintf("random-model: %s, %d layers, vocab %d, %.3f B parameters, %s, seed %llu: %.2f GB of weights to %s",
                  s.arch.c_str(), mc.n_layer, mc.vocab, double(total / esize) / 1e9, s.dtype.c_str(),
                  (unsigned long long)s.seed, double(total) / 1e9, s.out.c_str()));

    const fs::path out(s.out);
    copy_into(tok_json, out / "tokenizer.json");
    const fs::path tok_cfg = tok_json.parent_path() / "tokenizer_config.json";
    if (fs::is_regular_file(tok_cfg, ec)) copy_into(tok_cfg, out / "tokenizer_config.json");

    const uint64_t seed_key = mix64(s.seed);
    // One loop per case so each vectorises (1.3 ns a value on one core of this machine, against
    // 7 ns with the branches inside).
    auto fill = [&](size_t i, uint64_t offset, uint8_t* dst, size_t n) {
        const int64_t count = int64_t(n / esize);
        const uint64_t key = mix64(seed_key ^ mix64(i + 1)) + offset / esize;
        if (dtype == DType::BF16) {
            uint16_t* o = reinterpret_cast<uint16_t*>(dst);
            if (ones[i]) {
                std::fill(o, o + count, f32_to_bf16(1.0f));
                return;
            }
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < count; ++j) o[j] = bf16_finite(kStd * near_normal(mix64(key + uint64_t(j))));
        } else {
            float* o = reinterpret_cast<float*>(dst);
            if (ones[i]) {
                std::fill(o, o + count, 1.0f);
                return;
            }
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < count; ++j) o[j] = kStd * near_normal(mix64(key + uint64_t(j)));
        }
    };
    double write_seconds = 0;
    w.write_sharded(s.out, s.max_shard_bytes, fill, [&](const std::string& file, uint64_t bytes, double sec) {
        write_seconds += sec;
        say(strprintf("random-model: %s: %.2f GB in %.1f s (%.0f MB/s)", file.c_str(), double(bytes) / 1e9, sec,
                      double(bytes) / 1e6 / std::max(sec, 1e-9)));
    });

    // config.json last: a directory cut short by a failure does not look like a model.
    nlohmann::json gen = {{"_from_model_config", true}};
    gen["bos_token_id"] = hc.bos_token_id ? nlohmann::json(*hc.bos_token_id) : nlohmann::json(nullptr);
    gen["eos_token_id"] = hc.eos_token_ids.empty() ? nlohmann::json(nullptr) : nlohmann::json(hc.eos_token_ids[0]);
    write_text((out / "generation_config.json").string(), gen.dump(2) + "\n");
    write_text((out / "config.json").string(), write_hf_config(hc));
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    say(strprintf("random-model: wrote %s in %.1f s (weights %.0f MB/s)", s.out.c_str(), sec,
                  double(total) / 1e6 / std::max(write_seconds, 1e-9)));
    return total;
}

}  // namespace elastic
