// The one concrete Tokenizer: added/special tokens + normalizer/pre-tokenizer + byte-level BPE.
// Loaders (tokenizer-json.cpp, tokenizer-gguf.cpp) fill a BpeTokenizerConfig and call init().
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

namespace elastic {

struct AddedToken {
    int32_t id = -1;
    std::string content;
    bool special = false;
    // normalized is read but not acted on: all added tokens are matched on the raw text (the
    // fixtures only have normalized=false; with NFC the two differ only for non-NFC token text).
    bool lstrip = false, rstrip = false, single_word = false, normalized = false;
};

struct BpeTokenizerConfig {
    std::vector<std::string> vocab;  // model vocabulary, index = id
    std::vector<std::pair<std::string, std::string>> merges;
    bool ignore_merges = false;
    std::vector<AddedToken> added;  // ids may lie inside the vocabulary or past its end
    PreTokenizer pre;
    int32_t bos = -1, eos = -1;
    std::string chat_template;  // Jinja source, only inspected to pick ChatML / Llama-3
};

class BpeTokenizer final : public Tokenizer {
public:
    explicit BpeTokenizer(BpeTokenizerConfig cfg);

    std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const override;
    std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
    std::string token_text(int32_t id) const override;
    int32_t vocab_size() const override { return n_vocab_; }
    int32_t token_id(std::string_view text) const override;
    bool is_special(int32_t id) const override;

    // Raw bytes of the tokens, no UTF-8 repair: for streaming, where a character may be split
    // across tokens (decode() replaces invalid sequences with U+FFFD as HF does).
    std::string decode_bytes(const std::vector<int32_t>& ids, bool skip_special = false) const override;

private:
    void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
    // Leftmost-longest match of any added token at or after `from`; false when none.
    bool next_added(std::string_view text, size_t from, size_t& start, size_t& end, const AddedToken*& tok) const;

    BpeModel bpe_;
    PreTokenizer pre_;
    std::vector<AddedToken> added_;
    std::unordered_map<int32_t, size_t> added_by_id_;
    std::vector<std::vector<size_t>> added_by_first_byte_;  // [256] indices into added_, longest first
    int32_t n_vocab_ = 0;
};

}  // namespace elastic
