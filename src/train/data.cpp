// The training mix builder (which task next, how long, the final length check), its JSONL line
// format and the reader that checks a mix before training. Tasks: data-sensitive.cpp,
// data-robust.cpp; sources: data-sources.cpp.
#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/random.h"
#include "tokenizer/tokenizer.h"
#include "train/data-tasks.h"

namespace elastic::train {

const std::vector<std::string>& sensitive_train_tasks() {
    static const std::vector<std::string> t = {"kv-single", "kv-multi", "var-chain", "haystack-qa"};
    return t;
}
const std::vector<std::string>& robust_train_tasks() {
    static const std::vector<std::string> t = {"prose-continue", "prose-lead", "code-complete", "prose-raw", "code-raw"};
    return t;
}
const std::string& task_category(const std::string& task) {
    static const std::string sensitive = "sensitive", robust = "robust";
    const auto has = [&](const std::vector<std::string>& v) { return std::find(v.begin(), v.end(), task) != v.end(); };
    if (has(sensitive_train_tasks())) return sensitive;
    if (has(robust_train_tasks())) return robust;
    fail("data: unknown task '%s'", task.c_str());
}

void render_sample(const Tokenizer& tok, const TextSample& s, std::vector<int32_t>& prompt_ids, std::vector<int32_t>& answer_ids) {
    if (s.format == SampleFormat::Raw) {
        // eval's raw path (robust.cpp document_window, generate.cpp without chat): the text's
        // tokens, no BOS (Tokenizer::encode adds none) and no end of turn after the answer
        prompt_ids = tok.encode(s.prompt, false);
        answer_ids = tok.encode(s.answer, false);
        return;
    }
    const std::string p = tok.chat_template() != ChatTemplate::None ? tok.apply_chat_template({{"user", s.prompt}}, true) : s.prompt;
    prompt_ids = tok.encode(p, true);
    answer_ids = tok.encode(s.answer, false);
    if (!tok.stop_ids().empty()) answer_ids.push_back(tok.stop_ids()[0]);
}

int64_t sample_tokens(const Tokenizer& tok, const TextSample& s) {
    std::vector<int32_t> p, a;
    render_sample(tok, s, p, a);
    return int64_t(p.size() + a.size());
}

namespace detail {

std::string Draft::prompt() const {
    std::string s = head;
    for (size_t i = 0; i < units.size(); ++i) s += (i ? sep : "") + units[i];
    return s + tail;
}

int64_t TaskContext::tokens(const std::string& text) const { return int64_t(tok.encode(text, false).size()); }

int64_t TaskContext::paragraph_tokens(size_t i) {
    if (par_tokens_[i] < 0) par_tokens_[i] = int32_t(tokens(src.paragraphs[i]));
    return par_tokens_[i];
}

int64_t TaskContext::fixed_tokens(const Draft& d) const { return sample_tokens(tok, {d.head + d.tail, d.answer, "", "", d.format}); }

}  // namespace detail

namespace {

// The draft as a sample of at most max_seq tokens, dropping context units as needed; false when
// even the kept units do not fit.
bool finalize(detail::Draft& d, const std::string& task, int64_t max_seq, const Tokenizer& tok, TextSample* out, int64_t* n) {
    for (;;) {
        *out = {d.prompt(), d.answer, task, task_category(task), d.format};
        *n = sample_tokens(tok, *out);
        if (*n <= max_seq) return true;
        // drop a few units at once when far over (re-tokenising the whole prompt per unit is slow)
        const int64_t over = *n - max_seq;
        int64_t dropped = 0;
        bool any = false;
        while (dropped < over) {
            long at = -1;
            if (d.drop_front) {
                for (size_t i = 0; i < d.units.size() && at < 0; ++i)
                    if (!d.keep[i]) at = long(i);
            } else {
                for (size_t i = d.units.size(); i-- > 0 && at < 0;)
                    if (!d.keep[i]) at = long(i);
            }
            if (at < 0) break;
            dropped += int64_t(tok.encode(d.units[size_t(at)], false).size()) + 1;
            d.units.erase(d.units.begin() + at);
            d.keep.erase(d.keep.begin() + at);
            any = true;
        }
        if (!any) return false;
    }
}

}  // namespace

BuildStats build_training_mix(const DataBuildOptions& o, const Tokenizer& tok, const TrainSources& src, const SampleSink& sink) {
    if (o.tokens < 1) fail("data: --tokens must be positive");
    if (o.max_seq < 256) fail("data: --max-seq must be at least 256 (got %lld)", (long long)o.max_seq);
    if (!(o.sensitive_share >= 0 && o.sensitive_share <= 1)) fail("data: --sensitive-share must lie in [0, 1]");
    const int64_t min_seq = std::min(o.max_seq, std::max<int64_t>(o.min_seq > 0 ? o.min_seq : o.max_seq / 8, 192));
    detail::TaskContext ctx(tok, src);
    BuildStats st;
    int64_t per_cat[2] = {0, 0};  // samples so far: sensitive, robust
    for (uint64_t i = 0; st.tokens < o.tokens; ++i) {
        // the category behind its share of tokens goes next; tasks take turns within a category
        const bool sensitive = o.sensitive_share >= 1 ||
                               (o.sensitive_share > 0 && double(st.sensitive_tokens) <= o.sensitive_share * double(st.tokens));
        const auto& tasks = sensitive ? sensitive_train_tasks() : robust_train_tasks();
        const std::string& task = tasks[size_t(per_cat[sensitive ? 0 : 1]++) % tasks.size()];
        eval::Rng pick(eval::derive_seed(o.seed, "mix", i));
        int64_t target = pick.range(min_seq, o.max_seq);
        target = std::min(target, std::max(min_seq, o.tokens - st.tokens));  // the last sample lands near --tokens
        TextSample s;
        int64_t n = 0;
        bool ok = false;
        for (uint64_t attempt = 0; attempt < 16 && !ok; ++attempt) {
            eval::Rng r(eval::derive_seed(o.seed, task, i, attempt));
            detail::Draft d = sensitive ? detail::make_sensitive_draft(task, target, r, ctx) : detail::make_robust_draft(task, target, r, ctx);
            ok = finalize(d, task, o.max_seq, tok, &s, &n);
        }
        if (!ok) fail("data: could not fit a %s sample into %lld tokens", task.c_str(), (long long)o.max_seq);
        st.samples++;
        st.tokens += n;
        if (sensitive) st.sensitive_tokens += n;
        st.per_task[task]++;
        sink(s, n, st);
    }
    return st;
}

std::vector<TextSample> build_training_mix(const DataBuildOptions& o, const Tokenizer& tok) {
    const TrainSources src = load_train_sources(o);
    std::vector<TextSample> out;
    build_training_mix(o, tok, src, [&](const TextSample& s, int64_t, const BuildStats&) { out.push_back(s); });
    return out;
}

std::string to_json_line(const TextSample& s) {
    nlohmann::ordered_json j = {{"prompt", s.prompt}, {"answer", s.answer}, {"task", s.task}, {"category", s.category}};
    if (s.format == SampleFormat::Raw) j["format"] = "raw";
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string parse_text_sample(const std::string& line, TextSample& s) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return "not valid JSON";
    if (!j.is_object()) return "not a JSON object";
    for (const char* f : {"prompt", "answer", "task", "category"}) {
        const auto it = j.find(f);
        if (it == j.end()) return strprintf("missing field '%s'", f);
        if (!it->is_string()) return strprintf("field '%s' is not a string", f);
    }
    s = {j["prompt"].get<std::string>(), j["answer"].get<std::string>(), j["task"].get<std::string>(),
         j["category"].get<std::string>()};
    if (s.category != "sensitive" && s.category != "robust") return "unknown category '" + s.category + "' (sensitive or robust)";
    if (const auto it = j.find("format"); it != j.end()) {
        if (!it->is_string()) return "field 'format' is not a string (chat or raw)";
        const std::string f = it->get<std::string>();
        if (f == "raw") {
            s.format = SampleFormat::Raw;
        } else if (f != "chat") {
            return "unknown format '" + f + "' (chat or raw)";
        }
    }
    return "";
}

std::vector<TextSample> read_training_data(const std::string& path, int64_t max_seq, const Tokenizer& tok, bool skip_bad,
                                            int64_t* skipped) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("%s: cannot open", path.c_str());
    std::vector<TextSample> out;
    int64_t bad = 0, lineno = 0;
    std::string line;
    while (std::getline(in, line)) {
        ++lineno;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        TextSample s;
        std::string why = parse_text_sample(line, s);
        if (why.empty())
            if (const int64_t n = sample_tokens(tok, s); n > max_seq)
                why = strprintf("%lld tokens, more than --max-seq %lld", (long long)n, (long long)max_seq);
        if (why.empty()) {
            out.push_back(std::move(s));
        } else if (skip_bad) {
            ++bad;
        } else {
            fail("%s:%lld: %s", path.c_str(), (long long)lineno, why.c_str());
        }
    }
    if (in.bad()) fail("%s: read error", path.c_str());
    if (skipped) *skipped = bad;
    return out;
}

}  // namespace elastic::train
