// The router training mix (src/train/data.h): deterministic for a seed, every sample within
// --max-seq, both categories at the requested share, every task, answers that follow from the
// prompt, raw samples (prose-raw, code-raw) that continue the source text and render without the
// chat template, the optional "format" field, disjoint from eval (no RULER needle sentence or
// template, no eval source file), the reader's line-numbered errors, and `elastic data
// build/check` end to end. Uses the Qwen3 tokenizer fixture (no model needed) and the text
// installed on the machine, capped for speed.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "eval/corpus.h"
#include "eval/ruler.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

using namespace elastic;
using namespace elastic::train;
namespace fs = std::filesystem;

namespace {

const std::string kTokenizer = ELASTIC_SOURCE_DIR "/../shared/fixtures/tokenizers/qwen3/tokenizer.json";

const Tokenizer& tok() {
    static std::unique_ptr<Tokenizer> t = Tokenizer::from_path(kTokenizer);
    return *t;
}

DataBuildOptions small_options(uint64_t seed, int64_t tokens = 40000, int64_t max_seq = 1024) {
    DataBuildOptions o;
    o.tokens = tokens;
    o.max_seq = max_seq;
    o.seed = seed;
    o.max_source_bytes = 3u << 20;
    return o;
}

bool have_sources() { return fs::is_directory(kDefaultTrainProseDir) && fs::is_directory(kDefaultTrainCodeDir); }

const TrainSources& sources() {
    static TrainSources s = load_train_sources(small_options(0));
    return s;
}

struct Built {
    std::vector<TextSample> samples;
    std::vector<int64_t> tokens;
    BuildStats stats;
};
Built build(const DataBuildOptions& o) {
    Built b;
    b.stats = build_training_mix(o, tok(), sources(), [&](const TextSample& s, int64_t n, const BuildStats&) {
        b.samples.push_back(s);
        b.tokens.push_back(n);
    });
    return b;
}
const Built& default_mix() {
    static Built b = build(small_options(11, 60000, 1024));
    return b;
}

#define NEED_SOURCES() \
    if (!have_sources()) GTEST_SKIP() << "no " << kDefaultTrainProseDir << " or " << kDefaultTrainCodeDir

std::string temp_dir() {
    static std::string d = [] {
        char tmpl[] = "/tmp/elastic-data-XXXXXX";
        return std::string(mkdtemp(tmpl));
    }();
    return d;
}

std::string write_file(const std::string& name, const std::string& text) {
    const std::string p = temp_dir() + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
}

}  // namespace

TEST(TrainData, DeterministicForASeed) {
    NEED_SOURCES();
    const Built a = build(small_options(5, 20000)), b = build(small_options(5, 20000)), c = build(small_options(6, 20000));
    ASSERT_EQ(a.samples.size(), b.samples.size());
    std::string ja, jb, jc;
    for (const auto& s : a.samples) ja += to_json_line(s) + "\n";
    for (const auto& s : b.samples) jb += to_json_line(s) + "\n";
    for (const auto& s : c.samples) jc += to_json_line(s) + "\n";
    EXPECT_EQ(ja, jb);
    EXPECT_NE(ja, jc);
}

TEST(TrainData, LengthsShareAndTasks) {
    NEED_SOURCES();
    const Built& b = default_mix();
    int64_t total = 0, sens = 0, shortest = 1 << 30, longest = 0;
    std::map<std::string, int> per_task;
    for (size_t i = 0; i < b.samples.size(); ++i) {
        const TextSample& s = b.samples[i];
        const int64_t n = sample_tokens(tok(), s);
        EXPECT_EQ(n, b.tokens[i]);
        EXPECT_LE(n, 1024) << s.task;
        EXPECT_EQ(s.category, task_category(s.task));
        EXPECT_FALSE(s.answer.empty()) << s.task;
        total += n;
        sens += s.category == "sensitive" ? n : 0;
        shortest = std::min(shortest, n);
        longest = std::max(longest, n);
        per_task[s.task]++;
    }
    EXPECT_EQ(total, b.stats.tokens);
    EXPECT_GE(total, 60000);
    EXPECT_LT(total, 60000 + 1024);
    EXPECT_NEAR(double(sens) / double(total), 0.5, 0.05);
    EXPECT_LT(shortest, 1024 / 2) << "lengths should vary";
    EXPECT_GT(longest, 1024 * 3 / 4);
    for (const auto* list : {&sensitive_train_tasks(), &robust_train_tasks()})
        for (const auto& t : *list) EXPECT_GE(per_task[t], 2) << t;

    DataBuildOptions o = small_options(3, 20000);
    o.sensitive_share = 0.2;
    const Built c = build(o);
    EXPECT_NEAR(double(c.stats.sensitive_tokens) / double(c.stats.tokens), 0.2, 0.06);
}

