// Token ids against Hugging Face `tokenizers`: the public fixtures (Qwen3, Llama-3.1 tokenizer.json,
// golden ids from HF tokenizers 0.23.2) and SmolLM2 loaded from its GGUF (tests/golden/
// tokenizer-smollm2.json, made by scripts/golden/make-tokenizer-golden.py). Every case must match
// exactly and decode back to its text.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

using namespace elastic;

namespace {

const std::string kFixtures = ELASTIC_SOURCE_DIR "/../shared/fixtures/tokenizers";

nlohmann::json load_json(const std::string& path) {
    std::ifstream f(path);
    EXPECT_TRUE(f.good()) << path;
    return nlohmann::json::parse(f);
}

std::string smollm2_path() {
    const char* env = std::getenv("ELASTIC_MODEL");
    std::string p = env && *env ? env : ELASTIC_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    struct stat st;
    return stat(p.c_str(), &st) == 0 ? p : "";
}

std::string show(const std::vector<int32_t>& v) {
    std::string s;
    for (int32_t x : v) s += std::to_string(x) + " ";
    return s;
}

void check_golden(const Tokenizer& tok, const nlohmann::json& cases, const char* name) {
    ASSERT_TRUE(cases.is_array());
    int ok = 0;
    for (const auto& c : cases) {
        const std::string text = c.at("text").get<std::string>();
        const std::vector<int32_t> want = c.at("ids").get<std::vector<int32_t>>();
        std::vector<int32_t> got = tok.encode(text);
        EXPECT_EQ(got, want) << name << " text: " << nlohmann::json(text).dump() << "\n  got:  " << show(got)
                             << "\n  want: " << show(want);
        EXPECT_EQ(tok.decode(got), text) << name << " round trip of " << nlohmann::json(text).dump();
        ok += got == want;
    }
    std::printf("[golden] %s: %d/%zu cases match HF\n", name, ok, cases.size());
}

}  // namespace

TEST(TokenizerGolden, Qwen3) {
    auto tok = Tokenizer::from_path(kFixtures + "/qwen3/tokenizer.json");
    check_golden(*tok, load_json(kFixtures + "/golden_public.json").at("qwen3"), "qwen3");
}

TEST(TokenizerGolden, Llama31) {
    auto tok = Tokenizer::from_path(kFixtures + "/llama3.1");  // directory form
    check_golden(*tok, load_json(kFixtures + "/golden_public.json").at("llama3.1"), "llama3.1");
}

TEST(TokenizerGolden, SmolLM2FromGGUF) {
    std::string path = smollm2_path();
    if (path.empty()) GTEST_SKIP() << "SmolLM2 GGUF not found (set ELASTIC_MODEL)";
    auto tok = Tokenizer::from_path(path);
    check_golden(*tok, load_json(ELASTIC_SOURCE_DIR "/tests/golden/tokenizer-smollm2.json").at("smollm2"), "smollm2");
    EXPECT_EQ(tok->vocab_size(), 49152);
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->eos_id(), 2);
    EXPECT_EQ(tok->stop_ids(), (std::vector<int32_t>{2, 0}));
    EXPECT_TRUE(tok->is_special(0));
    EXPECT_FALSE(tok->is_special(17));
}

// Bytes whose byte-level token is missing from the vocabulary (SmolLM2 has none for 0x04, 0x06,
// 0x13, 0x14, 0x16, 0x1d) are dropped, as Hugging Face tokenizers 0.23.3 does for a BPE model
// without unk_token: ids from tokenizers.models.BPE(vocab, merges, unk_token=None) built from this
// GGUF's vocabulary and merges, with Digits(individual) + ByteLevel pre-tokenizers. Found by
// fuzz/fuzz-bpe-roundtrip (docs/reliability.md).
TEST(TokenizerGolden, SmolLM2DropsBytesWithoutToken) {
    std::string path = smollm2_path();
    if (path.empty()) GTEST_SKIP() << "SmolLM2 GGUF not found (set ELASTIC_MODEL)";
    auto tok = Tokenizer::from_path(path);
    EXPECT_EQ(tok->encode("202\x16-12 a\x04" "b", false), (std::vector<int32_t>{34, 32, 34, 29, 33, 34, 253, 82}));
    EXPECT_EQ(tok->decode(tok->encode("a\x04\x06\x13\x14\x16\x1d" "b", false)), "ab");
}

TEST(TokenizerGolden, SmolLM2ChatTemplate) {
    std::string path = smollm2_path();
    if (path.empty()) GTEST_SKIP() << "SmolLM2 GGUF not found (set ELASTIC_MODEL)";
    auto tok = Tokenizer::from_path(path);
    ASSERT_EQ(tok->chat_template(), ChatTemplate::ChatML);
    EXPECT_EQ(tok->apply_chat_template({{"user", "Hi!"}}),
              "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
              "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(tok->apply_chat_template({{"system", "Be brief."}, {"user", "Hi!"}, {"assistant", "Hello."}}, false),
              "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
              "<|im_start|>assistant\nHello.<|im_end|>\n");
    std::vector<int32_t> ids = tok->encode(tok->apply_chat_template({{"user", "Hi!"}}));
    EXPECT_EQ(ids.front(), 1);  // <|im_start|> parsed as one special token
}
