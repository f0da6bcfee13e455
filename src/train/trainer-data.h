// The training data of `elastic train-router`: JSON lines {"prompt", "answer", "task", "category"}
// with category "sensitive" or "robust" and an optional "format" ("chat" or "raw") (the format
// `elastic data build` writes). A minimal reader:
// every problem is reported with the file and line.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/data.h"
#include "train/train-step.h"

namespace elastic::train {

// Turns a sample (prompt, answer, format) into token ids (train::render_sample with the model's
// tokenizer: chat template, answer, end-of-turn id for chat samples, plain text for raw ones; tests
// use a byte-level stand-in).
using EncodeFn = std::function<void(const TextSample& s, std::vector<int32_t>& prompt_ids, std::vector<int32_t>& answer_ids)>;

struct DataReport {
    int64_t lines = 0;    // non-empty lines
    int64_t skipped = 0;  // bad lines skipped (skip_bad)
    std::vector<std::string> problems;  // one message per skipped line
};

// Samples from the text of a JSONL file (`name` for messages). Tokens = the encoded prompt, then
// the encoded answer; targets are the answer tokens. A bad line (bad JSON, missing or non-string
// field, unknown category or format, empty prompt or answer, more than max_seq tokens) is an Error
// naming `name:line`, or with skip_bad it is skipped and counted in report.
std::vector<TrainSample> parse_train_data(const std::string& text, const std::string& name, const EncodeFn& encode,
                                          int64_t max_seq, bool skip_bad, DataReport* report = nullptr);
std::vector<TrainSample> read_train_data(const std::string& path, const EncodeFn& encode, int64_t max_seq,
                                         bool skip_bad, DataReport* report = nullptr);

// FNV-1a 64 of a file's bytes, as 16 hex digits (recorded in the trained router's metadata).
std::string file_hash(const std::string& path);

}  // namespace elastic::train
