#include "eval/ruler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include "core/error.h"
#include "eval/random.h"

namespace elastic::eval {

namespace {

// k insertion slots among n: distinct (drawn without replacement, RULER's choice) while there are
// enough slots; a haystack shorter than the lines to insert gets the remaining ones with repeats,
// never fewer than k (the callers index the result by line). The draws are unchanged whenever
// n >= k, so samples that fit are the same as before.
std::vector<size_t> insert_positions(Rng& r, size_t n, size_t k) {
    std::vector<size_t> at = r.sample(n, k);
    while (at.size() < k) at.push_back(size_t(r.below(n)));
    return at;
}

constexpr const char* kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// RULER constants.py: tokens to generate per task family.
int tokens_to_generate(const std::string& task) {
    if (task == "vt") return 30;
    if (task == "cwe") return 120;
    if (task == "fwe") return 50;
    return 128;
}

struct NiahConfig {
    enum Haystack { Noise, Essay, Needle } haystack;
    bool key_uuid, value_uuid;
    int num_k = 1, num_v = 1, num_q = 1;
};

NiahConfig niah_config(const std::string& t) {
    using H = NiahConfig;
    if (t == "niah_single_1") return {H::Noise, false, false};
    if (t == "niah_single_2") return {H::Essay, false, false};
    if (t == "niah_single_3") return {H::Essay, false, true};
    if (t == "niah_multikey_1") return {H::Essay, false, false, 4};
    if (t == "niah_multikey_2") return {H::Needle, false, false};
    if (t == "niah_multikey_3") return {H::Needle, true, true};
    if (t == "niah_multivalue") return {H::Essay, false, false, 1, 4};
    if (t == "niah_multiquery") return {H::Essay, false, false, 4, 1, 4};
    fail("unknown RULER task '%s'", t.c_str());
}

std::string uuid4(Rng& r) {
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 32; ++i) {
        if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
        int v = int(r.below(16));
        if (i == 12) v = 4;
        if (i == 16) v = 8 + (v & 3);
        s += hex[v];
    }
    return s;
}
std::string number7(Rng& r) { return std::to_string(r.range(1000000, 9999999)); }
std::string word_key(Rng& r) {
    return adjectives()[r.below(adjectives().size())] + "-" + nouns()[r.below(nouns().size())];
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
    return s;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
    return s;
}

// Splits prose into sentences (after . ! ? followed by a space), for needle insertion.
std::vector<std::string> sentences(const std::string& text) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t i = 0; i + 1 < text.size(); ++i)
        if ((text[i] == '.' || text[i] == '!' || text[i] == '?') && text[i + 1] == ' ') {
            out.push_back(text.substr(start, i + 1 - start));
            start = i + 2;
        }
    if (start < text.size()) out.push_back(text.substr(start));
    return out;
}

