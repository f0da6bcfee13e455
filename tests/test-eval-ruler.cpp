// RULER-style generators: deterministic for a seed, as long as fits, answers present in the
// prompt; RULER's string_match_all; the retrieval-score bookkeeping on a hand-made attention pattern.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "core/error.h"
#include "eval/corpus.h"
#include "eval/retrieval-heads.h"
#include "eval/ruler.h"

using namespace elastic::eval;

namespace {

// Stand-in for the model tokenizer: one token per whitespace-separated word, plus a template cost.
int64_t word_tokens(const Sample& s) {
    std::istringstream in(s.input + " " + s.answer_prefix);
    std::string w;
    int64_t n = 20;
    while (in >> w) ++n;
    return n;
}

RulerData test_data() {
    RulerData d;
    static const char* prose =
        "It was a bright cold day in April. The clocks were striking thirteen. Winston walked home quickly. "
        "The hallway smelt of boiled cabbage and old rag mats! At one end of it a coloured poster had been tacked to the wall. "
        "Was it too large for indoor display? It depicted simply an enormous face, more than a metre wide.";
    std::istringstream in(prose);
    std::string w;
    while (in >> w) d.essay.push_back(w);
    return d;
}

size_t count_of(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
    return n;
}

}  // namespace

TEST(EvalRuler, TaskListParsing) {
    EXPECT_EQ(parse_ruler_tasks("all").size(), 11u);
    EXPECT_EQ(parse_ruler_tasks("niah").size(), 8u);
    EXPECT_EQ(parse_ruler_tasks("vt,cwe"), (std::vector<std::string>{"vt", "cwe"}));
    EXPECT_THROW(parse_ruler_tasks("niah_single_9"), elastic::Error);
}

TEST(EvalRuler, DeterministicForASeed) {
    const RulerData d = test_data();
    for (const auto& task : ruler_tasks()) {
        SCOPED_TRACE(task);
        const Sample a = make_ruler_sample(task, 1500, 2, 7, d, word_tokens);
        const Sample b = make_ruler_sample(task, 1500, 2, 7, d, word_tokens);
        const Sample c = make_ruler_sample(task, 1500, 2, 8, d, word_tokens);
        const Sample e = make_ruler_sample(task, 1500, 3, 7, d, word_tokens);
        EXPECT_EQ(a.input, b.input);
        EXPECT_EQ(a.outputs, b.outputs);
        EXPECT_NE(a.input, c.input);
        EXPECT_NE(a.input, e.input);
    }
}

TEST(EvalRuler, FillsTheLengthAndHoldsTheAnswers) {
    const RulerData d = test_data();
    for (const auto& task : ruler_tasks())
        for (int64_t L : {600, 3000}) {
            SCOPED_TRACE(task + " " + std::to_string(L));
            const Sample s = make_ruler_sample(task, L, 0, 1, d, word_tokens);
            const int64_t used = word_tokens(s) + s.max_new_tokens;
            EXPECT_LE(used, L);
            EXPECT_GE(used, L * 9 / 10) << "the haystack should fill the length";
            ASSERT_FALSE(s.outputs.empty());
            for (const auto& o : s.outputs) EXPECT_NE(s.input.find(o), std::string::npos) << o;
            if (task.rfind("niah", 0) == 0) {
                ASSERT_EQ(s.needles.size(), s.outputs.size());
                for (size_t i = 0; i < s.needles.size(); ++i)
                    EXPECT_EQ(s.input.substr(s.needles[i].first, s.needles[i].second - s.needles[i].first), s.outputs[i]);
            }
        }
}

TEST(EvalRuler, TemplatesFollowRuler) {
    const RulerData d = test_data();
    const Sample s = make_ruler_sample("niah_single_1", 800, 0, 0, d, word_tokens);
    EXPECT_EQ(s.input.rfind("A special magic number is hidden within the following text. Make sure to memorize it. "
                            "I will quiz you about the number afterwards.\nThe grass is green.", 0), 0u);
    EXPECT_NE(s.input.find("One of the special magic numbers for "), std::string::npos);
    EXPECT_EQ(s.answer_prefix.rfind(" The special magic number for ", 0), 0u);
    EXPECT_EQ(s.max_new_tokens, 128);
    const Sample mv = make_ruler_sample("niah_multivalue", 800, 0, 0, d, word_tokens);
    EXPECT_EQ(mv.input.rfind("Some special magic numbers are hidden", 0), 0u);
    EXPECT_EQ(mv.outputs.size(), 4u);
    const Sample mq = make_ruler_sample("niah_multiquery", 800, 0, 0, d, word_tokens);
    EXPECT_NE(mq.input.find(", and "), std::string::npos);
    const Sample u = make_ruler_sample("niah_multikey_3", 800, 0, 0, d, word_tokens);
    EXPECT_EQ(u.outputs[0].size(), 36u);  // a uuid
    EXPECT_EQ(u.outputs[0][14], '4');
    const Sample vt = make_ruler_sample("vt", 800, 0, 0, d, word_tokens);
    EXPECT_EQ(vt.outputs.size(), 5u);
    EXPECT_EQ(count_of(vt.input, "VAR " + vt.outputs[4] + " = VAR " + vt.outputs[3]), 1u);
    EXPECT_NE(vt.answer_prefix.find("5 variables are assigned the value"), std::string::npos);
    const Sample cwe = make_ruler_sample("cwe", 3000, 0, 0, d, word_tokens);
    ASSERT_EQ(cwe.outputs.size(), 10u);
    for (const auto& w : cwe.outputs) EXPECT_GE(count_of(cwe.input, ". " + w + " "), 6u) << w;
    const Sample fwe = make_ruler_sample("fwe", 3000, 0, 0, d, word_tokens);
    ASSERT_EQ(fwe.outputs.size(), 3u);
    EXPECT_GT(count_of(fwe.input, " " + fwe.outputs[0] + " "), count_of(fwe.input, " " + fwe.outputs[2] + " "));
    EXPECT_THROW(make_ruler_sample("niah_single_1", 100, 0, 0, d, word_tokens), elastic::Error);
}

