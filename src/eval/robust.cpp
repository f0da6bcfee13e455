#include "eval/robust.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "eval/longbench-metrics.h"
#include "eval/longbench.h"
#include "eval/random.h"
#include "model/model.h"
#include "model/sampler.h"

namespace elastic::eval {

namespace {
std::string strip(const std::string& s) {
    const size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t\r\n") + 1 - b);
}

size_t line_start_at_or_after(const std::string& t, size_t p) {
    if (p == 0) return 0;
    const size_t nl = t.find('\n', p - 1);
    return nl == std::string::npos ? 0 : nl + 1;
}

// First line LongBench's code_sim_score would compare.
std::string first_code_line(const std::string& prediction) {
    size_t s = 0;
    while (s < prediction.size() && prediction[s] == '\n') ++s;
    size_t start = s;
    while (start <= prediction.size()) {
        size_t end = prediction.find('\n', start);
        if (end == std::string::npos) end = prediction.size();
        const std::string l = prediction.substr(start, end - start);
        if (l.find('`') == std::string::npos && l.find('#') == std::string::npos && l.find("//") == std::string::npos) return l;
        start = end + 1;
    }
    return "";
}
}  // namespace

const std::vector<std::string>& robust_tasks() {
    static const std::vector<std::string> t = {"ppl-prose", "ppl-code", "code-next-line"};
    return t;
}

std::vector<int32_t> document_window(const Tokenizer& tok, const std::string& text, int64_t n, uint64_t seed) {
    if (text.empty()) fail("eval: empty corpus");
    Rng r(seed);
    const size_t start = line_start_at_or_after(text, size_t(r.below(text.size())));
    std::vector<int32_t> ids;
    size_t bytes = size_t(n) * 6 + 256;
    for (int tries = 0; tries < 8; ++tries, bytes *= 2) {
        std::string window = text.substr(start, bytes);
        while (window.size() < bytes && window.size() < 64 * text.size()) window += "\n\n" + text.substr(0, bytes - window.size());
        ids = tok.encode(window, /*parse_special=*/false);
        if (int64_t(ids.size()) >= n) {
            ids.resize(size_t(n));
            return ids;
        }
    }
    fail("eval: the corpus is too small for %lld tokens", (long long)n);
}

PplResult tail_nll(const Target& e, const std::vector<int32_t>& ids, int64_t tail) {
    const int64_t T = int64_t(ids.size());
    if (T < 2) fail("eval: perplexity needs at least 2 tokens");
    if (T > e.engine.model.config.max_ctx) fail("eval: %lld tokens exceed the model's context of %d", (long long)T, e.engine.model.config.max_ctx);
    tail = std::min(tail, T - 1);
    Session s(e.engine, T, e.spec);
    double nll = 0;
    const int32_t V = e.engine.model.config.vocab;
    s.forward(ids.data(), T, true, [&](int64_t i, const float* logits) {
        if (i + 1 >= T - tail && i + 1 < T) nll -= log_prob(logits, V, ids[size_t(i) + 1]);
    });
    PplResult r;
    r.mean_nll = nll / double(tail);
    r.scored = tail;
    r.omega_msr = s.stats().omega_msr;
    r.omega_esr = s.stats().omega_esr;
    r.prefill_seconds = s.stats().prefill_seconds;
    return r;
}

Sample make_next_line_sample(const Tokenizer& tok, const std::string& code, int64_t length, int index, uint64_t seed) {
    Rng r(derive_seed(seed, "code-next-line", uint64_t(length), uint64_t(index)));
    const int gen = longbench_maxlen("lcc");
    const std::string tmpl = longbench_prompt("lcc");
    const int64_t overhead = int64_t(tok.encode(fill_prompt(tmpl, "", ""), false).size());
    const int64_t budget = length - gen - overhead - 2;
    if (budget < 16) fail("code-next-line: %lld tokens is too short", (long long)length);
    for (int attempt = 0; attempt < 1000; ++attempt) {
        // a candidate answer line far enough into the text
        size_t ls = line_start_at_or_after(code, size_t(r.below(code.size())));
        const size_t le = code.find('\n', ls);
        if (le == std::string::npos) continue;
        const std::string line = strip(code.substr(ls, le - ls));
        if (line.size() < 8 || line.find('#') != std::string::npos || line.find("//") != std::string::npos ||
            line.find("/*") != std::string::npos || line.find('`') != std::string::npos || line[0] == '*')
            continue;
        const size_t want = size_t(budget) * 6 + 256;
        if (ls < want / 4) continue;
        const size_t from = ls > want ? ls - want : 0;
        std::vector<int32_t> ids = tok.encode(code.substr(from, ls - from), false);
        if (int64_t(ids.size()) < budget) continue;  // not enough text before this line
        std::string ctx = tok.decode(std::vector<int32_t>(ids.end() - budget, ids.end()), true);
        Sample s;
        s.task = "code-next-line";
        s.length = length;
        s.index = index;
        s.chat = false;
        s.max_new_tokens = gen;
        s.outputs = {line};
        for (int shrink = 0; shrink < 64; ++shrink) {
            s.input = fill_prompt(tmpl, ctx, "");
            if (int64_t(tok.encode(s.input).size()) + gen <= length) return s;
            ctx.erase(0, std::min(ctx.size(), ctx.find('\n') + 1));  // re-tokenisation grew it: drop a line
        }
    }
    fail("code-next-line: found no suitable line in the code corpus for %lld tokens", (long long)length);
}

double next_line_exact(const std::string& prediction, const std::string& answer) {
    return strip(first_code_line(prediction)) == strip(answer) ? 1.0 : 0.0;
}

double next_line_similarity(const std::string& prediction, const std::string& answer) {
    return fuzz_ratio(strip(first_code_line(prediction)), strip(answer)) / 100.0;
}

}  // namespace elastic::eval