// RULER niah.py: needles "One of the special magic {numbers|uuids} for KEY is: VALUE." in a haystack.
Sample gen_niah(const std::string& task, int64_t units, Rng& r, const RulerData& d) {
    const NiahConfig c = niah_config(task);
    const std::string tv = c.value_uuid ? "uuids" : "numbers";
    auto key = [&] { return c.key_uuid ? uuid4(r) : word_key(r); };
    auto value = [&] { return c.value_uuid ? uuid4(r) : number7(r); };
    std::vector<std::string> keys, needles, answers;
    std::vector<std::vector<std::string>> values;
    std::set<std::string> used;
    while (int(keys.size()) < c.num_k) {
        std::string k = key();
        if (used.insert(k).second) keys.push_back(k);
    }
    for (const auto& k : keys) {
        values.emplace_back();
        for (int j = 0; j < c.num_v; ++j) {
            values.back().push_back(value());
            needles.push_back("One of the special magic " + tv + " for " + k + " is: " + values.back().back() + ".");
        }
    }
    r.shuffle(needles);
    std::vector<size_t> qi = r.sample(keys.size(), size_t(c.num_q));
    std::vector<std::string> queries;
    for (size_t i : qi) {
        queries.push_back(keys[i]);
        for (const auto& v : values[i]) answers.push_back(v);
    }
    std::string context;
    if (c.haystack == NiahConfig::Essay) {
        std::vector<std::string> words(static_cast<size_t>(units));
        for (int64_t i = 0; i < units; ++i) words[size_t(i)] = d.essay[size_t(i) % d.essay.size()];
        std::vector<std::string> sents = sentences(join(words, " "));
        // depths from RULER's 40 evenly spaced percentages, drawn without replacement
        std::vector<int> depths;
        for (size_t i : r.sample(40, needles.size())) depths.push_back(int(std::lround(100.0 * double(i) / 39.0)));
        std::vector<size_t> pos = {0};
        for (int dp : depths) pos.push_back(size_t(double(sents.size()) * dp / 100.0));
        std::sort(pos.begin() + 1, pos.end());
        pos.push_back(sents.size());
        std::vector<std::string> parts;
        for (size_t i = 1; i < pos.size(); ++i) {
            std::vector<std::string> chunk(sents.begin() + long(pos[i - 1]), sents.begin() + long(pos[i]));
            if (!chunk.empty()) parts.push_back(join(chunk, " "));
            if (i - 1 < needles.size()) parts.push_back(needles[i - 1]);
        }
        context = join(parts, " ");
    } else {
        std::vector<std::string> hay;
        for (int64_t i = 0; i < units; ++i) {
            if (c.haystack == NiahConfig::Noise) {
                hay.push_back(kNoise);
            } else {
                std::string k = key();
                while (used.count(k)) k = key();
                hay.push_back("One of the special magic " + tv + " for " + k + " is: " + value() + ".");
            }
        }
        std::vector<size_t> at = insert_positions(r, hay.size() + 1, needles.size());
        std::sort(at.rbegin(), at.rend());
        for (size_t i = 0; i < needles.size(); ++i) hay.insert(hay.begin() + long(std::min(at[i], hay.size())), needles[i]);
        context = join(hay, "\n");
    }
    std::string query = queries.size() == 1 ? queries[0] : join(std::vector<std::string>(queries.begin(), queries.end() - 1), ", ") + ", and " + queries.back();
    std::string tmpl =
        "Some special magic {v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {v} afterwards.\n"
        "{context}\nWhat are all the special magic {v} for {query} mentioned in the provided text?";
    std::string prefix = " The special magic {v} for {query} mentioned in the provided text are";
    std::string v = tv;
    if (c.num_q * c.num_v == 1) {  // RULER's singular rewrite
        for (std::string* s : {&tmpl, &prefix}) {
            *s = replace_all(*s, "Some", "A");
            *s = replace_all(*s, "are all", "is");
            *s = replace_all(*s, "are", "is");
        }
        v.pop_back();
    }
    Sample s;
    s.input = replace_all(replace_all(replace_all(tmpl, "{v}", v), "{query}", query), "{context}", context);
    s.answer_prefix = replace_all(replace_all(prefix, "{v}", v), "{query}", query);
    s.outputs = answers;
    for (const auto& a : answers) {  // where the model must copy from (first occurrence after "is: ")
        const size_t p = s.input.find(" is: " + a + ".");
        if (p != std::string::npos) s.needles.push_back({p + 5, p + 5 + a.size()});
    }
    return s;
}

