// Byte-level BPE model: vocabulary, merge ranks and the merge loop over one pre-token, plus the
// GPT-2 bytes_to_unicode map that turns vocabulary strings into raw bytes and back.
// The model works on raw bytes: every vocabulary string is mapped back to its bytes once at load.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace elastic {

// GPT-2 bytes_to_unicode: byte -> code point, and its inverse (-1 where a code point is no byte).
struct ByteLevelMap {
    uint32_t byte_to_cp[256];
    std::unordered_map<uint32_t, uint8_t> cp_to_byte;
    ByteLevelMap();
    // Vocabulary string -> raw bytes; false when a character is outside the map.
    bool to_bytes(std::string_view token, std::string& out) const;
    std::string from_bytes(std::string_view bytes) const;
};
const ByteLevelMap& byte_level_map();

struct PairHash {
    size_t operator()(uint64_t k) const { return std::hash<uint64_t>()(k * 0x9E3779B97F4A7C15ull); }
};

class BpeModel {
public:
    // vocab: token string (byte-level alphabet) per id; merges: (left, right) strings in rank order.
    // Throws Error on a merge whose parts or result are missing from the vocabulary.
    void build(std::vector<std::string> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
               bool ignore_merges);

    // Appends the ids of one pre-token given as raw bytes.
    void encode_word(std::string_view bytes, std::vector<int32_t>& out) const;

    int32_t size() const { return int32_t(vocab_.size()); }
    const std::string& token(int32_t id) const { return vocab_[size_t(id)]; }
    const std::string& token_bytes(int32_t id) const { return bytes_[size_t(id)]; }
    int32_t find(std::string_view token) const;        // by vocabulary string; -1 if absent
    int32_t find_bytes(std::string_view bytes) const;  // by raw bytes; -1 if absent

private:
    struct Merge { int32_t rank, id; };
    void merge_word(std::string_view bytes, std::vector<int32_t>& out) const;

    std::vector<std::string> vocab_;  // [V] vocabulary strings
    std::vector<std::string> bytes_;  // [V] raw bytes of each token (empty when not byte-level)
    std::unordered_map<std::string, int32_t> by_token_, by_bytes_;
    std::unordered_map<uint64_t, Merge, PairHash> merges_;  // (left id << 32 | right id) -> rank, result
    int32_t byte_id_[256];
    bool ignore_merges_ = false;

    // Pre-token -> ids. Cleared when it grows past kCacheMax entries.
    static constexpr size_t kCacheMax = 1 << 18;
    mutable std::mutex cache_mu_;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace elastic
