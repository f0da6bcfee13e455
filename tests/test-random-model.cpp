// `elastic random-model` (src/model/random-model.*): a tiny random model written with our
// safetensors stream writer loads with Model::load and runs a finite forward on the CPU; the
// presets match the real configs; the same seed gives the same bytes; mistakes are one clear error.
// The tokenizer is a 257-token byte-level BPE written by the test itself (no files outside tests/).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "model/random-model.h"
#include "test-helpers.h"
#include "tiny-model.h"

using namespace elastic;
using namespace elastic::test;
namespace fs = std::filesystem;

namespace {

RandomModelSpec tiny_spec(const TmpDir& t, const std::string& out) {
    RandomModelSpec s;
    s.arch = "tiny-qwen3";
    s.vocab = 512;
    s.tokenizer = write_byte_tokenizer(t.path / "tok");
    s.out = (t.path / out).string();
    return s;
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
    try {
        f();
        ADD_FAILURE() << "no error; wanted one containing '" << needle << "'";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "wanted '" << needle << "' in: " << e.what();
    }
}

}  // namespace

TEST(RandomModel, TinyLoadsAndRunsFinite) {
    TmpDir t;
    RandomModelSpec s = tiny_spec(t, "m");
    s.layers = 3;
    s.max_shard_bytes = 100000;  // several shards and an index, as for the 8B model
    std::vector<std::string> lines;
    const uint64_t bytes = write_random_model(s, [&](const std::string& l) { lines.push_back(l); });
    // embed + lm_head [512, 64]; per layer q, o [128, 64], k, v [64, 64], gate, up, down 64x128; norms
    const uint64_t params = 2 * 512 * 64 + 3 * (2 * 128 * 64 + 2 * 64 * 64 + 3 * 64 * 128 + 2 * 64 + 2 * 32) + 64;
    EXPECT_EQ(bytes, 2 * params);
    ASSERT_TRUE(fs::exists(fs::path(s.out) / "model.safetensors.index.json"));
    EXPECT_FALSE(fs::exists(fs::path(s.out) / "model.safetensors"));
    EXPECT_TRUE(fs::exists(fs::path(s.out) / "tokenizer_config.json"));
    EXPECT_TRUE(fs::exists(fs::path(s.out) / "generation_config.json"));
    int shards = 0;
    for (const auto& e : fs::directory_iterator(s.out)) shards += e.path().extension() == ".safetensors";
    EXPECT_GE(shards, 3);
    EXPECT_EQ(lines.size(), size_t(shards) + 2);  // a header line, one per shard, a summary

    auto m = Model::load(s.out);
    EXPECT_EQ(m->config.arch, Arch::Qwen3);
    EXPECT_TRUE(m->config.qk_norm);
    EXPECT_EQ(m->config.n_layer, 3);
    EXPECT_EQ(m->config.vocab, 512);
    EXPECT_EQ(m->config.d_model, 64);
    EXPECT_EQ(m->config.max_ctx, 40960);
    EXPECT_FALSE(m->config.tie_embeddings);
    EXPECT_EQ(m->weights.tok_embd.type, DType::BF16);
    EXPECT_NE(m->weights.output.data, m->weights.tok_embd.data);
    ASSERT_TRUE(m->tokenizer);
    EXPECT_EQ(m->tok().eos_id(), 256);
    nlohmann::json cfg = nlohmann::json::parse(slurp(fs::path(s.out) / "config.json"));
    EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
    EXPECT_EQ(cfg["eos_token_id"], 256);

    // Matrices: mean 0, std 0.02, bounded by the sum of four uniforms (±3.46 std); norms 1.
    std::vector<float> e = weight_to_f32(m->weights.tok_embd);
    double sum = 0, sq = 0, peak = 0;
    for (float x : e) sum += x, sq += double(x) * x, peak = std::max(peak, double(std::fabs(x)));
    const double mean = sum / double(e.size()), sd = std::sqrt(sq / double(e.size()) - mean * mean);
    EXPECT_LT(std::fabs(mean), 0.002);
    EXPECT_NEAR(sd, 0.02, 0.001);
    EXPECT_LT(peak, 0.02 * 3.47);
    for (float x : m->weights.layers[2].q_norm) EXPECT_EQ(x, 1.0f);

    auto be = make_cpu_backend(0);
    std::vector<int32_t> ids = m->tok().encode("The quick brown fox jumps over the lazy dog.");
    ASSERT_GT(ids.size(), 10u);
    Engine engine(*m, *be);
    Session sess(engine, 64);
    sess.forward(ids.data(), int64_t(ids.size()));
    const std::vector<float>& logits = sess.last_logits();
    double lsq = 0;
    for (float x : logits) {
        ASSERT_TRUE(std::isfinite(x));
        lsq += double(x) * x;
    }
    EXPECT_GT(lsq, 0.0);
    int32_t next = 7;
    sess.forward(&next, 1);
    for (float x : sess.last_logits()) ASSERT_TRUE(std::isfinite(x));
}

