// Where the training mix's text comes from, and how it is kept apart from eval's:
//  - prose: plain-text documentation under --prose-dir (default /usr/share/doc: copyright, README,
//    NEWS, *.txt, *.md, ...), split into paragraphs, deduplicated; files eval reads are skipped and
//    any paragraph sharing a 12-word run with eval's prose (/usr/share/common-licenses: Debian
//    copyright files quote those licenses) is dropped;
//  - code: C/C++ headers and sources under --code-dir (default /usr/include) except the files eval's
//    code corpus reads (the first 8 MiB of /usr/include in path order) and any file with the same bytes.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>
#include <unordered_set>

#include "core/error.h"
#include "eval/corpus.h"
#include "train/data.h"

namespace elastic::train {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kCodeExts = {".h", ".hpp", ".c", ".cc", ".cpp"};  // eval's list
constexpr int kShingle = 12;

uint64_t fnv(const std::string& s, uint64_t h = 1469598103934665603ull) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

bool valid_utf8_text(const std::string& s) {
    if (s.empty()) return false;
    size_t ctrl = 0;
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == 0) return false;
        if (c < 0x80) {
            ctrl += c < 0x20 && c != '\n' && c != '\t' && c != '\r' && c != '\f';
            ++i;
            continue;
        }
        const int n = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || c == 0xC0 || c == 0xC1 || c > 0xF4 || i + size_t(n) >= s.size()) return false;
        for (int k = 1; k <= n; ++k)
            if ((static_cast<unsigned char>(s[i + size_t(k)]) & 0xC0) != 0x80) return false;
        i += size_t(n) + 1;
    }
    return ctrl * 100 < s.size();
}

std::string canonical(const std::string& p) {
    std::error_code ec;
    const fs::path c = fs::canonical(p, ec);
    return ec ? p : c.string();
}

// Regular files under dir accepted by `keep`, sorted by path.
std::vector<std::string> list_files(const std::string& dir, const std::function<bool(const std::string&)>& keep) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) fail("data: %s is not a directory", dir.c_str());
    std::vector<std::string> out;
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        std::error_code e2;
        if (it->is_regular_file(e2) && keep(it->path().string())) out.push_back(it->path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::string read_all(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Plain-text documentation: no extension (README, copyright, NEWS, ...) or a text one.
bool prose_name(const std::string& path) {
    const std::string base = fs::path(path).filename().string();
    const size_t dot = base.rfind('.');
    if (dot == std::string::npos || dot == 0) return true;
    const std::string ext = base.substr(dot);
    return ext == ".txt" || ext == ".md" || ext == ".rst" || ext == ".Debian";
}

bool code_name(const std::string& path) {
    for (const auto& e : kCodeExts)
        if (path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0) return true;
    return false;
}

std::vector<std::string> words_of(const std::string& s) {
    std::vector<std::string> w;
    std::istringstream in(s);
    std::string x;
    while (in >> x) {
        for (char& c : x) c = char(std::tolower(static_cast<unsigned char>(c)));
        w.push_back(x);
    }
    return w;
}

template <class F>
void for_each_shingle(const std::vector<std::string>& w, F f) {
    for (size_t i = 0; i + kShingle <= w.size(); ++i) {
        uint64_t h = 1469598103934665603ull;
        for (size_t k = 0; k < kShingle; ++k) h = fnv(w[i + k], h ^ 0x20);
        if (!f(h)) return;
    }
}

// Paragraphs of a text file: blank lines (or a DEP-5 " ." line) separate them; wrapped lines are
// joined with one space; "Field: value" header lines of Debian copyright files are left out.
std::vector<std::string> paragraphs_of(const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    auto flush = [&] {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
    };
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        const size_t b = line.find_first_not_of(" \t\r\f");
        if (b == std::string::npos || line.compare(b, std::string::npos, ".") == 0) {
            flush();
            continue;
        }
        if (b == 0) {  // "Files: *", "License: GPL-2+": a field line, not prose
            const size_t colon = line.find(": ");
            if (colon != std::string::npos && colon < 24 && line.find(' ') > colon && std::isupper(static_cast<unsigned char>(line[0]))) {
                flush();
                continue;
            }
        }
        const size_t e = line.find_last_not_of(" \t\r\f");
        if (!cur.empty()) cur += ' ';
        cur += line.substr(b, e + 1 - b);
    }
    flush();
    return out;
}

// Prose worth keeping: mostly letters, with at least one sentence end.
bool prose_like(const std::string& p) {
    if (p.size() < 80) return false;
    size_t letters = 0;
    for (unsigned char c : p) letters += std::isalpha(c) || c == ' ' || c >= 0x80;
    return letters * 100 >= p.size() * 80 && p.find(". ") != std::string::npos;
}

// Long paragraphs are cut at sentence ends into pieces of about 1.5 KB.
void split_long(const std::string& p, std::vector<std::string>& out) {
    size_t start = 0;
    while (p.size() - start > 3000) {
        size_t cut = p.find(". ", start + 1500);
        if (cut == std::string::npos || cut > start + 3000) break;
        out.push_back(p.substr(start, cut + 1 - start));
        start = cut + 2;
    }
    if (p.size() - start <= 3000) out.push_back(p.substr(start));
}

}  // namespace

