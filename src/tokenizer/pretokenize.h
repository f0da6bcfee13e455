// Normalizer and pre-tokenizer pipeline of HF `tokenizers`, the parts byte-level BPE models use:
// NFC, Split(regex, behavior, invert), Digits(individual_digits), ByteLevel(add_prefix_space,
// use_regex). Regexes run on PCRE2 (UTF + UCP, JIT when available), each on one piece at a time
// as HF runs them, so lookarounds such as `\s+(?!\S)` never see past a piece.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace elastic {

// The GPT-2 pattern ByteLevel uses when use_regex is true.
extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;

class Regex {
public:
    explicit Regex(const std::string& pattern);  // throws Error on a bad pattern
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
    // Byte ranges of successive non-overlapping matches in s (leftmost-first, like onig).
    void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
    const std::string& pattern() const { return pattern_; }

private:
    std::string pattern_;
    void* code_ = nullptr;  // pcre2_code_8
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokStep {
    enum Kind { Split, ByteLevel } kind = Split;
    std::shared_ptr<const Regex> regex;  // Split: the pattern; ByteLevel: GPT-2 pattern or null
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
};

struct PreTokenizer {
    bool nfc = false;  // normalizer
    std::vector<PreTokStep> steps;

    static PreTokStep split(const std::string& pattern, SplitBehavior b, bool invert = false);
    static PreTokStep digits(bool individual);
    static PreTokStep byte_level(bool add_prefix_space, bool use_regex);

    // Normalizes and splits one segment of text (no added tokens inside) into pre-tokens.
    void run(std::string_view text, std::vector<std::string>& pieces) const;
};

}  // namespace elastic
