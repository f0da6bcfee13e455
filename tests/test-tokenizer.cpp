// Tokenizer behaviour on small hand-made inputs: both merges formats, added/special token
// splitting, byte-level decoding of characters split across tokens, NFC, chat templates, the
// GGUF loader on an in-memory vocabulary, malformed inputs (elastic::Error, never a crash) and a
// 1 MB encode.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/error.h"
#include "formats/gguf.h"
#include "tokenizer/bpe-tokenizer.h"
#include "tokenizer/unicode-nfc.h"

using namespace elastic;
using nlohmann::json;

namespace {

const std::string kFixtures = ELASTIC_SOURCE_DIR "/../shared/fixtures/tokenizers";

// A unique scratch path under the build tree.
std::string scratch(const std::string& name) {
    return std::string(ELASTIC_BINARY_DIR) + "/tok-test-" + std::to_string(getpid()) + "-" + name;
}

std::string write_file(const std::string& name, const std::string& text) {
    std::string p = scratch(name);
    std::ofstream(p, std::ios::binary) << text;
    return p;
}

// Byte-level vocabulary for "a b c ␠" plus a few merges; Ġ is the byte-level space.
json tiny_tokenizer(bool pair_merges) {
    json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"Ġ", 3}, {"ab", 4}, {"abc", 5}, {"Ġa", 6}, {"Ġab", 7}};
    std::vector<std::pair<std::string, std::string>> m = {{"Ġ", "a"}, {"a", "b"}, {"ab", "c"}, {"Ġa", "b"}};
    json merges = json::array();
    for (auto& [l, r] : m) merges.push_back(pair_merges ? json::array({l, r}) : json(l + " " + r));
    return {
        {"version", "1.0"},
        {"added_tokens", json::array({{{"id", 8}, {"content", "<s>"}, {"special", true}, {"lstrip", false},
                                       {"rstrip", false}, {"normalized", false}, {"single_word", false}},
                                      {{"id", 9}, {"content", "<pad>"}, {"special", false}, {"lstrip", true},
                                       {"rstrip", true}, {"normalized", false}, {"single_word", false}}})},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
    };
}

std::unique_ptr<Tokenizer> load_json_text(const std::string& name, const std::string& text) {
    return Tokenizer::from_json_file(write_file(name, text));
}

}  // namespace

TEST(Tokenizer, MergesStringAndPairFormatsAgree) {
    auto s = load_json_text("str.json", tiny_tokenizer(false).dump());
    auto p = load_json_text("pair.json", tiny_tokenizer(true).dump());
    // Expected ids checked with HF tokenizers on the same JSON. " aab": Ġ+a merges first (rank 0),
    // then a+b, leaving Ġa|ab since "Ġa ab" is no merge.
    for (auto* t : {s.get(), p.get()}) {
        EXPECT_EQ(t->encode("abc ab aab"), (std::vector<int32_t>{5, 7, 6, 4}));
        EXPECT_EQ(t->encode("cab"), (std::vector<int32_t>{2, 4}));
        EXPECT_EQ(t->decode(t->encode("abc ab aab")), "abc ab aab");
        EXPECT_EQ(t->vocab_size(), 10);
    }
    EXPECT_EQ(s->encode("abc ab a ab c"), p->encode("abc ab a ab c"));
}

TEST(Tokenizer, SpecialTokensSplitFirst) {
    auto t = load_json_text("special.json", tiny_tokenizer(false).dump());
    EXPECT_EQ(t->encode("ab<s>c"), (std::vector<int32_t>{4, 8, 2}));
    EXPECT_EQ(t->encode("<s><s>"), (std::vector<int32_t>{8, 8}));
    // parse_special = false: the special token is plain text (its characters are not in the vocab).
    EXPECT_EQ(t->encode("ab<s>c", false), (std::vector<int32_t>{4, 2}));
    // lstrip/rstrip eat the spaces around <pad>.
    EXPECT_EQ(t->encode("ab <pad> c"), (std::vector<int32_t>{4, 9, 2}));
    EXPECT_TRUE(t->is_special(8));
    EXPECT_FALSE(t->is_special(9));
    EXPECT_EQ(t->decode({4, 8, 2}), "ab<s>c");
    EXPECT_EQ(t->decode({4, 8, 2}, true), "abc");
    EXPECT_EQ(t->token_id("<s>"), 8);
    EXPECT_EQ(t->token_id("Ġab"), 7);
    EXPECT_EQ(t->token_id("zzz"), -1);
    EXPECT_EQ(t->token_text(7), "Ġab");
}

TEST(Tokenizer, RealSpecialTokensLongestMatch) {
    auto q = Tokenizer::from_path(kFixtures + "/qwen3/tokenizer.json");
    std::vector<int32_t> ids = q->encode("<|im_start|>user\nhi<|im_end|>");
    ASSERT_GE(ids.size(), 3u);
    EXPECT_EQ(ids.front(), q->token_id("<|im_start|>"));
    EXPECT_EQ(ids.back(), q->token_id("<|im_end|>"));
    std::vector<int32_t> plain = q->encode("<|im_start|>", false);
    EXPECT_GT(plain.size(), 1u);
    EXPECT_EQ(q->decode(plain), "<|im_start|>");
}