TEST(TrainData, AnswersFollowFromThePrompt) {
    NEED_SOURCES();
    for (const TextSample& s : default_mix().samples) {
        SCOPED_TRACE(s.task + ": " + s.answer);
        if (s.task == "kv-single" || s.task == "haystack-qa" || s.task == "prose-lead") {
            EXPECT_NE(s.prompt.find(s.answer), std::string::npos);
        } else if (s.task == "kv-multi") {
            std::istringstream in(s.answer);
            std::string item;
            int n = 0;
            while (std::getline(in, item, ';')) {
                const std::string place = item.substr(item.find_first_not_of(' '), item.find(':') - item.find_first_not_of(' '));
                const std::string code = item.substr(item.find(": ") + 2);
                EXPECT_NE(s.prompt.find(place), std::string::npos);
                EXPECT_NE(s.prompt.find(code), std::string::npos);
                ++n;
            }
            EXPECT_GE(n, 2);
        } else if (s.task == "var-chain") {
            // follow the ':=' copies back from the register asked for
            std::map<std::string, std::string> assign;
            std::istringstream in(s.prompt);
            std::string line;
            while (std::getline(in, line)) {
                const size_t p = line.find(" := ");
                if (p != std::string::npos && line.find(' ') == p) assign[line.substr(0, p)] = line.substr(p + 4);
            }
            const size_t q = s.prompt.rfind("does ") + 5;
            std::string v = s.prompt.substr(q, s.prompt.find(" hold?") - q);
            for (int hops = 0; hops < 10 && v.rfind("0x", 0) != 0; ++hops) v = assign[v];
            EXPECT_EQ(v, s.answer);
        } else if (s.task == "prose-continue" || s.task == "code-complete") {
            EXPECT_EQ(s.answer.find('\n'), std::string::npos);
        }
    }
}

// The raw tasks are plain text continued by the answer: prompt + answer is a piece of the training
// sources as they are (prose paragraphs joined by blank lines, the joined code), with no
// instruction, and the answer is one sentence or one non-blank line.
TEST(TrainData, RawTasksContinueTheSourceText) {
    NEED_SOURCES();
    const TrainSources& src = sources();
    std::string prose;
    for (const auto& p : src.paragraphs) prose += (prose.empty() ? "" : "\n\n") + p;
    int raw[2] = {0, 0};
    for (const TextSample& s : default_mix().samples) {
        SCOPED_TRACE(s.task + ": " + s.answer);
        const bool is_raw = s.task == "prose-raw" || s.task == "code-raw";
        EXPECT_EQ(s.format, is_raw ? SampleFormat::Raw : SampleFormat::Chat);
        if (!is_raw) continue;
        EXPECT_EQ(s.category, "robust");
        const std::string& text = s.task == "prose-raw" ? prose : src.code;
        EXPECT_NE(text.find(s.prompt + s.answer), std::string::npos) << "not a piece of the source text";
        const size_t b = s.answer.find_first_not_of(" \t\r\n");
        ASSERT_NE(b, std::string::npos);
        EXPECT_GT(b, 0u) << "the answer starts with the whitespace that follows the prompt";
        EXPECT_EQ(s.answer.find('\n', b), std::string::npos) << "one line";
        ASSERT_FALSE(s.prompt.empty());
        EXPECT_EQ(std::string(" \t\r\n").find(s.prompt.back()), std::string::npos) << "the prompt ends on text";
        if (s.task == "prose-raw") {
            const char end = s.prompt.back();
            EXPECT_TRUE(end == '.' || end == '!' || end == '?') << "cut after a sentence";
        }
        ++raw[s.task == "prose-raw" ? 0 : 1];
    }
    EXPECT_GE(raw[0], 2);
    EXPECT_GE(raw[1], 2);
}

