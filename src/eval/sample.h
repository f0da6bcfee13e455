// One eval example, whatever produced it (RULER generator, LongBench file, code corpus), and how a
// prompt is measured in model tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace elastic::eval {

struct Sample {
    std::string task;
    int64_t length = 0;  // the target length in tokens (RULER, robust) or 0
    int index = 0;
    std::string input;          // the user message (or the whole prompt when !chat)
    std::string answer_prefix;  // text the model's answer starts with (after the assistant header)
    std::vector<std::string> outputs;  // expected answers
    int max_new_tokens = 0;
    bool chat = true;  // wrap `input` in the model's chat template
    // Byte ranges [begin, end) in `input` of the values the model must copy (NIAH needles).
    std::vector<std::pair<size_t, size_t>> needles;
    std::vector<std::string> all_classes;  // LongBench classification datasets
    int64_t words = 0;                     // LongBench "length" field (LongBench-E buckets)
};

// Tokens of a sample's complete prompt (template, input and answer prefix).
using PromptTokens = std::function<int64_t(const Sample&)>;

}  // namespace elastic::eval
