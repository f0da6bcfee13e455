// Sparsity-robust training tasks: the answer follows from nearby text (or from the very start,
// which streaming heads keep as their sink), over real prose and real source code.
//   prose-continue  consecutive paragraphs cut after a sentence; the answer is the next sentence
//   prose-lead      a passage; summarise it in one line by quoting its opening sentence
//   code-complete   the lines of a header before a code line; the answer is that line (stripped)
//   prose-raw       raw format: consecutive paragraphs cut after a sentence, no instruction; the
//                   answer is the next sentence with the space before it (prompt + answer = the text)
//   code-raw        raw format: the lines of a header up to the end of a line, no instruction; the
//                   answer is the whitespace and the next non-blank (code) line (prompt + answer = the text)
// Prompts differ from eval's (LongBench's lcc prompt "Please complete the code given below."); the
// raw tasks feed text as eval's robust tasks do, from the training sources.
#include <algorithm>

#include "core/error.h"
#include "train/data-tasks.h"

namespace elastic::train::detail {

namespace {

using eval::Rng;

std::string strip(const std::string& s) {
    const size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t\r\n") + 1 - b);
}

// Sentences of a paragraph (split after ". ", "! ", "? ").
std::vector<std::string> sentences(const std::string& p) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t i = 0; i + 1 < p.size(); ++i)
        if ((p[i] == '.' || p[i] == '!' || p[i] == '?') && p[i + 1] == ' ') {
            out.push_back(strip(p.substr(start, i + 1 - start)));
            start = i + 2;
        }
    if (start < p.size()) out.push_back(strip(p.substr(start)));
    out.erase(std::remove(out.begin(), out.end(), std::string()), out.end());
    return out;
}

std::string join(const std::vector<std::string>& v, size_t from, size_t to) {
    std::string s;
    for (size_t i = from; i < to; ++i) s += (i > from ? " " : "") + v[i];
    return s;
}

// Paragraphs before `last` (nearest first) until `budget` tokens, added to the front of d.units.
void fill_backward(Draft& d, size_t last, int64_t budget, TaskContext& ctx) {
    std::vector<std::string> before;
    for (size_t i = last; i-- > 0 && budget > 8;) {
        const int64_t t = ctx.paragraph_tokens(i) + 1;
        if (t > budget) break;
        before.push_back(ctx.src.paragraphs[i]);
        budget -= t;
    }
    std::reverse(before.begin(), before.end());
    d.units.insert(d.units.begin(), before.begin(), before.end());
    d.keep.insert(d.keep.begin(), before.size(), false);
}

Draft prose_continue(int64_t target, Rng& r, TaskContext& ctx) {
    const auto& P = ctx.src.paragraphs;
    for (int attempt = 0; attempt < 200; ++attempt) {
        const size_t a = size_t(r.below(P.size()));
        const std::vector<std::string> s = sentences(P[a]);
        if (s.size() < 2) continue;
        const size_t k = size_t(r.range(1, int64_t(s.size()) - 1));
        std::string answer = s[k];
        if (answer.size() < 40 && k + 1 < s.size()) answer += " " + s[k + 1];
        if (answer.size() < 12 || answer.size() > 400) continue;
        Draft d;
        d.head = r.below(2) ? "Continue the following text with the sentence that comes next.\n\n"
                            : "Here is an excerpt from some software documentation. Write its next sentence.\n\n";
        d.tail = "\n\nNext sentence:";
        d.answer = answer;
        d.drop_front = true;
        d.units = {join(s, 0, k)};
        d.keep = {true};
        const int64_t budget = target - ctx.fixed_tokens(d) - ctx.tokens(d.units[0]) - 1;
        if (budget < 0) continue;
        fill_backward(d, a, budget, ctx);
        return d;
    }
    fail("data: prose-continue found no paragraph of two sentences or more");
}

Draft prose_lead(int64_t target, Rng& r, TaskContext& ctx) {
    const auto& P = ctx.src.paragraphs;
    for (int attempt = 0; attempt < 200; ++attempt) {
        const size_t p = size_t(r.below(P.size()));
        const std::vector<std::string> s = sentences(P[p]);
        if (s.empty()) continue;
        const std::string& lead = s[0];
        if (lead.size() < 30 || lead.size() > 300) continue;
        Draft d;
        d.head = "Read the passage below.\n\n";
        d.tail = r.below(2) ? "\n\nSummarise the passage in one line by quoting its opening sentence."
                            : "\n\nGive a one-line summary of the passage: repeat the sentence it opens with.";
        d.answer = lead;
        int64_t budget = target - ctx.fixed_tokens(d);
        for (size_t i = p; i < P.size() && budget > 8; ++i) {
            const int64_t t = ctx.paragraph_tokens(i) + 1;
            if (t > budget) break;
            d.units.push_back(P[i]);
            d.keep.push_back(d.units.size() == 1);
            budget -= t;
        }
        if (d.units.empty()) continue;
        return d;
    }
    fail("data: prose-lead found no paragraph with a usable opening sentence");
}

size_t line_start_at_or_after(const std::string& t, size_t p) {
    if (p == 0) return 0;
    const size_t nl = t.find('\n', p - 1);
    return nl == std::string::npos ? t.size() : nl + 1;
}

// A line worth predicting: code, not a comment or preprocessor-only noise, of sensible length.
bool completable(const std::string& line) {
    return line.size() >= 8 && line.size() <= 160 && line.find('#') == std::string::npos && line.find("//") == std::string::npos &&
           line.find("/*") == std::string::npos && line.find("*/") == std::string::npos && line[0] != '*';
}