// A raw sample renders as eval's raw path feeds text: the prompt's and the answer's tokens, no
// chat template, no end-of-turn id; sample_tokens counts the same.
TEST(TrainData, RawRenderingHasNoTemplate) {
    TextSample raw{"The quick brown fox jumps over the lazy dog.", " It was not amused.", "prose-raw", "robust", SampleFormat::Raw};
    std::vector<int32_t> p, a;
    render_sample(tok(), raw, p, a);
    EXPECT_EQ(p, tok().encode(raw.prompt, false));
    EXPECT_EQ(a, tok().encode(raw.answer, false));
    for (const std::vector<int32_t>* v : {&p, &a})
        for (int32_t id : *v) {
            EXPECT_FALSE(tok().is_special(id)) << tok().token_text(id);
            EXPECT_EQ(std::count(tok().stop_ids().begin(), tok().stop_ids().end(), id), 0) << tok().token_text(id);
        }
    EXPECT_EQ(int64_t(p.size() + a.size()), sample_tokens(tok(), raw));

    // the same text as a chat sample: template around the prompt, end of turn after the answer
    TextSample chat = raw;
    chat.format = SampleFormat::Chat;
    std::vector<int32_t> cp, ca;
    render_sample(tok(), chat, cp, ca);
    ASSERT_NE(tok().chat_template(), ChatTemplate::None);
    EXPECT_GT(cp.size(), p.size());
    ASSERT_FALSE(tok().stop_ids().empty());
    EXPECT_EQ(ca.back(), tok().stop_ids()[0]);
    EXPECT_EQ(ca.size(), a.size() + 1);
    EXPECT_EQ(int64_t(cp.size() + ca.size()), sample_tokens(tok(), chat));
}

