// LongBench metrics against values worked out by hand from metrics.py (and the `rouge` and
// fuzzywuzzy packages it calls), including its quirks; prompts and the JSONL reader.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "eval/longbench-metrics.h"
#include "eval/longbench.h"

using namespace elastic::eval;

TEST(EvalLongBenchMetrics, NormalizeAnswer) {
    EXPECT_EQ(normalize_answer("The, quick-brown  FOX!"), "quickbrown fox");
    EXPECT_EQ(normalize_answer("an apple a day theatre"), "apple day theatre");  // articles as whole words only
    EXPECT_EQ(normalize_answer("  A  "), "");
    EXPECT_EQ(normalize_zh_answer("北京， 大学。Hi!"), "北京大学hi");
}

TEST(EvalLongBenchMetrics, QaF1) {
    EXPECT_NEAR(qa_f1_score("The Cat sat.", "a cat sat on mat"), 2.0 / 3.0, 1e-12);  // p 1, r 1/2
    EXPECT_DOUBLE_EQ(qa_f1_score("Paris", "paris"), 1.0);
    EXPECT_DOUBLE_EQ(qa_f1_score("", "paris"), 0.0);
    EXPECT_DOUBLE_EQ(qa_f1_score("the", "a"), 0.0);  // both normalise to nothing
    EXPECT_NEAR(qa_f1_score("cat cat dog", "cat dog dog"), 2.0 / 3.0, 1e-12);  // Counter intersection: 1 cat + 1 dog
    EXPECT_NEAR(qa_f1_zh_score("北京大学", "北京"), 2.0 / 3.0, 1e-12);
    EXPECT_DOUBLE_EQ(qa_f1_zh_score("。", "北京"), 0.0);
}

TEST(EvalLongBenchMetrics, RougeL) {
    // LCS words as a set: {the, cat, on, mat}; 5 distinct words on each side -> p = r = 0.8
    EXPECT_NEAR(rouge_score("the cat sat on the mat", "the cat is on the mat"), 2 * 0.64 / (1.6 + 1e-8), 1e-12);
    EXPECT_DOUBLE_EQ(rouge_score("", "the cat"), 0.0);     // the package raises on an empty side: 0
    EXPECT_DOUBLE_EQ(rouge_score("...", "the cat"), 0.0);  // only periods: no sentence
    EXPECT_NEAR(rouge_score("a b. c d", "a b c d"), 2 * 1.0 / (2.0 + 1e-8), 1e-12);  // union over sentences
    EXPECT_NEAR(rouge_score("x y", "a b"), 0.0, 1e-12);
    EXPECT_NEAR(rouge_zh_score("北京大学", "北京大学"), 1.0, 1e-7);
}

TEST(EvalLongBenchMetrics, ClassificationKeepsTheOfficialQuirks) {
    const std::vector<std::string> cls = {"Human", "Location", "Entity"};
    EXPECT_DOUBLE_EQ(classification_score("Human", "Human", cls), 1.0);
    EXPECT_DOUBLE_EQ(classification_score("Human or Location", "Human", cls), 0.5);
    EXPECT_DOUBLE_EQ(classification_score("nothing", "Human", cls), 0.0);  // the difflib fallback never runs
    // Removing while iterating skips the item after a removed one: "ab" survives.
    EXPECT_DOUBLE_EQ(classification_score("abc", "abc", {"a", "ab", "abc"}), 0.5);
    EXPECT_DOUBLE_EQ(longbench_score("trec", "\nHuman\nLocation", {"Human"}, cls), 1.0);  // first line only
}

TEST(EvalLongBenchMetrics, RetrievalAndCount) {
    EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 12 and Paragraph 3", "Paragraph 12"), 0.5);
    EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 012", "Paragraph 12"), 0.0);  // string comparison
    EXPECT_DOUBLE_EQ(retrieval_score("no digits", "Paragraph 12"), 0.0);
    EXPECT_DOUBLE_EQ(retrieval_zh_score("答案是段落5", "段落5"), 1.0);
    EXPECT_DOUBLE_EQ(count_score("There are 5 paragraphs, not 6", "5"), 0.5);
    EXPECT_DOUBLE_EQ(count_score("none", "5"), 0.0);
}

