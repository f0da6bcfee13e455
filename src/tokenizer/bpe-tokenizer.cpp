// Encode = split out added tokens (leftmost-longest, HF AddedVocabulary semantics incl. lstrip /
// rstrip / single_word), normalize + pre-tokenize each remaining segment, BPE each pre-token.
#include "tokenizer/bpe-tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode-nfc.h"

namespace elastic {

namespace {

// Rust char::is_whitespace (Unicode White_Space).
bool is_ws(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Approximates Rust char::is_alphanumeric: ASCII letters/digits, and any non-ASCII non-space.
bool is_word(int32_t c) {
    if (c < 0) return false;
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    return !is_ws(c);
}

int32_t last_cp(std::string_view s, size_t end, size_t& start) {
    size_t i = end;
    while (i > 0 && (uint8_t(s[i - 1]) & 0xC0) == 0x80 && end - i < 3) --i;
    if (i > 0) --i;
    start = i;
    size_t j = i;
    int32_t c = utf8_next(s, j);
    return j == end ? c : -1;
}

}  // namespace

BpeTokenizer::BpeTokenizer(BpeTokenizerConfig cfg) {
    pre_ = std::move(cfg.pre);
    bpe_.build(std::move(cfg.vocab), cfg.merges, cfg.ignore_merges);
    n_vocab_ = bpe_.size();
    added_ = std::move(cfg.added);
    added_by_first_byte_.assign(256, {});
    for (size_t i = 0; i < added_.size(); ++i) {
        const AddedToken& t = added_[i];
        if (t.id < 0) fail("added token \"%s\" has a negative id", t.content.c_str());
        if (t.content.empty()) fail("added token %d has empty content", t.id);
        added_by_id_[t.id] = i;
        n_vocab_ = std::max(n_vocab_, t.id + 1);
        added_by_first_byte_[uint8_t(t.content[0])].push_back(i);
    }
    for (auto& v : added_by_first_byte_)
        std::stable_sort(v.begin(), v.end(), [&](size_t a, size_t b) { return added_[a].content.size() > added_[b].content.size(); });
    bos_ = cfg.bos;
    eos_ = cfg.eos;
    for (int32_t id : {bos_, eos_})
        if (id >= n_vocab_) fail("tokenizer: special token id %d is outside the vocabulary (%d)", id, n_vocab_);
    init_chat(cfg.chat_template);
}

bool BpeTokenizer::next_added(std::string_view text, size_t from, size_t& start, size_t& end, const AddedToken*& tok) const {
    if (added_.empty()) return false;
    for (size_t p = from; p < text.size(); ++p) {
        for (size_t i : added_by_first_byte_[uint8_t(text[p])]) {
            const std::string& c = added_[i].content;
            if (text.compare(p, c.size(), c) == 0) {
                start = p;
                end = p + c.size();
                tok = &added_[i];
                return true;
            }
        }
    }
    return false;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    size_t seg = 0, pos = 0, s = 0, e = 0;
    const AddedToken* t = nullptr;
    // Like HF: the automaton finds every added token; disabled specials and failed single_word
    // matches are then skipped and their text stays part of the surrounding segment.
    while (next_added(text, pos, s, e, t)) {
        pos = e;
        if (!parse_special && t->special) continue;
        if (t->single_word) {
            size_t st = 0;
            bool left_ok = s == 0 || !is_word(last_cp(text, s, st));
            size_t j = e;
            bool right_ok = e == text.size() || !is_word(utf8_next(text, j));
            if (!left_ok || !right_ok) continue;
        }
        if (t->lstrip) {
            size_t st = s;
            while (st > seg) {
                size_t cs = 0;
                if (!is_ws(last_cp(text, st, cs))) break;
                st = cs;
            }
            s = std::max(st, seg);
        }
        if (t->rstrip) {
            size_t j = e;
            while (j < text.size()) {
                size_t k = j;
                if (!is_ws(utf8_next(text, k))) break;
                j = k;
            }
            e = j;
            pos = e;
        }
        if (s > seg) encode_plain(text.substr(seg, s - seg), out);
        out.push_back(t->id);
        seg = e;
    }
    if (seg < text.size()) encode_plain(text.substr(seg), out);
    return out;
}

void BpeTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
    std::vector<std::string> pieces;
    pre_.run(text, pieces);
    for (const std::string& p : pieces) bpe_.encode_word(p, out);
}

std::string BpeTokenizer::decode_bytes(const std::vector<int32_t>& ids, bool skip_special) const {
    std::string out;
    for (int32_t id : ids) {
        auto it = added_by_id_.find(id);
        if (it != added_by_id_.end()) {
            const AddedToken& t = added_[it->second];
            if (!(skip_special && t.special)) out += t.content;
            continue;
        }
        if (id < 0 || id >= bpe_.size()) fail("decode: token id %d is outside the vocabulary (%d)", id, n_vocab_);
        const std::string& b = bpe_.token_bytes(id);
        out += b.empty() ? bpe_.token(id) : b;
    }
    return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
    return utf8_lossy(decode_bytes(ids, skip_special));
}

std::string BpeTokenizer::token_text(int32_t id) const {
    auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) return added_[it->second].content;
    if (id < 0 || id >= bpe_.size()) fail("token id %d is outside the vocabulary (%d)", id, n_vocab_);
    return bpe_.token(id);
}

int32_t BpeTokenizer::token_id(std::string_view text) const {
    for (const AddedToken& t : added_)
        if (t.content == text) return t.id;
    return bpe_.find(text);
}

bool BpeTokenizer::is_special(int32_t id) const {
    auto it = added_by_id_.find(id);
    return it != added_by_id_.end() && added_[it->second].special;
}

}  // namespace elastic
