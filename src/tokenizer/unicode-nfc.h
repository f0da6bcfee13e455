// Unicode NFC normalization (the {"type": "NFC"} normalizer of Qwen2/3 tokenizer.json files) and
// the small UTF-8 helpers the tokenizer needs. Tables are generated into unicode-nfc-data.inc by
// scripts/golden/make-unicode-nfc.py; invalid UTF-8 bytes pass through unchanged.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace elastic {

// Decodes one code point at s[i], advancing i. Invalid or truncated sequences yield -1 and
// advance one byte.
int32_t utf8_next(std::string_view s, size_t& i);
void utf8_append(std::string& out, uint32_t cp);
bool utf8_valid(std::string_view s);
// Replaces each maximal invalid subsequence with U+FFFD (what Rust's String::from_utf8_lossy does,
// and so what HF `tokenizers` returns from decode).
std::string utf8_lossy(std::string_view s);

std::string nfc_normalize(std::string_view s);

}  // namespace elastic