TEST(EvalLongBenchMetrics, CodeSimilarity) {
    EXPECT_EQ(fuzz_ratio("abcd", "abce"), 75);
    EXPECT_EQ(fuzz_ratio("ab", "ac"), 50);
    EXPECT_EQ(fuzz_ratio("abbbbbbb", "accccccc"), 12);  // 12.5 rounds half to even, as Python's round
    EXPECT_EQ(fuzz_ratio("", ""), 100);
    EXPECT_EQ(fuzz_ratio("", "x"), 0);
    EXPECT_EQ(fuzz_ratio("é", "e"), 0);  // code points, not bytes
    EXPECT_DOUBLE_EQ(code_sim_score("\n// comment\n    return x;\nfoo", "    return x;"), 1.0);
    EXPECT_DOUBLE_EQ(code_sim_score("# c\n// d\n", "x = 1"), 0.0);  // no usable line: compares ""
    EXPECT_DOUBLE_EQ(longbench_score("lcc", "x = 2", {"x = 1", "x = 2"}, {}), 1.0);  // max over answers
    EXPECT_THROW(longbench_score("nope", "", {"a"}, {}), elastic::Error);
}

TEST(EvalLongBench, PromptsAndFiles) {
    EXPECT_EQ(longbench_datasets().size(), 21u);
    EXPECT_EQ(longbench_maxlen("gov_report"), 512);
    EXPECT_EQ(longbench_maxlen("hotpotqa"), 32);
    EXPECT_FALSE(longbench_uses_chat("lcc"));
    EXPECT_TRUE(longbench_uses_chat("hotpotqa"));
    EXPECT_EQ(fill_prompt("Please complete the code given below. \n{context}{input}Next line of code:\n", "int a;\n", "int b;\n"),
              "Please complete the code given below. \nint a;\nint b;\nNext line of code:\n");
    EXPECT_EQ(fill_prompt("{context} {input}", "{input}", "x"), "{input} x");  // values are not re-expanded

    const std::string dir = std::filesystem::temp_directory_path() / ("elastic-lb-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/hotpotqa.jsonl") << R"({"input": "Who?", "context": "Passage 1: Ann wrote it.", "answers": ["Ann"], "length": 5, "all_classes": null})"
                                           << "\n\n"
                                           << R"({"input": "Where?", "context": "In Rome.", "answers": ["Rome", "rome"], "length": 3})" << "\n";
    std::ofstream(dir + "/trec_e.jsonl") << R"({"input": "What is X?", "context": "Q: A? Type: Human", "answers": ["Human"], "length": 5000, "all_classes": ["Human", "Entity"]})"
                                         << "\n";
    const auto files = find_longbench_files(dir, {});
    ASSERT_EQ(files.size(), 2u);
    EXPECT_EQ(files[0].dataset, "hotpotqa");
    EXPECT_FALSE(files[0].e);
    EXPECT_TRUE(files[1].e);
    const auto hs = load_longbench(files[0]);
    ASSERT_EQ(hs.size(), 2u);
    EXPECT_NE(hs[0].input.find("The following are given passages.\nPassage 1: Ann wrote it.\n\nAnswer the question"), std::string::npos);
    EXPECT_EQ(hs[1].outputs.size(), 2u);
    EXPECT_EQ(hs[0].max_new_tokens, 32);
    const auto ts = load_longbench(files[1]);
    ASSERT_EQ(ts.size(), 1u);
    EXPECT_EQ(ts[0].all_classes.size(), 2u);
    EXPECT_EQ(ts[0].words, 5000);
    EXPECT_FALSE(ts[0].chat);
    EXPECT_THROW(find_longbench_files(dir, {"qasper"}), elastic::Error);
    std::ofstream(dir + "/musique.jsonl") << "{\"input\": 3}\n";
    try {
        load_longbench({"musique", dir + "/musique.jsonl", false});
        FAIL() << "malformed line accepted";
    } catch (const elastic::Error& e) {
        EXPECT_NE(std::string(e.what()).find("musique.jsonl:1"), std::string::npos) << e.what();
    }
    std::filesystem::remove_all(dir);
}
