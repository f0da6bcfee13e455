#include "eval/longbench-metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "core/error.h"

namespace elastic::eval {

namespace {

bool py_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }
bool ascii_punct(unsigned char c) { return c < 128 && std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", c) && c != 0; }
bool word_char(unsigned char c) { return c >= 0x80 || std::isalnum(c) || c == '_'; }

std::string lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return s;
}

// Python str.split() with no argument.
std::vector<std::string> py_split(const std::string& s) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && py_space(static_cast<unsigned char>(s[i]))) ++i;
        size_t j = i;
        while (j < s.size() && !py_space(static_cast<unsigned char>(s[j]))) ++j;
        if (j > i) out.push_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

// Python str.split(sep) with a one-character separator.
std::vector<std::string> split_on(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t i = 0; i <= s.size(); ++i)
        if (i == s.size() || s[i] == sep) {
            out.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
    return s;
}

std::vector<std::u32string::value_type> code_points(const std::string& s) {
    std::vector<char32_t> out;
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        if (i + size_t(n) > s.size()) n = 1;
        char32_t cp = n == 1 ? c : c & (0x7F >> n);
        for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + size_t(k)]) & 0x3F);
        out.push_back(cp);
        i += size_t(n);
    }
    return out;
}

const std::set<char32_t>& zh_punct() {
    static const std::set<char32_t> p = [] {
        const auto v = code_points(
            "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.");
        std::set<char32_t> s(v.begin(), v.end());
        for (unsigned char c = 0; c < 128; ++c)
            if (ascii_punct(c)) s.insert(c);
        return s;
    }();
    return p;
}

double f1_tokens(const std::vector<std::string>& pred, const std::vector<std::string>& gt) {
    std::map<std::string, int> cp, cg;
    for (const auto& t : pred) ++cp[t];
    for (const auto& t : gt) ++cg[t];
    int same = 0;
    for (const auto& [t, n] : cp) {
        auto it = cg.find(t);
        if (it != cg.end()) same += std::min(n, it->second);
    }
    if (same == 0) return 0;
    const double p = double(same) / double(pred.size()), r = double(same) / double(gt.size());
    return 2 * p * r / (p + r);
}

// Character-level stand-in for jieba.cut: one token per character, runs of ASCII letters/digits kept.
std::vector<std::string> zh_tokens(const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        size_t j = i + 1;
        if (std::isalnum(c)) {
            while (j < s.size() && std::isalnum(static_cast<unsigned char>(s[j]))) ++j;
        } else if (c >= 0x80) {
            while (j < s.size() && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) ++j;
        }
        out.push_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

// pltrdy rouge: LCS of two word lists reconstructed with its tie-break, as a set of words.
void lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y, std::set<std::string>& into) {
    const size_t n = x.size(), m = y.size();
    std::vector<int> t((n + 1) * (m + 1), 0);
    auto T = [&](size_t i, size_t j) -> int& { return t[i * (m + 1) + j]; };
    for (size_t i = 1; i <= n; ++i)
        for (size_t j = 1; j <= m; ++j) T(i, j) = x[i - 1] == y[j - 1] ? T(i - 1, j - 1) + 1 : std::max(T(i - 1, j), T(i, j - 1));
    size_t i = n, j = m;
    while (i > 0 && j > 0) {
        if (x[i - 1] == y[j - 1]) {
            into.insert(x[i - 1]);
            --i;
            --j;
        } else if (T(i - 1, j) > T(i, j - 1)) {
            --i;
        } else {
            --j;
        }
    }
}

std::vector<std::string> rouge_sentences(const std::string& text) {
    std::vector<std::string> out;
    for (const auto& piece : split_on(text, '.'))
        if (!piece.empty()) out.push_back(join(py_split(piece), " "));
    return out;
}

std::vector<std::string> rouge_words(const std::vector<std::string>& sents) {
    std::vector<std::string> w;
    for (const auto& s : sents)
        for (auto& x : split_on(s, ' ')) w.push_back(std::move(x));
    return w;
}

std::vector<std::string> digit_runs(const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
        if (std::isdigit(static_cast<unsigned char>(s[i]))) {
            size_t j = i;
            while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
            out.push_back(s.substr(i, j - i));
            i = j;
        } else {
            ++i;
        }
    }
    return out;
}

