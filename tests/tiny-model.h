// Random models for tests that need a whole model without downloading one: a 257-token byte-level
// BPE tokenizer written by the test itself and a scratch directory that removes itself.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace elastic::test {

inline std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) s += char(cp);
    else s += char(0xc0 | (cp >> 6)), s += char(0x80 | (cp & 0x3f));  // cp < 0x800 here
    return s;
}

// A byte-level BPE tokenizer.json with GPT-2's byte-to-unicode vocabulary (ids 0-255, no merges)
// and <|endoftext|> = 256, plus a tokenizer_config.json naming it as eos.
inline std::string write_byte_tokenizer(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    std::vector<uint32_t> cp(256, 0);
    int n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        cp[b] = printable ? b : 256 + uint32_t(n++);
    }
    nlohmann::json vocab = nlohmann::json::object();
    for (uint32_t b = 0; b < 256; ++b) vocab[utf8(cp[b])] = b;
    nlohmann::json tj = {
        {"version", "1.0"},
        {"added_tokens", {{{"id", 256}, {"content", "<|endoftext|>"}, {"special", true}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
    };
    std::ofstream(dir / "tokenizer.json") << tj.dump();
    std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|endoftext|>", "bos_token": null})";
    return (dir / "tokenizer.json").string();
}

struct TmpDir {
    std::filesystem::path path;
    TmpDir() {
        char tmpl[] = "/tmp/elastic-random-model-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TmpDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TmpDir(const TmpDir&) = delete;
    TmpDir& operator=(const TmpDir&) = delete;
};

}  // namespace elastic::test
