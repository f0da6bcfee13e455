// The sparsity-robust / sparsity-sensitive pair of measurements on real text:
//  - long-document perplexity: an N-token window of real prose or real source code, scored on its
//    last 512 tokens (local context mostly suffices: streaming heads should lose little);
//  - next-line code completion: N tokens of source code, the model writes the next line, scored by
//    exact match and LongBench's edit similarity (needs identifiers defined far back: sensitive).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/generate.h"
#include "eval/sample.h"

namespace elastic::eval {

const std::vector<std::string>& robust_tasks();  // ppl-prose, ppl-code, code-next-line
constexpr int64_t kPplTail = 512;

// n tokens of `text` from a seeded random line start (wrapping around the end of the text).
std::vector<int32_t> document_window(const Tokenizer& tok, const std::string& text, int64_t n, uint64_t seed);

struct PplResult {
    double mean_nll = 0;  // over the scored tail
    int64_t scored = 0;
    double omega_msr = 0, omega_esr = 0, prefill_seconds = 0;
};
// Mean negative log-likelihood of the last `tail` tokens of ids given everything before them.
PplResult tail_nll(const Target& e, const std::vector<int32_t>& ids, int64_t tail = kPplTail);

// A next-line completion sample with LongBench's lcc prompt, as long as fits `length` tokens
// (with its 64 answer tokens): the context ends at a line end, outputs[0] is the next code line
// (stripped), chosen among lines of at least 8 characters without '#', '//', '/*' or '`'.
Sample make_next_line_sample(const Tokenizer& tok, const std::string& code, int64_t length, int index, uint64_t seed);

// Exact match of the first code line of the prediction (as LongBench picks it) with the answer,
// both stripped of surrounding whitespace.
double next_line_exact(const std::string& prediction, const std::string& answer);
// LongBench code_sim_score on stripped lines, in [0, 1].
double next_line_similarity(const std::string& prediction, const std::string& answer);

}  // namespace elastic::eval