TEST(Tokenizer, DecodeCharactersSplitAcrossTokens) {
    auto q = Tokenizer::from_path(kFixtures + "/qwen3/tokenizer.json");
    auto* bt = dynamic_cast<BpeTokenizer*>(q.get());
    ASSERT_NE(bt, nullptr);
    // Lone byte tokens: 0xE4 is the first byte of a 3-byte sequence, 0x80 a stray continuation.
    int32_t e4 = q->token_id("ä");  // GPT-2 bytes_to_unicode maps byte 0xE4 to U+00E4
    ASSERT_GE(e4, 0);
    EXPECT_EQ(bt->decode_bytes({e4}), "\xE4");
    EXPECT_EQ(q->decode({e4}), "\xEF\xBF\xBD");  // HF: from_utf8_lossy
    // A rare character split over several tokens: each piece alone is invalid, all together exact.
    const std::string text = "\xF0\x93\x80\x80 \xF0\x9D\x94\x98";  // U+13000 U+1D518
    std::vector<int32_t> ids = q->encode(text);
    EXPECT_EQ(q->decode(ids), text);
    std::string joined;
    bool some_partial = false;
    for (int32_t id : ids) {
        std::string b = bt->decode_bytes({id});
        joined += b;
        some_partial |= !utf8_valid(b);
    }
    EXPECT_EQ(joined, text);
    EXPECT_TRUE(some_partial) << "expected a character split across tokens";
    // Lossy decode replaces each maximal invalid subpart once: "\xF0\x93" + "A" -> U+FFFD "A".
    EXPECT_EQ(utf8_lossy("\xF0\x93" "A\xC3"), "\xEF\xBF\xBD" "A\xEF\xBF\xBD");
}