// RULER variable_tracking.py: one chain of num_hops+1 variables in the noise haystack.
Sample gen_vt(int64_t units, Rng& r) {
    const int hops = 4, chains = 1;
    std::vector<std::vector<std::string>> vars;
    std::vector<std::vector<std::string>> lines;
    std::set<std::string> used;
    for (int c = 0; c < chains; ++c) {
        vars.emplace_back();
        while (int(vars.back().size()) < hops + 1) {
            std::string v;
            for (int i = 0; i < 5; ++i) v += char('A' + r.below(26));
            if (used.insert(v).second) vars.back().push_back(v);
        }
        lines.emplace_back();
        lines.back().push_back("VAR " + vars.back()[0] + " = " + std::to_string(r.range(10000, 99998)));
        for (int j = 0; j < hops; ++j) lines.back().push_back("VAR " + vars.back()[size_t(j) + 1] + " = VAR " + vars.back()[size_t(j)]);
    }
    std::vector<std::string> sents(static_cast<size_t>(units), kNoise);
    for (const auto& chain : lines) {
        std::vector<size_t> at = insert_positions(r, sents.size() + 1, chain.size());
        std::sort(at.begin(), at.end());
        for (size_t j = 0; j < chain.size(); ++j) sents.insert(sents.begin() + long(std::min(at[j] + j, sents.size())), chain[j]);
    }
    const std::string value = lines[0][0].substr(lines[0][0].rfind(' ') + 1);
    Sample s;
    s.input = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n" + join(sents, "\n") +
              "\nQuestion: Find all variables that are assigned the value " + value + " in the text above.";
    s.answer_prefix = " Answer: According to the chain(s) of variable assignment in the text above, " + std::to_string(hops + 1) +
                      " variables are assigned the value " + value + ", they are: ";
    s.outputs = vars[0];
    return s;
}

// RULER common_words_extraction.py: a numbered list where num_cw words appear freq_cw times and the
// others freq_ucw times.
Sample gen_cwe(int64_t units, Rng& r, const RulerData& d, int freq_cw) {
    const int num_cw = 10, freq_ucw = 3;
    const size_t n = size_t(std::max<int64_t>(units, num_cw + 1));
    std::vector<std::string> pool = word_pool(d.prose, std::max<size_t>(n, 2000));
    std::vector<std::string> words;
    for (size_t i : r.sample(pool.size(), n)) words.push_back(pool[i]);
    std::vector<std::string> list;
    for (int k = 0; k < freq_cw; ++k) list.insert(list.end(), words.begin(), words.begin() + num_cw);
    for (int k = 0; k < freq_ucw; ++k) list.insert(list.end(), words.begin() + num_cw, words.end());
    r.shuffle(list);
    std::string ctx;
    for (size_t i = 0; i < list.size(); ++i) ctx += (i ? " " : "") + std::to_string(i + 1) + ". " + list[i];
    Sample s;
    s.input = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n" +
              ctx + "\nQuestion: What are the 10 most common words in the above list?";
    s.answer_prefix = " Answer: The top 10 words that appear most often in the list are:";
    s.outputs.assign(words.begin(), words.begin() + num_cw);
    return s;
}

// RULER freq_words_extraction.py: coded words with Zipf(alpha = 2) counts; the top rank is the
// noise word "...." and the answer is ranks 2-4.
Sample gen_fwe(int64_t units, Rng& r) {
    const double alpha = 2.0, zeta2 = M_PI * M_PI / 6.0;
    std::set<std::string> seen;
    std::vector<std::string> vocab;
    while (vocab.size() < 2000) {
        std::string w;
        for (int i = 0; i < 6; ++i) w += char('a' + r.below(26));
        if (seen.insert(w).second) vocab.push_back(w);
    }
    vocab[0] = "....";
    std::vector<std::string> words;
    for (size_t k = 0; k < vocab.size(); ++k) {
        const int64_t cnt = int64_t(double(units) * std::pow(double(k + 1), -alpha) / zeta2);
        for (int64_t i = 0; i < cnt; ++i) words.push_back(vocab[k]);
    }
    r.shuffle(words);
    Sample s;
    s.input = "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. " +
              join(words, " ") +
              "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?";
    s.answer_prefix = " Answer: According to the coded text above, the three most frequently appeared words are:";
    s.outputs.assign(vocab.begin() + 1, vocab.begin() + 4);
    return s;
}

}  // namespace

const std::vector<std::string>& ruler_tasks() {
    static const std::vector<std::string> t = {"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                               "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery",
                                               "vt", "cwe", "fwe"};
    return t;
}