// Blocks of lines going back from `end` (a line start, or the end of a line's text) until `budget`
// tokens, in text order: the code before a line, as units that can be dropped from the front.
std::vector<std::string> blocks_before(const std::string& code, size_t end, int64_t budget, TaskContext& ctx) {
    constexpr size_t kBlockLines = 6;
    std::vector<std::string> blocks;
    while (end > 0 && budget > 8) {
        size_t begin = end;
        for (size_t k = 0; k < kBlockLines && begin > 0; ++k) {  // begin: a line start; step to the one before
            const size_t nl = begin < 2 ? std::string::npos : code.rfind('\n', begin - 2);
            begin = nl == std::string::npos ? 0 : nl + 1;
        }
        std::string b = code.substr(begin, end - begin);
        const int64_t t = ctx.tokens(b);
        if (t > budget) break;
        blocks.push_back(std::move(b));
        budget -= t;
        end = begin;
    }
    std::reverse(blocks.begin(), blocks.end());
    return blocks;
}

Draft code_complete(int64_t target, Rng& r, TaskContext& ctx) {
    const std::string& code = ctx.src.code;
    for (int attempt = 0; attempt < 500; ++attempt) {
        const size_t ls = line_start_at_or_after(code, size_t(r.below(code.size())));
        const size_t le = code.find('\n', ls);
        if (ls < 256 || le == std::string::npos) continue;
        const std::string line = strip(code.substr(ls, le - ls));
        if (!completable(line)) continue;
        Draft d;
        d.head = r.below(2) ? "Below is the end of a C header file. Write the single line of code that follows it.\n\n"
                            : "Predict the next line of this C/C++ source excerpt.\n\n";
        d.tail = "\nThe next line of code is:";
        d.answer = line;
        d.sep = "";
        d.drop_front = true;
        std::vector<std::string> blocks = blocks_before(code, ls, target - ctx.fixed_tokens(d), ctx);
        if (blocks.empty()) continue;
        d.units = std::move(blocks);
        d.keep.assign(d.units.size(), false);
        return d;
    }
    fail("data: code-complete found no suitable line in the code sources");
}

// Ends of the sentences of a paragraph: just past each '.', '!' or '?' followed by a space, and the
// paragraph's end when text follows the last of those.
std::vector<size_t> sentence_ends(const std::string& p) {
    std::vector<size_t> out;
    for (size_t i = 0; i + 1 < p.size(); ++i)
        if ((p[i] == '.' || p[i] == '!' || p[i] == '?') && p[i + 1] == ' ') out.push_back(i + 1);
    const size_t last = out.empty() ? 0 : out.back();
    if (!strip(p.substr(last)).empty()) out.push_back(p.size());
    return out;
}

Draft prose_raw(int64_t target, Rng& r, TaskContext& ctx) {
    const auto& P = ctx.src.paragraphs;
    for (int attempt = 0; attempt < 200; ++attempt) {
        const size_t a = size_t(r.below(P.size()));
        const std::string& par = P[a];
        const std::vector<size_t> ends = sentence_ends(par);
        if (ends.size() < 2) continue;
        const size_t k = size_t(r.range(1, int64_t(ends.size()) - 1));
        const size_t cut = ends[k - 1];
        size_t stop = ends[k];
        if (strip(par.substr(cut, stop - cut)).size() < 40 && k + 1 < ends.size()) stop = ends[k + 1];
        const std::string answer = par.substr(cut, stop - cut);  // with the space(s) before it
        const size_t len = strip(answer).size();
        if (len < 12 || len > 400 || strip(par.substr(0, cut)).empty()) continue;
        Draft d;
        d.format = SampleFormat::Raw;
        d.answer = answer;
        d.drop_front = true;
        d.units = {par.substr(0, cut)};
        d.keep = {true};
        const int64_t budget = target - ctx.fixed_tokens(d) - ctx.tokens(d.units[0]) - 1;
        if (budget < 0) continue;
        fill_backward(d, a, budget, ctx);
        return d;
    }
    fail("data: prose-raw found no paragraph of two sentences or more");
}

Draft code_raw(int64_t target, Rng& r, TaskContext& ctx) {
    const std::string& code = ctx.src.code;
    for (int attempt = 0; attempt < 500; ++attempt) {
        const size_t ls = line_start_at_or_after(code, size_t(r.below(code.size())));
        const size_t le = code.find('\n', ls);
        if (ls < 256 || le == std::string::npos) continue;
        if (!completable(strip(code.substr(ls, le - ls)))) continue;
        // the prompt ends on the last non-blank text; the newline(s) and indentation before the line
        // start the answer, as they would come next in the file
        const size_t last = code.find_last_not_of(" \t\r\n", ls - 1);
        if (last == std::string::npos) continue;
        const size_t cut = last + 1, answer_end = code.find_last_not_of(" \t\r", le - 1) + 1;
        Draft d;
        d.format = SampleFormat::Raw;
        d.answer = code.substr(cut, answer_end - cut);
        d.sep = "";
        d.drop_front = true;
        std::vector<std::string> blocks = blocks_before(code, cut, target - ctx.fixed_tokens(d), ctx);
        if (blocks.empty()) continue;
        d.units = std::move(blocks);
        d.keep.assign(d.units.size(), false);
        d.keep.back() = true;  // never an empty prompt
        return d;
    }
    fail("data: code-raw found no suitable line in the code sources");
}

}  // namespace

Draft make_robust_draft(const std::string& task, int64_t target, Rng& r, TaskContext& ctx) {
    if (task == "prose-continue") return prose_continue(target, r, ctx);
    if (task == "prose-lead") return prose_lead(target, r, ctx);
    if (task == "code-complete") return code_complete(target, r, ctx);
    if (task == "prose-raw") return prose_raw(target, r, ctx);
    if (task == "code-raw") return code_raw(target, r, ctx);
    fail("data: unknown robust task '%s'", task.c_str());
}

}  // namespace elastic::train::detail
