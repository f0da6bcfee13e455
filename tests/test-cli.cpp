// The `elastic` binary end to end: bad input gives one line on stderr and exit code 1; tokenize,
// convert and run do their jobs. Runs build/bin/elastic through the shell.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "model/model.h"
#include "test-helpers.h"

using namespace elastic;
using namespace elastic::test;

namespace {

struct Result {
    int code;
    std::string out, err;
};

std::string tmp_dir() {
    static std::string d = [] {
        char tmpl[] = "/tmp/elastic-cli-XXXXXX";
        return std::string(mkdtemp(tmpl));
    }();
    return d;
}

// Runs `elastic ARGS` with optional stdin text; captures stdout and stderr separately.
Result run(const std::string& args, const std::string& stdin_text = "") {
    const std::string d = tmp_dir();
    const std::string in = d + "/stdin", out = d + "/stdout", err = d + "/stderr";
    std::ofstream(in) << stdin_text;
    const std::string cmd = std::string(ELASTIC_BINARY_DIR) + "/bin/elastic " + args + " <" + in + " >" + out + " 2>" + err;
    int status = std::system(cmd.c_str());
    auto slurp = [](const std::string& p) {
        std::ifstream f(p);
        return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    };
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

int count_lines(const std::string& s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    return n;
}

void expect_one_line_error(const Result& r, const std::string& needle) {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("elastic: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "wanted '" << needle << "' in: " << r.err;
}

}  // namespace

TEST(Cli, BadInputGivesOneLineAndExitCode1) {
    expect_one_line_error(run("run -m /nonexistent/model.gguf -p hi"), "No such file");
    expect_one_line_error(run("run -m " + source_path("CMakeLists.txt") + " -p hi"), "not a model");
    expect_one_line_error(run("frobnicate"), "unknown command 'frobnicate'");
    expect_one_line_error(run("run -m x.gguf -p hi --bogus-flag"), "bogus-flag");
    expect_one_line_error(run("run -m " + source_path("tests/data/tiny-qwen3") + " -p hi"), "no tokenizer");
    // A truncated GGUF and a GGUF of an architecture we do not run.
    const std::string d = tmp_dir();
    {
        GGUFWriter w;
        w.set_string("general.architecture", "gpt2");
        w.write(d + "/gpt2.gguf");
        std::ofstream(d + "/trunc.gguf") << "GGUF\x03";
    }
    expect_one_line_error(run("run -m " + d + "/gpt2.gguf -p hi"), "unsupported architecture 'gpt2'");
    expect_one_line_error(run("run -m " + d + "/trunc.gguf -p hi"), "truncated");
    expect_one_line_error(run("tokenize --tokenizer " + d + "/missing.json -p hi"), "missing.json");
    expect_one_line_error(run("convert " + d + "/trunc.gguf " + d + "/out.gguf"), "GGUF to GGUF");
}

TEST(Cli, TokenizeJsonLinesMatchesGolden) {
    nlohmann::json g = nlohmann::json::parse(std::ifstream(source_path("../shared/fixtures/tokenizers/golden_public.json")));
    for (const char* name : {"qwen3", "llama3.1"}) {
        std::string in, want;
        for (const auto& c : g[name]) {
            in += c["text"].dump() + "\n";
            want += c["ids"].dump() + "\n";
        }
        Result r = run(std::string("tokenize --json-lines --tokenizer ") + source_path("../shared/fixtures/tokenizers/") + name +
                           "/tokenizer.json",
                       in);
        EXPECT_EQ(r.code, 0) << r.err;
        EXPECT_EQ(r.out, want) << name;
    }
    Result bad = run("tokenize --json-lines --tokenizer " + source_path("../shared/fixtures/tokenizers/qwen3/tokenizer.json"),
                     "\"ok\"\nnot json\n");
    EXPECT_EQ(bad.code, 1);
    EXPECT_EQ(bad.out, "[562]\nnull\n");
}

TEST(Cli, ConvertHfToGgufAndBackKeepsLogits) {
    // tiny Llama (llama3 rope scaling, tied) : HF dir -> GGUF (Q/K permuted, rope_freqs) -> HF dir.
    const std::string d = tmp_dir();
    const std::string src = source_path("tests/data/tiny-llama3");
    Result a = run("convert " + src + " " + d + "/tiny.gguf");
    ASSERT_EQ(a.code, 0) << a.err;
    expect_one_line_error(run("convert " + src + " " + d + "/tiny.gguf"), "exists (use --force");  // never overwritten silently
    ASSERT_EQ(run("convert " + src + " " + d + "/tiny.gguf --force").code, 0);
    Result b = run("convert " + d + "/tiny.gguf " + d + "/tiny-hf");
    ASSERT_EQ(b.code, 0) << b.err;
    auto be = make_cpu_backend(0);
    std::vector<int32_t> ids = {3, 77, 200, 5, 383, 12, 99, 150, 42, 7};
    std::vector<std::vector<float>> logits;
    for (const std::string& p : {src, d + "/tiny.gguf", d + "/tiny-hf"}) {
        auto m = Model::load(p);
        Engine e(*m, *be);
        Session s(e, 16);
        s.forward(ids.data(), int64_t(ids.size()));
        logits.push_back(s.last_logits());
    }
    EXPECT_LT(max_rel_err(logits[1], logits[0]), 1e-6);
    EXPECT_LT(max_rel_err(logits[2], logits[0]), 1e-6);
    // Quantised output: the Q8_0 GGUF computes exactly what its own dequantised f32 copy computes.
    Result q = run("convert " + src + " " + d + "/tiny-q8.gguf --type q8_0");
    ASSERT_EQ(q.code, 0) << q.err;
    Result qf = run("convert " + d + "/tiny-q8.gguf " + d + "/tiny-q8-hf");
    ASSERT_EQ(qf.code, 0) << qf.err;
    std::vector<std::vector<float>> ql;
    for (const std::string& p : {d + "/tiny-q8.gguf", d + "/tiny-q8-hf"}) {
        auto m = Model::load(p);
        Engine e(*m, *be);
        Session s(e, 16);
        s.forward(ids.data(), int64_t(ids.size()));
        ql.push_back(s.last_logits());
    }
    EXPECT_LT(max_rel_err(ql[0], ql[1]), 1e-5);
}

TEST(Cli, SmolLM2ChatSaysParis) {
    const std::string model = default_model_path();
    if (!file_exists(model)) GTEST_SKIP() << "default model not fetched (make model)";
    Result r = run("run -m " + model + " --chat -p \"What is the capital of France?\" -n 12 --temp 0");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("Paris"), std::string::npos) << r.out;
    EXPECT_NE(r.err.find("prefill"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("peak memory"), std::string::npos) << r.err;
    // The prompt longer than the context is refused.
    Result big = run("run -m " + model + " -p \"one two three four five six\" --ctx 3");
    EXPECT_EQ(big.code, 1);
    EXPECT_NE(big.err.find("more than --ctx"), std::string::npos) << big.err;
    // A round trip of the real model: GGUF -> HF directory, loaded back, same greedy answer.
    const std::string d = tmp_dir();
    Result c = run("convert " + model + " " + d + "/smol-hf --type bf16");
    ASSERT_EQ(c.code, 0) << c.err;
    Result r2 = run("run -m " + d + "/smol-hf --chat -p \"What is the capital of France?\" -n 12 --temp 0");
    EXPECT_EQ(r2.code, 0) << r2.err;
    EXPECT_NE(r2.out.find("Paris"), std::string::npos) << r2.out;
}

TEST(Cli, PplJson) {
    const std::string model = default_model_path();
    if (!file_exists(model)) GTEST_SKIP() << "default model not fetched (make model)";
    const std::string d = tmp_dir();
    std::ofstream(d + "/text.txt") << "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.";
    Result r = run("ppl -m " + model + " -f " + d + "/text.txt --json --per-token --ctx 16");
    ASSERT_EQ(r.code, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_GT(j["tokens"].get<int>(), 16);
    EXPECT_GT(j["ppl"].get<double>(), 1.0);
    EXPECT_EQ(j["per_token"].size(), j["tokens"].get<size_t>());
    EXPECT_TRUE(j["per_token"][0]["logprob"].is_null());
    EXPECT_TRUE(j["per_token"][16]["logprob"].is_null());  // first token of the second window
}

// A Qwen3 model's embedding has more rows (151936) than its tokenizer has tokens (151669): the
// GGUF's token list is padded to the embedding with "[PAD<id>]" entries of type UNUSED (5), as
// Hugging Face's converter does, because llama.cpp takes the vocabulary size from that list and
// refuses a file whose token_embd has more rows. The GGUF still computes the HF directory's logits.
TEST(Cli, ConvertPadsTheTokenListToTheEmbedding) {
    const std::string d = tmp_dir() + "/pad", m = d + "/tiny";
    std::filesystem::create_directories(d);
    const Result made = run("random-model --arch tiny-qwen3 --tokenizer " + source_path("../shared/fixtures/tokenizers/qwen3/tokenizer.json") +
                            " -o " + m);
    ASSERT_EQ(made.code, 0) << made.err;
    const Result c = run("convert " + m + " " + d + "/tiny.gguf");
    ASSERT_EQ(c.code, 0) << c.err;
    auto f = GGUFFile::open(d + "/tiny.gguf");
    const std::vector<std::string> tokens = f->get_string_array("tokenizer.ggml.tokens");
    const std::vector<double> types = f->get_number_array("tokenizer.ggml.token_type");
    auto model = Model::load(m);
    ASSERT_EQ(int64_t(tokens.size()), int64_t(model->config.vocab));
    ASSERT_EQ(types.size(), tokens.size());
    ASSERT_GT(tokens.size(), 151669u);
    EXPECT_EQ(tokens[151669], "[PAD151669]");
    EXPECT_EQ(types[151669], 5.0);
    EXPECT_EQ(tokens.back(), "[PAD" + std::to_string(tokens.size() - 1) + "]");
    EXPECT_EQ(tokens[151643], "<|endoftext|>");  // the tokenizer's own ids are where they were
    EXPECT_EQ(f->get_int("general.file_type", -1), 32);  // llama_ftype MOSTLY_BF16: random-model writes bf16
    auto be = make_cpu_backend(0);
    std::vector<std::vector<float>> logits;
    const std::vector<int32_t> ids = {9707, 1879, 11, 151643, 3};
    for (const std::string& p : {m, d + "/tiny.gguf"}) {
        auto mm = Model::load(p);
        ASSERT_TRUE(mm->tokenizer);
        EXPECT_EQ(mm->tokenizer->encode("Hello world"), model->tokenizer->encode("Hello world"));
        Engine e(*mm, *be);
        Session s(e, 16);
        s.forward(ids.data(), int64_t(ids.size()));
        logits.push_back(s.last_logits());
    }
    EXPECT_LT(max_rel_err(logits[1], logits[0]), 1e-6);
    // Back to an HF directory: the placeholders are not tokens of its tokenizer.json.
    const Result back = run("convert " + d + "/tiny.gguf " + d + "/tiny-hf");
    ASSERT_EQ(back.code, 0) << back.err;
    std::ifstream tj(d + "/tiny-hf/tokenizer.json");
    const nlohmann::json j = nlohmann::json::parse(tj);
    EXPECT_EQ(j.at("model").at("vocab").size(), 151669u);
    EXPECT_FALSE(j.at("model").at("vocab").contains("[PAD151669]"));
}

// `run -v` prints the backend, the stop reason and a hash of the logits: the same run twice gives the
// same hash, another prompt another one; a context too small says why generation stopped.
TEST(Cli, RunVerbosePrintsALogitsHash) {
    // A tiny random Qwen3 with the real Qwen3 tokenizer (from ../shared), made by random-model.
    const std::string m = tmp_dir() + "/tiny";
    const Result made = run("random-model --arch tiny-qwen3 --tokenizer " + source_path("../shared/fixtures/tokenizers/qwen3/tokenizer.json") +
                            " -o " + m);
    ASSERT_EQ(made.code, 0) << made.err;
    auto hash_of = [&](const std::string& prompt) {
        const Result r = run("run -m " + m + " -p '" + prompt + "' -n 6 --temp 0 -v");
        EXPECT_EQ(r.code, 0) << r.err;
        const size_t at = r.err.find("logits hash ");
        EXPECT_NE(at, std::string::npos) << r.err;
        EXPECT_NE(r.err.find("backend cpu"), std::string::npos) << r.err;
        return at == std::string::npos ? std::string() : r.err.substr(at + 12, 16);
    };
    const std::string a = hash_of("hello world"), b = hash_of("hello world"), c = hash_of("another prompt");
    EXPECT_EQ(a.size(), 16u);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    const Result full = run("run -m " + m + " -p 'hello world' --ctx 4 -n 20 --temp 0");
    EXPECT_EQ(full.code, 0) << full.err;
    EXPECT_NE(full.err.find("context of 4 tokens is full"), std::string::npos) << full.err;
    // Thread counts: more than the machine has is clamped with a warning (100000 once crashed in
    // the OpenMP runtime); 0 or negative threads or context are errors, like -n.
    const Result many = run("run -m " + m + " -p 'hello' -n 2 --temp 0 -t 100000");
    EXPECT_EQ(many.code, 0) << many.err;
    EXPECT_NE(many.err.find("100000 threads requested"), std::string::npos) << many.err;
    for (const char* bad : {"-t 0", "-t -3", "--ctx 0", "--ctx -5"}) {
        const Result r = run("run -m " + m + " -p 'hello' -n 2 " + bad);
        EXPECT_EQ(r.code, 1) << bad << ": " << r.err;
        EXPECT_NE(r.err.find("not in range"), std::string::npos) << bad << ": " << r.err;
    }
}

// `bench tp`: the per-rank table for both placements, the check against one process, JSON; bad
// flags are one line. A tiny random Qwen3 with 4 KV heads, two FA heads side by side in each layer.
TEST(Cli, BenchTpPrintsTheSplit) {
    const std::string d = tmp_dir(), m = d + "/tiny-tp";
    const Result made = run("random-model --arch tiny-qwen3 --layers 2 --heads 8 --kv-heads 4 --tokenizer " +
                            source_path("../shared/fixtures/tokenizers/qwen3/tokenizer.json") + " -o " + m);
    ASSERT_EQ(made.code, 0) << made.err;
    std::ofstream(d + "/tp-heads.txt") << "1 1 0 0\n0 0 1 1\n";
    std::string text;
    for (int i = 0; i < 40; ++i) text += "Tensor parallel ranks share the heads of every layer. ";
    std::ofstream(d + "/tp-text.txt") << text;
    const std::string base = "bench tp -m " + m + " --text " + d + "/tp-text.txt --attention static:" + d +
                             "/tp-heads.txt --sink 4 --local 16 -n 3 ";
    const Result r = run(base + "-p 128 --ranks 2 --placement both --check");
    ASSERT_EQ(r.code, 0) << r.err;
    for (const char* want : {"balanced placement", "contiguous placement", "| rank | KV heads", "imbalance",
                             "greedy tokens identical", "not multi-GPU speed"})
        EXPECT_NE(r.out.find(want), std::string::npos) << want << " in:\n" << r.out;
    const Result j = run(base + "-p 128 --ranks 3 --placement balanced --json");
    ASSERT_EQ(j.code, 0) << j.err;
    const nlohmann::json v = nlohmann::json::parse(j.out);
    ASSERT_EQ(v["results"].size(), 1u);
    EXPECT_EQ(v["results"][0]["placement"], "balanced");
    EXPECT_EQ(v["results"][0]["ranks"].size(), 3u);
    EXPECT_GE(v["results"][0]["pairs_layer_slowest_over_mean"].get<double>(), 1.0);
    expect_one_line_error(run(base + "--ranks 0"), "--ranks must be >= 1");
    expect_one_line_error(run(base + "--placement round-robin"), "--placement must be balanced, contiguous or both");
    expect_one_line_error(run(base + "-p 0"), "-p must be >= 1");
    expect_one_line_error(run(base + "-p 64 --ranks 1000"), "cannot be split over 1000 ranks");
}

// `train-router plot LOG --png F` draws a training log; a missing log is one clear line; plain
// `train-router` without -m says so.
TEST(Cli, TrainRouterPlot) {
    const std::string d = tmp_dir();
    {
        std::ofstream f(d + "/log.jsonl");
        for (int s = 1; s <= 5; ++s)
            f << "{\"step\": " << s << ", \"lm_loss\": " << 2.0 / s << ", \"omega\": {\"robust\": " << 0.1 * s << "}}\n";
    }
#ifdef ELASTIC_HAVE_CAIRO
    const Result ok = run("train-router plot " + d + "/log.jsonl --png " + d + "/curves.png");
    EXPECT_EQ(ok.code, 0) << ok.err;
    EXPECT_TRUE(std::ifstream(d + "/curves.png").good());
#endif
    const Result missing = run("train-router plot " + d + "/nope.jsonl --png " + d + "/x.png");
    EXPECT_EQ(missing.code, 1);
    EXPECT_NE(missing.err.find("cannot open"), std::string::npos) << missing.err;
    const Result no_model = run("train-router --data " + d + "/log.jsonl -o " + d + "/r.safetensors");
    EXPECT_EQ(no_model.code, 1);
    EXPECT_NE(no_model.err.find("-m is required"), std::string::npos) << no_model.err;
}

// A bad ELASTIC_CPU_KERNELS is one clear line before any work.
TEST(Cli, BadCpuKernelsIsOneLine) {
    const std::string model = default_model_path();
    if (!file_exists(model)) GTEST_SKIP() << "default model not fetched (make model)";
    setenv("ELASTIC_CPU_KERNELS", "bogus", 1);
    Result r = run("run -m " + model + " -p hi -n 2");
    unsetenv("ELASTIC_CPU_KERNELS");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("ELASTIC_CPU_KERNELS=bogus: expected vnni, avx2, scalar or f32"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
    setenv("ELASTIC_CPU_KERNELS", "f32", 1);
    Result ok = run("run -m " + model + " -p hi -n 2 -v");
    unsetenv("ELASTIC_CPU_KERNELS");
    EXPECT_EQ(ok.code, 0) << ok.err;
    EXPECT_NE(ok.err.find("decode kernels f32"), std::string::npos) << ok.err;
}
