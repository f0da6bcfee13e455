// RULER-style synthetic tasks (Hsieh et al. 2024, NVIDIA/RULER scripts/data/synthetic), generated
// here from a seed: the same (task, length, index, seed) gives the same sample on every machine.
// Every sample is as long as fits `length` model tokens with its answer (RULER: prompt tokens +
// tokens to generate <= length), found by binary search over the haystack size.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/corpus.h"
#include "eval/sample.h"

namespace elastic::eval {

// niah_single_{1,2,3}, niah_multikey_{1,2,3}, niah_multivalue, niah_multiquery, vt, cwe, fwe.
const std::vector<std::string>& ruler_tasks();
// Expands "all", "niah" (the eight NIAH tasks) and comma lists; throws Error for an unknown name.
std::vector<std::string> parse_ruler_tasks(const std::string& list);

struct RulerData {
    std::vector<std::string> essay;  // words of the essay haystack (real English prose)
    const Corpus* prose = nullptr;   // for the common-words pool
};

Sample make_ruler_sample(const std::string& task, int64_t length, int index, uint64_t seed, const RulerData& data,
                         const PromptTokens& tokens);

// RULER's string_match_all for one sample: the share of expected values found in the prediction
// (case-insensitive substring), in [0, 1].
double string_match_all(const std::string& prediction, const std::vector<std::string>& outputs);

}  // namespace elastic::eval
