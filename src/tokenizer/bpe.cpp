// BPE merge loop in the style of HF `tokenizers` (models/bpe/word.rs): symbols in a doubly linked
// list over the word, candidate pairs in a min-heap keyed by (rank, position); a popped pair is
// applied only if both symbols are still the ones it was made from.
#include "tokenizer/bpe.h"

#include <queue>

#include "core/error.h"
#include "tokenizer/unicode-nfc.h"

namespace elastic {

ByteLevelMap::ByteLevelMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = printable ? uint32_t(b) : uint32_t(256 + n++);
        cp_to_byte[byte_to_cp[b]] = uint8_t(b);
    }
}

bool ByteLevelMap::to_bytes(std::string_view token, std::string& out) const {
    out.clear();
    for (size_t i = 0; i < token.size();) {
        int32_t cp = utf8_next(token, i);
        auto it = cp < 0 ? cp_to_byte.end() : cp_to_byte.find(uint32_t(cp));
        if (it == cp_to_byte.end()) return false;
        out += char(it->second);
    }
    return true;
}

std::string ByteLevelMap::from_bytes(std::string_view bytes) const {
    std::string out;
    for (unsigned char c : bytes) utf8_append(out, byte_to_cp[c]);
    return out;
}

const ByteLevelMap& byte_level_map() {
    static const ByteLevelMap m;  // immutable table, built once
    return m;
}

void BpeModel::build(std::vector<std::string> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                     bool ignore_merges) {
    const ByteLevelMap& bl = byte_level_map();
    vocab_ = std::move(vocab);
    ignore_merges_ = ignore_merges;
    bytes_.assign(vocab_.size(), std::string());
    by_token_.clear();
    by_bytes_.clear();
    by_token_.reserve(vocab_.size());
    by_bytes_.reserve(vocab_.size());
    for (int32_t& b : byte_id_) b = -1;
    std::string raw;
    for (size_t id = 0; id < vocab_.size(); ++id) {
        by_token_.emplace(vocab_[id], int32_t(id));  // first id wins on duplicates
        if (!vocab_[id].empty() && bl.to_bytes(vocab_[id], raw)) {
            bytes_[id] = raw;
            by_bytes_.emplace(raw, int32_t(id));
        }
    }
    for (int b = 0; b < 256; ++b) byte_id_[b] = find(bl.from_bytes(std::string(1, char(b))));

    merges_.clear();
    merges_.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); ++r) {
        const auto& [a, b] = merges[r];
        auto get = [&](const std::string& t) { auto it = by_token_.find(t); return it == by_token_.end() ? -1 : it->second; };
        int32_t ia = get(a), ib = get(b), im = get(a + b);
        if (ia < 0 || ib < 0) fail("BPE merge %zu (\"%s\" \"%s\"): token not in vocabulary", r, a.c_str(), b.c_str());
        if (im < 0) fail("BPE merge %zu (\"%s\" \"%s\"): merged token not in vocabulary", r, a.c_str(), b.c_str());
        merges_.emplace((uint64_t(uint32_t(ia)) << 32) | uint32_t(ib), Merge{int32_t(r), im});
    }
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_.clear();
}

int32_t BpeModel::find(std::string_view token) const {
    auto it = by_token_.find(std::string(token));
    return it == by_token_.end() ? -1 : it->second;
}

int32_t BpeModel::find_bytes(std::string_view bytes) const {
    auto it = by_bytes_.find(std::string(bytes));
    return it == by_bytes_.end() ? -1 : it->second;
}

void BpeModel::encode_word(std::string_view bytes, std::vector<int32_t>& out) const {
    if (bytes.empty()) return;
    if (ignore_merges_) {
        if (int32_t id = find_bytes(bytes); id >= 0) { out.push_back(id); return; }
    }
    if (bytes.size() == 1) {
        if (int32_t id = byte_id_[uint8_t(bytes[0])]; id >= 0) out.push_back(id);
        return;
    }
    std::string key(bytes);
    {
        std::lock_guard<std::mutex> lock(cache_mu_);
        auto it = cache_.find(key);
        if (it != cache_.end()) { out.insert(out.end(), it->second.begin(), it->second.end()); return; }
    }
    std::vector<int32_t> ids;
    merge_word(bytes, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kCacheMax) cache_.clear();
    cache_.emplace(std::move(key), std::move(ids));
}

void BpeModel::merge_word(std::string_view bytes, std::vector<int32_t>& out) const {
    struct Sym { int32_t id; int32_t prev, next; bool live; };
    std::vector<Sym> syms;
    syms.reserve(bytes.size());
    for (unsigned char c : bytes) {
        int32_t id = byte_id_[c];
        if (id < 0) continue;  // HF drops characters missing from a vocabulary without unk
        int32_t n = int32_t(syms.size());
        syms.push_back({id, n - 1, n + 1, true});
    }
    if (syms.empty()) return;
    syms.back().next = -1;

    struct Cand { int32_t rank, pos, id, right; };  // pair (pos, right) -> id
    auto worse = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    auto push = [&](int32_t l) {
        if (l < 0) return;
        int32_t r = syms[size_t(l)].next;
        if (r < 0) return;
        auto it = merges_.find((uint64_t(uint32_t(syms[size_t(l)].id)) << 32) | uint32_t(syms[size_t(r)].id));
        if (it != merges_.end()) heap.push({it->second.rank, l, it->second.id, r});
    };
    for (int32_t i = 0; i + 1 < int32_t(syms.size()); ++i) push(i);
    while (!heap.empty()) {
        Cand c = heap.top();
        heap.pop();
        Sym& l = syms[size_t(c.pos)];
        if (!l.live || l.next != c.right) continue;
        Sym& r = syms[size_t(c.right)];
        auto it = merges_.find((uint64_t(uint32_t(l.id)) << 32) | uint32_t(r.id));
        if (it == merges_.end() || it->second.id != c.id) continue;  // stale: a side changed
        l.id = c.id;
        l.next = r.next;
        r.live = false;
        if (r.next >= 0) syms[size_t(r.next)].prev = c.pos;
        if (l.prev >= 0) push(l.prev);
        push(c.pos);
    }
    for (int32_t i = 0; i >= 0; i = syms[size_t(i)].next) out.push_back(syms[size_t(i)].id);
}

}  // namespace elastic
