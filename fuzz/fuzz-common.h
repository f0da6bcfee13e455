// Shared by the libFuzzer targets: the input as a string, and the rule every target follows. Any
// input must either be accepted or raise elastic::Error with a message; a crash, a sanitizer report,
// another exception type or a huge allocation is a bug. Targets that need a real tokenizer load
// ELASTIC_FUZZ_TOKENIZER (a GGUF or tokenizer.json), by default the model of `make model`.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode-nfc.h"

namespace elastic::fuzz {

inline std::string as_string(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

inline const Tokenizer& real_tokenizer() {
    static std::unique_ptr<Tokenizer> tok = [] {
        const char* env = std::getenv("ELASTIC_FUZZ_TOKENIZER");
        const std::string path = env ? env : std::string(ELASTIC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
        try {
            return Tokenizer::from_path(path);
        } catch (const Error& e) {
            std::fprintf(stderr, "fuzz: cannot load the tokenizer (%s); run `make model` or set ELASTIC_FUZZ_TOKENIZER\n", e.what());
            std::exit(2);
        }
    }();
    return *tok;
}

// Whether every byte of s has its byte-level token (GPT-2's bytes_to_unicode character) in the
// vocabulary: a byte without one is dropped by the encoder, as Hugging Face tokenizers does for a
// BPE model without unk_token (SmolLM2 lacks 6 control bytes), so no round trip is expected.
inline bool bytes_in_vocab(const Tokenizer& t, const std::string& s) {
    static const std::vector<bool> ok = [&t] {
        std::vector<bool> v(256);
        int next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            const int cp = self ? b : next++;
            std::string u;  // cp < 0x800: one or two UTF-8 bytes
            if (cp < 0x80) u.push_back(char(cp));
            else {
                u.push_back(char(0xc0 | (cp >> 6)));
                u.push_back(char(0x80 | (cp & 0x3f)));
            }
            v[size_t(b)] = t.token_id(u) >= 0;
        }
        return v;
    }();
    for (unsigned char c : s)
        if (!ok[c]) return false;
    return true;
}

}  // namespace elastic::fuzz
