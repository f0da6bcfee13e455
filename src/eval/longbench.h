// LongBench / LongBench-E runner data side (THUDM/LongBench pred.py, config/*.json): reads the
// dataset JSONL files a user has (we ship none), builds each dataset's official prompt, truncates
// it in the middle to a token budget as pred.py does, and knows which datasets skip the chat template.
#pragma once
#include <istream>
#include <string>
#include <vector>

#include "eval/sample.h"

namespace elastic {
class Tokenizer;
}

namespace elastic::eval {

// The 21 LongBench datasets in pred.py's order.
const std::vector<std::string>& longbench_datasets();
const std::string& longbench_prompt(const std::string& dataset);  // dataset2prompt.json
int longbench_maxlen(const std::string& dataset);                 // dataset2maxlen.json (tokens to generate)
bool longbench_uses_chat(const std::string& dataset);             // pred.py: not for trec, triviaqa, samsum, lsht, lcc, repobench-p
std::string longbench_family(const std::string& dataset);         // single-doc QA, multi-doc QA, summarization, ...

struct LongBenchFile {
    std::string dataset;  // e.g. "hotpotqa"
    std::string path;
    bool e = false;  // LongBench-E ({dataset}_e.jsonl)
};
// The {dataset}.jsonl / {dataset}_e.jsonl files in dir, restricted to `only` when it is not empty.
// Throws Error when a requested dataset has no file or the directory holds none.
std::vector<LongBenchFile> find_longbench_files(const std::string& dir, const std::vector<std::string>& only);

// Samples of one file: input = the filled prompt (untruncated), outputs = answers, all_classes,
// words = the "length" field. Throws Error naming file:line for malformed JSON or missing fields.
std::vector<Sample> load_longbench(const LongBenchFile& f, int limit = -1);
// The same from a stream (f.path names it in errors, f.dataset picks the prompt).
std::vector<Sample> load_longbench(std::istream& in, const LongBenchFile& f, int limit = -1);

// pred.py: prompt.format(context=..., input=...).
std::string fill_prompt(const std::string& tmpl, const std::string& context, const std::string& input);

// pred.py: when the prompt has more than max_length tokens, keep the first and last max_length/2
// tokens (decoded without special tokens).
std::string truncate_middle(const Tokenizer& tok, const std::string& prompt, int64_t max_length);

}  // namespace elastic::eval