TEST(Tokenizer, NfcNormalization) {
    EXPECT_EQ(nfc_normalize("e\xCC\x81"), "\xC3\xA9");                        // e + U+0301 -> é
    EXPECT_EQ(nfc_normalize("A\xCC\x8A"), "\xC3\x85");                        // A + ring -> Å
    EXPECT_EQ(nfc_normalize("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");     // Hangul L+V -> 가
    EXPECT_EQ(nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");                     // U+212B Angstrom sign -> Å
    EXPECT_EQ(nfc_normalize("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");            // a + U+0302 + U+0323 -> ậ (reordered)
    EXPECT_EQ(nfc_normalize("\xEF\xAC\x81"), "\xEF\xAC\x81");                 // ﬁ is only NFKC
    EXPECT_EQ(nfc_normalize("plain ascii"), "plain ascii");
    auto q = Tokenizer::from_path(kFixtures + "/qwen3/tokenizer.json");
    EXPECT_EQ(q->encode("caf" "e\xCC\x81"), q->encode("caf\xC3\xA9"));  // Qwen3 normalizes to NFC
}

TEST(Tokenizer, ChatTemplates) {
    auto q = Tokenizer::from_path(kFixtures + "/qwen3/tokenizer.json");
    ASSERT_EQ(q->chat_template(), ChatTemplate::ChatML);
    EXPECT_EQ(q->apply_chat_template({{"user", "Hi"}}), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(q->eos_id(), q->token_id("<|im_end|>"));
    EXPECT_EQ(q->stop_ids(), (std::vector<int32_t>{q->token_id("<|im_end|>"), q->token_id("<|endoftext|>")}));

    auto l = Tokenizer::from_path(kFixtures + "/llama3.1/tokenizer.json");
    ASSERT_EQ(l->chat_template(), ChatTemplate::Llama3);
    EXPECT_EQ(l->apply_chat_template({{"system", "Be brief. "}, {"user", " Hi\n"}}),
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(l->bos_id(), 128000);
    EXPECT_EQ(l->eos_id(), l->token_id("<|eot_id|>"));
    EXPECT_EQ(l->stop_ids(), (std::vector<int32_t>{l->token_id("<|eot_id|>")}));

    auto t = load_json_text("nochat.json", tiny_tokenizer(false).dump());
    EXPECT_EQ(t->chat_template(), ChatTemplate::None);
    EXPECT_THROW(t->apply_chat_template({{"user", "x"}}), Error);
}

TEST(Tokenizer, FromGGUFMetadata) {
    // The tiny vocabulary again, written the way llama.cpp stores it.
    GGUFWriter w;
    w.set_string("general.architecture", "llama");
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string("tokenizer.ggml.pre", "smollm");
    w.set_string_array("tokenizer.ggml.tokens", {"<|im_start|>", "<|im_end|>", "a", "b", "c", "Ġ", "ab", "Ġab", "1", "2"});
    w.set_i32_array("tokenizer.ggml.token_type", {3, 3, 1, 1, 1, 1, 1, 1, 1, 1});
    w.set_string_array("tokenizer.ggml.merges", {"a b", "Ġ ab"});
    w.set_u32("tokenizer.ggml.bos_token_id", 0);
    w.set_u32("tokenizer.ggml.eos_token_id", 1);
    w.set_string("tokenizer.chat_template", "{{'<|im_start|>' + message['role'] + '\\n'}}");
    std::string path = scratch("tiny.gguf");
    w.write(path);
    auto t = Tokenizer::from_path(path);
    EXPECT_EQ(t->encode("<|im_start|>ab ab12c<|im_end|>"), (std::vector<int32_t>{0, 6, 7, 8, 9, 4, 1}));
    EXPECT_EQ(t->chat_template(), ChatTemplate::ChatML);
    EXPECT_EQ(t->stop_ids(), (std::vector<int32_t>{1}));

    w.set_string("tokenizer.ggml.pre", "no-such-pre");
    w.write(path);
    EXPECT_THROW(Tokenizer::from_path(path), Error);
    w.set_string("tokenizer.ggml.pre", "smollm");
    w.set_string("tokenizer.ggml.model", "llama");
    w.write(path);
    EXPECT_THROW(Tokenizer::from_path(path), Error);
    std::remove(path.c_str());
}

TEST(Tokenizer, MalformedJsonIsAnError) {
    json good = tiny_tokenizer(false);
    std::vector<std::pair<std::string, std::string>> bad = {
        {"not-json", "{ this is not json"},
        {"empty", ""},
        {"array", "[1, 2, 3]"},
        {"no-model", [&] { json j = good; j.erase("model"); return j.dump(); }()},
        {"wordpiece", [&] { json j = good; j["model"]["type"] = "WordPiece"; return j.dump(); }()},
        {"vocab-array", [&] { json j = good; j["model"]["vocab"] = json::array({1}); return j.dump(); }()},
        {"vocab-string-id", [&] { json j = good; j["model"]["vocab"]["a"] = "zero"; return j.dump(); }()},
        {"merge-number", [&] { json j = good; j["model"]["merges"].push_back(7); return j.dump(); }()},
        {"merge-3-parts", [&] { json j = good; j["model"]["merges"].push_back("a b c"); return j.dump(); }()},
        {"merge-unknown", [&] { json j = good; j["model"]["merges"].push_back("a zz"); return j.dump(); }()},
        {"merge-result-unknown", [&] { json j = good; j["model"]["merges"].push_back("c a"); return j.dump(); }()},
        {"normalizer", [&] { json j = good; j["normalizer"] = {{"type", "NFKC"}}; return j.dump(); }()},
        {"pre-whitespace", [&] { json j = good; j["pre_tokenizer"] = {{"type", "Whitespace"}}; return j.dump(); }()},
        {"pre-none", [&] { json j = good; j["pre_tokenizer"] = nullptr; return j.dump(); }()},
        {"bad-regex", [&] {
             json j = good;
             j["pre_tokenizer"] = {{"type", "Sequence"},
                                   {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}},
                                                                  {{"type", "ByteLevel"}}})}};
             return j.dump();
         }()},
        {"decoder", [&] { json j = good; j["decoder"] = {{"type", "WordPiece"}}; return j.dump(); }()},
        {"added-no-id", [&] { json j = good; j["added_tokens"][0].erase("id"); return j.dump(); }()},
        {"added-empty", [&] { json j = good; j["added_tokens"][0]["content"] = ""; return j.dump(); }()},
    };
    for (auto& [name, text] : bad) {
        std::string p = write_file(name + ".json", text);
        EXPECT_THROW(Tokenizer::from_json_file(p), Error) << name;
        try {
            Tokenizer::from_json_file(p);
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "message should name the file: " << e.what();
        }
        std::remove(p.c_str());
    }
    EXPECT_THROW(Tokenizer::from_path("/nonexistent/tokenizer.json"), Error);
    auto t = load_json_text("ok.json", good.dump());
    EXPECT_THROW(t->decode({12345}), Error);
    EXPECT_THROW(t->token_text(-1), Error);
    // Invalid UTF-8 input is encoded byte by byte (bytes missing from this vocabulary are dropped).
    EXPECT_EQ(t->encode("ab\xFF\xC3"), (std::vector<int32_t>{4}));
}

TEST(Tokenizer, EncodeOneMegabyte) {
    json cases = json::parse(std::ifstream(kFixtures + "/golden_public.json")).at("qwen3");
    std::string text;
    while (text.size() < (1u << 20))
        for (const auto& c : cases) text += c.at("text").get<std::string>() + "\n";
    for (const char* name : {"qwen3", "llama3.1"}) {
        auto tok = Tokenizer::from_path(kFixtures + "/" + name + "/tokenizer.json");
        auto t0 = std::chrono::steady_clock::now();
        std::vector<int32_t> ids = tok->encode(text);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("[speed] %s: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", name, text.size(), ids.size(), s,
                    double(text.size()) / s / 1e6);
        EXPECT_EQ(tok->decode(ids), text);
    }
}