double share_equal(const std::vector<std::string>& numbers, const std::string& want) {
    if (numbers.empty()) return 0;
    int right = 0;
    for (const auto& n : numbers) right += n == want;
    return double(right) / double(numbers.size());
}

double retrieval_with(const std::string& prediction, const std::string& ground_truth, const std::string& marker) {
    // re.findall(marker + r'(\d+)', ground_truth)[0]; Python raises when absent, we score 0.
    for (size_t p = ground_truth.find(marker); p != std::string::npos; p = ground_truth.find(marker, p + 1)) {
        const std::vector<std::string> d = digit_runs(ground_truth.substr(p + marker.size()));
        const size_t q = p + marker.size();
        if (q < ground_truth.size() && std::isdigit(static_cast<unsigned char>(ground_truth[q])) && !d.empty())
            return share_equal(digit_runs(prediction), d[0]);
    }
    return 0;
}

}  // namespace

std::string normalize_answer(const std::string& s) {
    std::string t;
    for (char c : lower(s))
        if (!ascii_punct(static_cast<unsigned char>(c))) t += c;
    std::string u;  // \b(a|an|the)\b -> " "
    for (size_t i = 0; i < t.size();) {
        if (word_char(static_cast<unsigned char>(t[i]))) {
            size_t j = i;
            while (j < t.size() && word_char(static_cast<unsigned char>(t[j]))) ++j;
            const std::string w = t.substr(i, j - i);
            u += (w == "a" || w == "an" || w == "the") ? std::string(" ") : w;
            i = j;
        } else {
            u += t[i++];
        }
    }
    return join(py_split(u), " ");
}

std::string normalize_zh_answer(const std::string& s) {
    std::string t;
    const std::string l = lower(s);
    for (size_t i = 0; i < l.size();) {
        const unsigned char c = static_cast<unsigned char>(l[i]);
        size_t j = i + 1;
        if (c >= 0x80)
            while (j < l.size() && (static_cast<unsigned char>(l[j]) & 0xC0) == 0x80) ++j;
        const std::string ch = l.substr(i, j - i);
        const auto cp = code_points(ch);
        if (!(cp.size() == 1 && zh_punct().count(cp[0]))) t += ch;
        i = j;
    }
    return join(py_split(t), "");
}

double qa_f1_score(const std::string& prediction, const std::string& ground_truth) {
    return f1_tokens(py_split(normalize_answer(prediction)), py_split(normalize_answer(ground_truth)));
}

double qa_f1_zh_score(const std::string& prediction, const std::string& ground_truth) {
    auto toks = [](const std::string& s) {
        std::vector<std::string> out;
        for (const auto& t : zh_tokens(s)) {
            std::string n = normalize_zh_answer(t);
            if (!n.empty()) out.push_back(n);
        }
        return out;
    };
    return f1_tokens(toks(prediction), toks(ground_truth));
}

double rouge_score(const std::string& prediction, const std::string& ground_truth) {
    const std::vector<std::string> hyp = rouge_sentences(prediction), ref = rouge_sentences(ground_truth);
    if (hyp.empty() || ref.empty()) return 0;  // the package raises; LongBench returns 0
    const std::vector<std::string> hw = rouge_words(hyp), rw = rouge_words(ref);
    const size_t n = std::set<std::string>(hw.begin(), hw.end()).size();
    const size_t m = std::set<std::string>(rw.begin(), rw.end()).size();
    std::set<std::string> uni;
    for (const auto& r : ref) {
        const std::vector<std::string> rws = split_on(r, ' ');
        for (const auto& h : hyp) lcs_words(rws, split_on(h, ' '), uni);
    }
    const double llcs = double(uni.size());
    const double r = llcs / double(m), p = llcs / double(n);
    return 2.0 * ((p * r) / (p + r + 1e-8));
}

double rouge_zh_score(const std::string& prediction, const std::string& ground_truth) {
    auto seg = [](const std::string& s) {
        std::vector<std::string> t;
        for (auto& x : zh_tokens(s))
            if (!(x.size() == 1 && py_space(static_cast<unsigned char>(x[0])))) t.push_back(x);
        return join(t, " ");
    };
    return rouge_score(seg(prediction), seg(ground_truth));
}