std::vector<std::string> eval_source_files() {
    std::vector<std::string> out;
    for (const auto& [dir, exts, cap] : {std::make_tuple(std::string(eval::kDefaultProseDir), std::vector<std::string>{}, size_t(16u << 20)),
                                         std::make_tuple(std::string(eval::kDefaultCodeDir), kCodeExts, kEvalCodeBytes)}) {
        try {
            for (const auto& n : eval::load_corpus(dir, exts, cap).names) out.push_back(canonical(n));
        } catch (const Error&) {  // not on this machine: nothing to stay away from
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

TrainSources load_train_sources(const DataBuildOptions& o) {
    TrainSources s;
    std::set<std::string> eval_files;
    std::unordered_set<uint64_t> eval_shingles, eval_hashes;
    for (const auto& [dir, exts, cap, prose] : {std::make_tuple(std::string(eval::kDefaultProseDir), std::vector<std::string>{}, size_t(16u << 20), true),
                                                std::make_tuple(std::string(eval::kDefaultCodeDir), kCodeExts, kEvalCodeBytes, false)}) {
        try {
            const eval::Corpus c = eval::load_corpus(dir, exts, cap);
            for (size_t i = 0; i < c.names.size(); ++i) {
                eval_files.insert(canonical(c.names[i]));
                eval_hashes.insert(fnv(c.docs[i]));
                if (prose)
                    for_each_shingle(words_of(c.docs[i]), [&](uint64_t h) { return eval_shingles.insert(h), true; });
            }
        } catch (const Error&) {
        }
    }
    auto read_sources = [&](const std::string& dir, const std::function<bool(const std::string&)>& keep,
                            std::vector<std::string>& names, const std::function<void(std::string&&)>& take) {
        std::set<std::pair<dev_t, ino_t>> seen;
        std::unordered_set<uint64_t> seen_bytes;
        size_t total = 0;
        for (const auto& p : list_files(dir, keep)) {
            struct stat st;
            if (stat(p.c_str(), &st) != 0 || st.st_size > (8 << 20) || !seen.insert({st.st_dev, st.st_ino}).second) continue;
            if (eval_files.count(canonical(p))) continue;
            std::string text = read_all(p);
            const uint64_t h = fnv(text);
            if (!valid_utf8_text(text) || eval_hashes.count(h) || !seen_bytes.insert(h).second) continue;
            total += text.size();
            names.push_back(p);
            take(std::move(text));
            if (total >= o.max_source_bytes) break;
        }
    };
    std::unordered_set<uint64_t> seen_par;
    size_t prose_bytes = 0;
    read_sources(o.prose_dir, prose_name, s.prose_files, [&](std::string&& text) {
        std::vector<std::string> pieces;
        for (const auto& p : paragraphs_of(text))
            if (prose_like(p)) split_long(p, pieces);
        for (auto& p : pieces) {
            if (p.size() < 80 || !seen_par.insert(fnv(p)).second) continue;
            bool overlap = false;
            for_each_shingle(words_of(p), [&](uint64_t h) { return !(overlap = eval_shingles.count(h) > 0); });
            if (overlap) {
                ++s.dropped_eval_overlap;
                continue;
            }
            prose_bytes += p.size();
            s.paragraph_doc.push_back(uint32_t(s.prose_files.size() - 1));
            s.paragraphs.push_back(std::move(p));
        }
    });
    read_sources(o.code_dir, code_name, s.code_files, [&](std::string&& text) {
        if (!s.code.empty()) s.code += "\n\n";
        s.code += text;
    });
    // A haystack of max_seq tokens needs about 4 bytes a token, several times over for variety.
    const size_t need = std::max<size_t>(size_t(64) << 10, size_t(o.max_seq) * 16);
    if (prose_bytes < need)
        fail("data: %s holds %zu bytes of usable prose (plain-text paragraphs not shared with eval); at least %zu are needed "
             "for --max-seq %lld (give --prose-dir)",
             o.prose_dir.c_str(), prose_bytes, need, (long long)o.max_seq);
    if (s.code.size() < need)
        fail("data: %s holds %zu bytes of C/C++ source outside eval's code corpus; at least %zu are needed for --max-seq %lld "
             "(give --code-dir)",
             o.code_dir.c_str(), s.code.size(), need, (long long)o.max_seq);
    return s;
}

}  // namespace elastic::train
