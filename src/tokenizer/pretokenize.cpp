// Split semantics follow tokenizers/src/tokenizer/normalizer.rs (split_off) and pattern.rs:
// matches and the gaps between them become (range, is_match) events, the behavior folds them,
// empty pieces are dropped.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenize.h"

#include <pcre2.h>

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode-nfc.h"

namespace elastic {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        fail("tokenizer regex /%s/: %s at offset %zu", pattern.c_str(), reinterpret_cast<const char*>(msg), size_t(off));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: pcre2_match falls back to the interpreter
    code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    out.clear();
    auto* code = static_cast<pcre2_code*>(code_);
    // One match block per call keeps find_all thread-safe; it is small next to the pieces it scans.
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    const auto* subj = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos <= s.size()) {
        int rc = pcre2_match(code, subj, s.size(), pos, 0, md, nullptr);
        if (rc < 0) {
            if (rc == PCRE2_ERROR_NOMATCH) break;
            pcre2_match_data_free(md);
            fail("tokenizer regex /%s/: match error %d", pattern_.c_str(), rc);
        }
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        out.emplace_back(a, b);
        if (b > a) {
            pos = b;
        } else {  // empty match: step one character
            if (a >= s.size()) break;
            size_t i = a;
            utf8_next(s, i);
            pos = i;
        }
    }
    pcre2_match_data_free(md);
}

PreTokStep PreTokenizer::split(const std::string& pattern, SplitBehavior b, bool invert) {
    PreTokStep s;
    s.kind = PreTokStep::Split;
    s.regex = std::make_shared<const Regex>(pattern);
    s.behavior = b;
    s.invert = invert;
    return s;
}

PreTokStep PreTokenizer::digits(bool individual) {
    // Rust's char::is_numeric is the N categories (Nd, Nl, No), one match per character.
    return split(R"(\p{N})", individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
}

PreTokStep PreTokenizer::byte_level(bool add_prefix_space, bool use_regex) {
    PreTokStep s;
    s.kind = PreTokStep::ByteLevel;
    s.add_prefix_space = add_prefix_space;
    if (use_regex) s.regex = std::make_shared<const Regex>(kGpt2Pattern);
    return s;
}

namespace {

struct Event { size_t a, b; bool match; };

void split_piece(const std::string& piece, const Regex& re, SplitBehavior behavior, bool invert,
                 std::vector<std::pair<size_t, size_t>>& scratch, std::vector<std::string>& out) {
    std::vector<Event> ev;
    re.find_all(piece, scratch);
    size_t prev = 0;
    for (auto [a, b] : scratch) {
        if (prev != a) ev.push_back({prev, a, invert});
        ev.push_back({a, b, !invert});
        prev = b;
    }
    if (prev != piece.size()) ev.push_back({prev, piece.size(), invert});

    std::vector<std::pair<size_t, size_t>> kept;
    bool prev_match = false;
    switch (behavior) {
    case SplitBehavior::Removed:
        for (auto& e : ev)
            if (!e.match) kept.emplace_back(e.a, e.b);
        break;
    case SplitBehavior::Isolated:
        for (auto& e : ev) kept.emplace_back(e.a, e.b);
        break;
    case SplitBehavior::MergedWithPrevious:
        for (auto& e : ev) {
            if (e.match && !prev_match && !kept.empty()) kept.back().second = e.b;
            else kept.emplace_back(e.a, e.b);
            prev_match = e.match;
        }
        break;
    case SplitBehavior::MergedWithNext:
        for (size_t k = ev.size(); k-- > 0;) {
            const Event& e = ev[k];
            if (e.match && !prev_match && !kept.empty()) kept.back().first = e.a;
            else kept.emplace_back(e.a, e.b);
            prev_match = e.match;
        }
        std::reverse(kept.begin(), kept.end());
        break;
    case SplitBehavior::Contiguous:
        for (size_t k = 0; k < ev.size(); ++k) {
            if (k > 0 && ev[k].match == prev_match) kept.back().second = ev[k].b;
            else kept.emplace_back(ev[k].a, ev[k].b);
            prev_match = ev[k].match;
        }
        break;
    }
    for (auto [a, b] : kept)
        if (b > a) out.emplace_back(piece, a, b - a);
}

}  // namespace

void PreTokenizer::run(std::string_view text, std::vector<std::string>& pieces) const {
    pieces.clear();
    std::string norm = nfc ? nfc_normalize(text) : std::string(text);
    if (norm.empty()) return;
    pieces.push_back(std::move(norm));
    std::vector<std::string> next;
    std::vector<std::pair<size_t, size_t>> scratch;
    for (const PreTokStep& step : steps) {
        next.clear();
        next.reserve(pieces.size());
        for (std::string& p : pieces) {
            if (step.kind == PreTokStep::ByteLevel) {
                if (step.add_prefix_space && p[0] != ' ') p.insert(p.begin(), ' ');
                if (!step.regex) { next.push_back(std::move(p)); continue; }
                split_piece(p, *step.regex, SplitBehavior::Isolated, false, scratch, next);
            } else {
                split_piece(p, *step.regex, step.behavior, step.invert, scratch, next);
            }
        }
        pieces.swap(next);
    }
}

}  // namespace elastic