// "format" is written for raw samples only (chat lines keep their bytes) and read back.
TEST(TrainData, FormatRoundTrips) {
    const TextSample chat{"Say hi.", "hi", "kv-single", "sensitive"};
    const TextSample raw{"int main(void) {", "\n    return 0;", "code-raw", "robust", SampleFormat::Raw};
    EXPECT_EQ(to_json_line(chat), R"({"prompt":"Say hi.","answer":"hi","task":"kv-single","category":"sensitive"})");
    EXPECT_EQ(to_json_line(raw),
              R"({"prompt":"int main(void) {","answer":"\n    return 0;","task":"code-raw","category":"robust","format":"raw"})");
    for (const TextSample& in : {chat, raw}) {
        TextSample out;
        ASSERT_EQ(parse_text_sample(to_json_line(in), out), "");
        EXPECT_EQ(out.prompt, in.prompt);
        EXPECT_EQ(out.answer, in.answer);
        EXPECT_EQ(out.task, in.task);
        EXPECT_EQ(out.category, in.category);
        EXPECT_EQ(out.format, in.format);
    }
    TextSample out;
    out.format = SampleFormat::Raw;
    ASSERT_EQ(parse_text_sample(R"({"prompt":"p","answer":"a","task":"t","category":"robust","format":"chat"})", out), "");
    EXPECT_EQ(out.format, SampleFormat::Chat);
    EXPECT_NE(parse_text_sample(R"({"prompt":"p","answer":"a","task":"t","category":"robust","format":"RAW"})", out), "");
}

TEST(TrainData, DisjointFromEval) {
    NEED_SOURCES();
    // no eval source file among the training ones
    const std::vector<std::string> eval_files = eval_source_files();
    const std::set<std::string> eval_set(eval_files.begin(), eval_files.end());
    const TrainSources& src = sources();
    for (const auto* list : {&src.prose_files, &src.code_files})
        for (const auto& f : *list) {
            EXPECT_EQ(eval_set.count(fs::canonical(f).string()), 0u) << f;
            EXPECT_EQ(f.rfind(eval::kDefaultProseDir, 0), std::string::npos) << f;
        }

    // RULER needle sentences (and template phrases) never appear in a training prompt
    eval::RulerData data;
    eval::Corpus prose;
    if (fs::is_directory(eval::kDefaultProseDir)) {
        prose = eval::load_corpus(eval::kDefaultProseDir, {}, 16u << 20);
        data.essay = eval::corpus_words(prose);
        data.prose = &prose;
    } else {
        data.essay = {"Plain", "words", "for", "a", "haystack."};
    }
    const eval::PromptTokens words = [](const eval::Sample& s) {
        std::istringstream in(s.input);
        std::string w;
        int64_t n = 20;
        while (in >> w) ++n;
        return n;
    };
    std::set<std::string> needles;
    for (const auto& task : eval::ruler_tasks())
        for (int64_t len : {512, 1024, 2048})
            for (int idx = 0; idx < 2; ++idx) {
                const eval::Sample e = eval::make_ruler_sample(task, len, idx, 0, data, words);
                for (const auto& [b, end] : e.needles) {  // the whole sentence around the needle value
                    size_t from = e.input.rfind('\n', b);
                    const size_t dot = e.input.rfind(". ", b);
                    from = std::max(from == std::string::npos ? 0 : from + 1, dot == std::string::npos ? 0 : dot + 2);
                    const size_t to = e.input.find('.', end);
                    needles.insert(e.input.substr(from, to - from + 1));
                }
                std::istringstream in(e.input);
                for (std::string line; std::getline(in, line);)
                    if (line.rfind("VAR ", 0) == 0) needles.insert(line);
            }
    ASSERT_GT(needles.size(), 40u);
    const Built& b = default_mix();
    for (const TextSample& s : b.samples) {
        for (const auto& n : needles) ASSERT_EQ(s.prompt.find(n), std::string::npos) << s.task << " holds eval's needle: " << n;
        for (const char* phrase : {"special magic", "Memorize and track the chain", "Please complete the code given below",
                                   "most common words", "coded text"})
            EXPECT_EQ(s.prompt.find(phrase), std::string::npos) << s.task << ": " << phrase;
    }
}

TEST(TrainData, TooLittleTextIsAnError) {
    const std::string d = temp_dir() + "/tiny-prose";
    fs::create_directories(d);
    write_file("tiny-prose/README", "Only one short paragraph lives here. It is far too little for a haystack.\n");
    DataBuildOptions o = small_options(0);
    o.prose_dir = d;
    try {
        load_train_sources(o);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(d), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("prose"), std::string::npos) << e.what();
    }
    o.prose_dir = temp_dir() + "/missing";
    EXPECT_THROW(load_train_sources(o), Error);
}