TEST(EvalRuler, StringMatchAll) {
    EXPECT_DOUBLE_EQ(string_match_all("The numbers are 1234567 and 7654321.", {"1234567", "7654321"}), 1.0);
    EXPECT_DOUBLE_EQ(string_match_all("the number is 1234567", {"1234567", "1111111", "2222222", "3333333"}), 0.25);
    EXPECT_DOUBLE_EQ(string_match_all("They are: abcde, FGHIJ", {"ABCDE", "fghij"}), 1.0);  // case-insensitive
    EXPECT_DOUBLE_EQ(string_match_all("", {"x"}), 0.0);
}

TEST(EvalRuler, WordPoolIsDistinctAndLargeEnough) {
    const std::vector<std::string> p = word_pool(nullptr, 5000);
    ASSERT_EQ(p.size(), 5000u);
    std::vector<std::string> s = p;
    std::sort(s.begin(), s.end());
    EXPECT_EQ(std::unique(s.begin(), s.end()), s.end());
}

TEST(EvalRetrievalHeads, CreditsHeadsWhoseTopAttentionIsTheCopiedToken) {
    // 1 layer, 2 query heads sharing 1 KV head, d = 2. Prompt ids [5, 7, 9, 7], needle = positions 1..2.
    RetrievalScorer sc(1, 2, 1, 2);
    sc.begin_sample({5, 7, 9, 7}, 1, 3);
    const float k[] = {0, 3, /*pos1*/ 1, 0, /*pos2*/ 4, 0, /*pos3*/ 0, 1};  // [4 keys, 1 kv head, 2]
    const float q[] = {1, 0, /*head 1*/ 0, 1};
    sc.observe(0, q, k, 4);  // head 0 -> pos 2 (token 9), head 1 -> pos 0 (token 5)
    sc.end_step(9);
    sc.observe(0, q, k, 4);
    sc.end_step(9);  // the same position again counts once
    sc.end_sample();
    const auto qh = sc.query_head_scores();
    EXPECT_FLOAT_EQ(qh[0][0], 0.5f);
    EXPECT_FLOAT_EQ(qh[0][1], 0.0f);
    EXPECT_FLOAT_EQ(sc.kv_head_scores(true)[0][0], 0.5f);
    EXPECT_FLOAT_EQ(sc.kv_head_scores(false)[0][0], 0.25f);
    // a second sample where nothing is copied halves the mean
    sc.begin_sample({5, 7, 9, 7}, 1, 3);
    sc.observe(0, q, k, 4);
    sc.end_step(5);  // token 5 is not in the needle
    sc.end_sample();
    EXPECT_FLOAT_EQ(sc.query_head_scores()[0][0], 0.25f);
}

// The shortest lengths a task still fits: the haystack has fewer slots than lines to insert (vt's
// chains, the multi-key needles in a noise haystack). Every line must still be there, and nothing
// reads past the drawn positions (this overflowed before: run it under cpu-sanitize).
TEST(EvalRuler, ShortHaystacksKeepEveryLine) {
    const RulerData d = test_data();
    for (const std::string task : {"vt", "niah_multikey_2", "niah_multivalue", "niah_multiquery"})
        for (int64_t L = 60; L <= 400; L += 20) {
            Sample s;
            try {
                s = make_ruler_sample(task, L, 0, 3, d, word_tokens);
            } catch (const elastic::Error&) {
                continue;  // too short for this task at all: a clear error is fine
            }
            SCOPED_TRACE(task + " " + std::to_string(L));
            for (const auto& o : s.outputs) EXPECT_NE(s.input.find(o), std::string::npos) << o;
            if (task == "vt") {  // each chain: "VAR a = 12345" and hops lines "VAR b = VAR a"
                const size_t per_chain = 2 * s.outputs.size() - 1, n = count_of(s.input, "VAR ");
                EXPECT_GT(n, 0u);
                EXPECT_EQ(n % per_chain, 0u) << n;
            }
        }
}