TEST(RandomModel, SameSeedSameBytesAndBf16IsRoundedF32) {
    TmpDir t;
    RandomModelSpec s = tiny_spec(t, "a");
    s.dtype = "f32";
    write_random_model(s);
    s.out = (t.path / "b").string();
    write_random_model(s);
    s.out = (t.path / "c").string();
    s.seed = 2;
    write_random_model(s);
    s.out = (t.path / "d").string();
    s.seed = 1;
    s.dtype = "bf16";
    write_random_model(s);
    const std::string shard = "model-00001-of-00001.safetensors";
    EXPECT_EQ(slurp(t.path / "a" / shard), slurp(t.path / "b" / shard));
    EXPECT_NE(slurp(t.path / "a" / shard), slurp(t.path / "c" / shard));

    auto f32 = Model::load((t.path / "a").string());
    auto bf16 = Model::load((t.path / "d").string());
    EXPECT_EQ(f32->weights.layers[0].w_down.type, DType::F32);
    std::vector<float> a = weight_to_f32(f32->weights.layers[0].w_down), d = weight_to_f32(bf16->weights.layers[0].w_down);
    EXPECT_EQ(round_bf16(a), d);
}

TEST(RandomModel, PresetsMatchTheRealConfigs) {
    RandomModelSpec s;
    s.arch = "qwen3-8b";
    HFConfig q = parse_hf_config_text(write_hf_config(random_model_config(s)), "qwen3-8b");
    EXPECT_EQ(q.architecture, "Qwen3ForCausalLM");
    EXPECT_EQ(q.hidden_size, 4096);
    EXPECT_EQ(q.num_hidden_layers, 36);
    EXPECT_EQ(q.num_attention_heads, 32);
    EXPECT_EQ(q.num_key_value_heads, 8);
    EXPECT_EQ(q.head_dim, 128);
    EXPECT_EQ(q.intermediate_size, 12288);
    EXPECT_EQ(q.vocab_size, 151936);
    EXPECT_EQ(q.max_position_embeddings, 40960);
    EXPECT_DOUBLE_EQ(q.rms_norm_eps, 1e-6);
    EXPECT_DOUBLE_EQ(q.rope_theta, 1e6);
    EXPECT_FALSE(q.tie_word_embeddings);
    EXPECT_EQ(q.torch_dtype, "bfloat16");

    s.arch = "llama-3.1-8b";
    s.layers = 2;
    s.dtype = "f32";
    HFConfig l = parse_hf_config_text(write_hf_config(random_model_config(s)), "llama-3.1-8b");
    EXPECT_EQ(l.architecture, "LlamaForCausalLM");
    EXPECT_EQ(l.num_hidden_layers, 2);
    EXPECT_EQ(l.intermediate_size, 14336);
    EXPECT_EQ(l.vocab_size, 128256);
    EXPECT_EQ(l.max_position_embeddings, 131072);
    EXPECT_DOUBLE_EQ(l.rope_theta, 500000.0);
    EXPECT_EQ(l.rope_scaling.type, "llama3");
    EXPECT_DOUBLE_EQ(l.rope_scaling.factor, 8.0);
    EXPECT_DOUBLE_EQ(l.rope_scaling.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(l.rope_scaling.high_freq_factor, 4.0);
    EXPECT_EQ(l.rope_scaling.original_max_position_embeddings, 8192);
    EXPECT_EQ(l.torch_dtype, "float32");
}

TEST(RandomModel, MistakesAreOneClearError) {
    TmpDir t;
    RandomModelSpec s = tiny_spec(t, "m");
    RandomModelSpec bad = s;
    bad.arch = "gpt-5";
    expect_error([&] { write_random_model(bad); }, "unknown arch 'gpt-5' (known: qwen3-8b, llama-3.1-8b, tiny-qwen3)");
    bad = s;
    bad.dtype = "q4_0";
    expect_error([&] { write_random_model(bad); }, "unknown dtype 'q4_0'");
    bad = s;
    bad.tokenizer = "";
    expect_error([&] { write_random_model(bad); }, "--tokenizer is required");
    bad.tokenizer = (t.path / "missing.json").string();
    expect_error([&] { write_random_model(bad); }, "missing.json: no such tokenizer file");
    bad = s;
    bad.vocab = 100;
    expect_error([&] { write_random_model(bad); }, "tokenizer has 257 tokens but the model's vocabulary is 100");
    EXPECT_FALSE(fs::exists(s.out));  // nothing is written before the checks pass

    fs::create_directories(s.out);
    std::ofstream(fs::path(s.out) / "notes.txt") << "keep me";
    expect_error([&] { write_random_model(s); }, "directory is not empty (--force writes into it)");
    // --force: a stale single-file model (which the loader would prefer) goes, other files stay.
    std::ofstream(fs::path(s.out) / "model.safetensors") << "stale";
    s.force = true;
    write_random_model(s);
    EXPECT_FALSE(fs::exists(fs::path(s.out) / "model.safetensors"));
    EXPECT_TRUE(fs::exists(fs::path(s.out) / "notes.txt"));
    EXPECT_EQ(Model::load(s.out)->config.vocab, 512);
}

TEST(RandomModel, CliWritesAModelRouterInitLoadsIt) {
    TmpDir t;
    const std::string tok = write_byte_tokenizer(t.path / "tok");
    const std::string bin = std::string(ELASTIC_BINARY_DIR) + "/bin/elastic ";
    const std::string err = (t.path / "stderr").string();
    auto run = [&](const std::string& args) {
        int st = std::system((bin + args + " >/dev/null 2>" + err).c_str());
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    };
    auto one_line = [&](const std::string& needle) {
        std::string e = slurp(err);
        EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1) << e;
        EXPECT_NE(e.find("elastic: "), std::string::npos) << e;
        EXPECT_NE(e.find(needle), std::string::npos) << "wanted '" << needle << "' in: " << e;
    };
    const std::string out = (t.path / "m").string();
    ASSERT_EQ(run("random-model --arch tiny-qwen3 --vocab 512 --layers 2 --shard-mb 0.1 --tokenizer " + tok + " -o " + out), 0)
        << slurp(err);
    EXPECT_NE(slurp(err).find("MB/s"), std::string::npos);
    ASSERT_EQ(run("router-init -m " + out + " -o " + out + "/router.safetensors"), 0) << slurp(err);
    EXPECT_EQ(run("run -m " + out + " -p hello -n 2 --attention msr:0.5 --router " + out + "/router.safetensors"), 0)
        << slurp(err);

    EXPECT_EQ(run("random-model --arch nope --tokenizer " + tok + " -o " + (t.path / "x").string()), 1);
    one_line("unknown arch 'nope'");
    EXPECT_EQ(run("random-model --arch tiny-qwen3 --vocab 512 --tokenizer " + tok + " -o " + out), 1);
    one_line("directory is not empty");
    EXPECT_EQ(run("random-model --arch tiny-qwen3 -o " + (t.path / "y").string()), 1);
    one_line("--tokenizer is required");
    EXPECT_FALSE(fs::exists(t.path / "y"));
}
