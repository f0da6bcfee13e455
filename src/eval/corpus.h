// The real text eval data is built from, all of it on any Debian without a network: English prose
// (the license texts in /usr/share/common-licenses, base-files) and C/C++ source (the headers in
// /usr/include, libc6-dev). Both can be replaced by a directory of the user's (--text-dir, --code-dir).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace elastic::eval {

constexpr const char* kDefaultProseDir = "/usr/share/common-licenses";
constexpr const char* kDefaultCodeDir = "/usr/include";

struct Corpus {
    std::vector<std::string> names;  // file paths, sorted
    std::vector<std::string> docs;   // their text
    size_t bytes() const;
};

// Regular files under `dir` (recursive, sorted by path; a file reached twice through symlinks is
// read once), keeping those whose name ends with one of `exts` (empty: all) and that look like UTF-8
// text, until `max_bytes` have been read. Throws Error when nothing is found.
Corpus load_corpus(const std::string& dir, const std::vector<std::string>& exts = {}, size_t max_bytes = 64u << 20);

// The words of the corpus in order (split on whitespace), for the essay haystack.
std::vector<std::string> corpus_words(const Corpus& c);

// Key words of the NIAH needles ("adjective-noun", as RULER draws with wonderwords).
const std::vector<std::string>& adjectives();
const std::vector<std::string>& nouns();
// A pool of at least `n` distinct lowercase words for common-words extraction: dictionary words
// first, then the corpus's own words, then pronounceable made-up words.
std::vector<std::string> word_pool(const Corpus* prose, size_t n);

}  // namespace elastic::eval
