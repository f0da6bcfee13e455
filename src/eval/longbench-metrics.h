// LongBench's official metrics (THUDM/LongBench metrics.py and eval.py), written again in C++ so
// that scores are comparable with published tables. Faithful to the Python, quirks included:
//  - classification_score: its fallback to difflib similarity never runs (`em_match_list != 0` is
//    always true in Python), and matches are removed from the list while iterating over it;
//  - rouge_score: the `rouge` package (pltrdy) ROUGE-L summary level: sentences split on '.',
//    words on ' ', LCS words collected as a *set*; any error (an empty side) scores 0;
//  - code_sim_score: fuzzywuzzy fuzz.ratio with python-Levenshtein (ratio = 2·LCS / (|a| + |b|) on
//    code points, rounded half to even, 100 when equal, 0 when one side is empty).
// Deliberate difference: the Chinese variants (qa_f1_zh, rouge_zh) use jieba word segmentation;
// we segment by character (runs of ASCII letters/digits stay one token), since jieba's dictionary is
// not available offline. Python's Unicode-aware lower() and \b are approximated for non-ASCII text
// (non-ASCII bytes count as word characters and are not case-folded).
#pragma once
#include <string>
#include <vector>

namespace elastic::eval {

std::string normalize_answer(const std::string& s);
std::string normalize_zh_answer(const std::string& s);

double qa_f1_score(const std::string& prediction, const std::string& ground_truth);
double qa_f1_zh_score(const std::string& prediction, const std::string& ground_truth);
double rouge_score(const std::string& prediction, const std::string& ground_truth);
double rouge_zh_score(const std::string& prediction, const std::string& ground_truth);
double classification_score(const std::string& prediction, const std::string& ground_truth,
                            const std::vector<std::string>& all_classes);
double retrieval_score(const std::string& prediction, const std::string& ground_truth);
double retrieval_zh_score(const std::string& prediction, const std::string& ground_truth);
double count_score(const std::string& prediction, const std::string& ground_truth);
double code_sim_score(const std::string& prediction, const std::string& ground_truth);
// fuzzywuzzy fuzz.ratio (0..100) as used by code_sim_score.
int fuzz_ratio(const std::string& a, const std::string& b);

// eval.py scorer for one prediction: the dataset's metric, max over the ground truths, after
// keeping only the first line for trec, triviaqa, samsum and lsht. In [0, 1]. Throws Error for a
// dataset LongBench does not have.
double longbench_score(const std::string& dataset, const std::string& prediction,
                       const std::vector<std::string>& answers, const std::vector<std::string>& all_classes);
bool is_longbench_dataset(const std::string& dataset);

}  // namespace elastic::eval