TEST(TrainData, ReaderNamesTheBadLine) {
    const std::string good = to_json_line({"What is 2+2?", "4", "kv-single", "sensitive"});
    const std::string good_raw = to_json_line({"Two and two make", " four.", "prose-raw", "robust", SampleFormat::Raw});
    std::string longp;
    for (int i = 0; i < 400; ++i) longp += "word ";
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"{\"prompt\": \"x\", ", "not valid JSON"},
        {"{\"prompt\": \"x\", \"task\": \"t\", \"category\": \"robust\"}", "missing field 'answer'"},
        {"{\"prompt\": \"x\", \"answer\": 3, \"task\": \"t\", \"category\": \"robust\"}", "field 'answer' is not a string"},
        {"{\"prompt\": \"x\", \"answer\": \"y\", \"task\": \"t\", \"category\": \"other\"}", "unknown category 'other'"},
        {to_json_line({longp, "y", "prose-lead", "robust"}), "more than --max-seq 256"},
        {to_json_line({longp, "y", "prose-raw", "robust", SampleFormat::Raw}), "more than --max-seq 256"},
        {"{\"prompt\": \"x\", \"answer\": \"y\", \"task\": \"t\", \"category\": \"robust\", \"format\": \"markdown\"}",
         "unknown format 'markdown'"},
        {"{\"prompt\": \"x\", \"answer\": \"y\", \"task\": \"t\", \"category\": \"robust\", \"format\": 1}",
         "field 'format' is not a string"},
        {"[1, 2]", "not a JSON object"}};
    std::string all = good + "\n\n";
    for (size_t i = 0; i < bad.size(); ++i) {
        const std::string p = write_file("bad" + std::to_string(i) + ".jsonl", good + "\n" + bad[i].first + "\n" + good + "\n");
        try {
            read_training_data(p, 256, tok(), false, nullptr);
            ADD_FAILURE() << "no error for " << bad[i].second;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(p + ":2: "), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(bad[i].second), std::string::npos) << e.what();
        }
        all += bad[i].first + "\n";
    }
    all += good + "\n" + good_raw + "\n";
    int64_t skipped = -1;
    const auto v = read_training_data(write_file("mixed.jsonl", all), 256, tok(), true, &skipped);
    ASSERT_EQ(v.size(), 3u);
    EXPECT_EQ(skipped, int64_t(bad.size()));
    EXPECT_EQ(v[0].answer, "4");
    EXPECT_EQ(v[0].format, SampleFormat::Chat);
    EXPECT_EQ(v[2].format, SampleFormat::Raw);
    EXPECT_THROW(read_training_data(temp_dir() + "/none.jsonl", 256, tok(), true, nullptr), Error);
}

TEST(TrainData, CliBuildAndCheck) {
    NEED_SOURCES();
    const std::string bin = std::string(ELASTIC_BINARY_DIR) + "/bin/elastic ";
    const std::string out = temp_dir() + "/mix.jsonl", log = temp_dir() + "/cli.log";
    auto run = [&](const std::string& args) {
        const int st = std::system((bin + args + " >" + log + " 2>&1").c_str());
        std::ifstream f(log);
        std::stringstream ss;
        ss << f.rdbuf();
        return std::make_pair(WIFEXITED(st) ? WEXITSTATUS(st) : -1, ss.str());
    };
    const std::string args = "data build --out " + out + " --tokens 8000 --max-seq 512 --seed 3 --max-source-mb 3 -m " + kTokenizer;
    auto r = run(args);
    ASSERT_EQ(r.first, 0) << r.second;
    EXPECT_NE(r.second.find("samples"), std::string::npos) << r.second;
    EXPECT_NE(r.second.find("kv-single"), std::string::npos) << r.second;
    r = run(args);  // exists: refused without --force
    EXPECT_EQ(r.first, 1);
    EXPECT_NE(r.second.find("--force"), std::string::npos) << r.second;
    r = run(args + " --force");
    EXPECT_EQ(r.first, 0) << r.second;
    for (const auto& e : fs::directory_iterator(temp_dir())) EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos);
    r = run("data check " + out + " --max-seq 512 -m " + kTokenizer);
    EXPECT_EQ(r.first, 0) << r.second;
    EXPECT_NE(r.second.find("0 skipped"), std::string::npos) << r.second;
    r = run("data check " + out + " --max-seq 300 -m " + kTokenizer);  // some samples are longer than 300
    EXPECT_EQ(r.first, 1);
    EXPECT_NE(r.second.find(out + ":"), std::string::npos) << r.second;
    r = run("data build --out " + temp_dir() + "/x.jsonl --tokens 100 --max-seq 512 --prose-dir " + temp_dir() + "/nowhere -m " + kTokenizer);
    EXPECT_EQ(r.first, 1);
    EXPECT_FALSE(fs::exists(temp_dir() + "/x.jsonl"));
}
