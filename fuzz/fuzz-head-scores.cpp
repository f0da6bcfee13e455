// libFuzzer target for static:FILE head scores (parse_head_scores: JSON or whitespace text).
#include "attention/elastic.h"
#include "fuzz-common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const auto s = elastic::parse_head_scores(elastic::fuzz::as_string(data, size), "fuzz");
        if (s.empty()) __builtin_trap();  // "no head scores" is an error, not an empty result
    } catch (const elastic::Error&) {
    }
    return 0;
}