std::vector<std::string> parse_ruler_tasks(const std::string& list) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= list.size()) {
        size_t end = list.find(',', start);
        if (end == std::string::npos) end = list.size();
        const std::string t = list.substr(start, end - start);
        start = end + 1;
        if (t.empty()) continue;
        if (t == "all") {
            out.insert(out.end(), ruler_tasks().begin(), ruler_tasks().end());
        } else if (t == "niah") {
            out.insert(out.end(), ruler_tasks().begin(), ruler_tasks().begin() + 8);
        } else {
            if (std::find(ruler_tasks().begin(), ruler_tasks().end(), t) == ruler_tasks().end())
                fail("unknown RULER task '%s' (tasks: all, niah, %s)", t.c_str(), join(ruler_tasks(), ", ").c_str());
            out.push_back(t);
        }
    }
    if (out.empty()) fail("no RULER tasks given");
    return out;
}

Sample make_ruler_sample(const std::string& task, int64_t length, int index, uint64_t seed, const RulerData& data,
                         const PromptTokens& tokens) {
    if (task.rfind("niah", 0) == 0 && niah_config(task).haystack == NiahConfig::Essay && data.essay.empty())
        fail("%s: the essay haystack has no words", task.c_str());
    const int gen = tokens_to_generate(task);
    const uint64_t s0 = derive_seed(seed, task, uint64_t(length), uint64_t(index));
    int freq_cw = 30;
    auto build = [&](int64_t units) {
        Rng r(s0);  // the same stream for every size tried: the sample depends on (seed, task, length, index) only
        Sample s = task == "vt" ? gen_vt(units, r) : task == "cwe" ? gen_cwe(units, r, data, freq_cw) : task == "fwe" ? gen_fwe(units, r)
                                                                                                      : gen_niah(task, units, r, data);
        s.task = task;
        s.length = length;
        s.index = index;
        s.max_new_tokens = gen;
        return s;
    };
    auto count = [&](int64_t units) { return tokens(build(units)) + gen; };
    auto fits = [&](int64_t units) { return count(units) <= length; };
    const int64_t min_units = task == "cwe" ? 11 : task == "fwe" ? 8 : 1;
    if (task == "cwe")  // short lengths cannot hold 10 words x 30: lower the common count as needed
        for (int f : {30, 20, 10, 6}) {
            freq_cw = f;
            if (fits(min_units)) break;
        }
    const int64_t t0 = count(min_units);
    if (t0 > length) fail("%s: %lld tokens is too short for the task", task.c_str(), (long long)length);
    // Bracket the answer from a linear estimate, then bisect (keeps long lengths to ~15 tokenisations).
    const int64_t probe = min_units + 64;
    const double per_unit = std::max(1e-3, double(count(probe) - t0) / 64.0);
    const int64_t guess = std::max(min_units, min_units + int64_t(double(length - t0) / per_unit));
    int64_t lo = min_units, hi = guess;
    if (fits(guess)) {
        lo = guess;
        for (hi = guess + guess / 20 + 1; fits(hi); hi += hi / 20 + 1) lo = hi;
    } else {
        for (int64_t x = guess - guess / 20 - 1; x > min_units; x -= x / 20 + 1) {
            if (fits(x)) {
                lo = x;
                break;
            }
            hi = x;
        }
    }
    while (hi - lo > 1) {  // invariant: fits(lo), !fits(hi)
        const int64_t mid = lo + (hi - lo) / 2;
        (fits(mid) ? lo : hi) = mid;
    }
    return build(lo);
}

double string_match_all(const std::string& prediction, const std::vector<std::string>& outputs) {
    if (outputs.empty()) return 0;
    auto lower = [](std::string s) {
        for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
        return s;
    };
    const std::string p = lower(prediction);
    int hit = 0;
    for (const auto& o : outputs) hit += p.find(lower(o)) != std::string::npos;
    return double(hit) / double(outputs.size());
}

}  // namespace elastic::eval