double classification_score(const std::string& prediction, const std::string& ground_truth,
                            const std::vector<std::string>& all_classes) {
    std::vector<std::string> em;
    for (const auto& c : all_classes)
        if (prediction.find(c) != std::string::npos) em.push_back(c);
    for (size_t i = 0; i < em.size(); ++i) {  // Python: remove() while iterating skips the next item
        const std::string term = em[i];
        if (ground_truth.find(term) != std::string::npos && term != ground_truth) em.erase(std::find(em.begin(), em.end(), term));
    }
    if (std::find(em.begin(), em.end(), ground_truth) != em.end()) return 1.0 / double(em.size());
    return 0.0;
}

double retrieval_score(const std::string& prediction, const std::string& ground_truth) {
    return retrieval_with(prediction, ground_truth, "Paragraph ");
}

double retrieval_zh_score(const std::string& prediction, const std::string& ground_truth) {
    return retrieval_with(prediction, ground_truth, "段落");
}

double count_score(const std::string& prediction, const std::string& ground_truth) {
    return share_equal(digit_runs(prediction), ground_truth);
}

int fuzz_ratio(const std::string& a, const std::string& b) {
    if (a == b) return 100;
    if (a.empty() || b.empty()) return 0;
    const auto x = code_points(a), y = code_points(b);
    std::vector<size_t> prev(y.size() + 1, 0), cur(y.size() + 1, 0);
    for (size_t i = 1; i <= x.size(); ++i) {
        for (size_t j = 1; j <= y.size(); ++j) cur[j] = x[i - 1] == y[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
        std::swap(prev, cur);
    }
    const double lensum = double(x.size() + y.size());
    const double dist = lensum - 2.0 * double(prev[y.size()]);  // Levenshtein with substitution cost 2
    return int(std::nearbyint(100.0 * ((lensum - dist) / lensum)));  // Python round(): half to even
}

double code_sim_score(const std::string& prediction, const std::string& ground_truth) {
    size_t s = 0;
    while (s < prediction.size() && prediction[s] == '\n') ++s;
    std::string line;
    for (const auto& l : split_on(prediction.substr(s), '\n'))
        if (l.find('`') == std::string::npos && l.find('#') == std::string::npos && l.find("//") == std::string::npos) {
            line = l;
            break;
        }
    return fuzz_ratio(line, ground_truth) / 100.0;
}

namespace {
using Metric = double (*)(const std::string&, const std::string&);
const std::map<std::string, Metric>& metrics() {
    static const std::map<std::string, Metric> m = {
        {"narrativeqa", qa_f1_score},       {"qasper", qa_f1_score},          {"multifieldqa_en", qa_f1_score},
        {"multifieldqa_zh", qa_f1_zh_score}, {"hotpotqa", qa_f1_score},        {"2wikimqa", qa_f1_score},
        {"musique", qa_f1_score},           {"dureader", rouge_zh_score},     {"gov_report", rouge_score},
        {"qmsum", rouge_score},             {"multi_news", rouge_score},      {"vcsum", rouge_zh_score},
        {"trec", nullptr},                  {"triviaqa", qa_f1_score},        {"samsum", rouge_score},
        {"lsht", nullptr},                  {"passage_retrieval_en", retrieval_score},
        {"passage_count", count_score},     {"passage_retrieval_zh", retrieval_zh_score},
        {"lcc", code_sim_score},            {"repobench-p", code_sim_score}};
    return m;
}
}  // namespace

bool is_longbench_dataset(const std::string& d) { return metrics().count(d) != 0; }

double longbench_score(const std::string& dataset, const std::string& prediction, const std::vector<std::string>& answers,
                       const std::vector<std::string>& all_classes) {
    auto it = metrics().find(dataset);
    if (it == metrics().end()) fail("unknown LongBench dataset '%s'", dataset.c_str());
    std::string pred = prediction;
    if (dataset == "trec" || dataset == "triviaqa" || dataset == "samsum" || dataset == "lsht") {
        size_t s = 0;
        while (s < pred.size() && pred[s] == '\n') ++s;
        pred = split_on(pred.substr(s), '\n')[0];
    }
    double best = 0;
    for (const auto& gt : answers)
        best = std::max(best, it->second ? it->second(pred, gt) : classification_score(pred, gt, all_classes));
    return best;
}

}  // namespace elastic::eval
