// libFuzzer target for training-data lines (parse_text_sample, the parser of `elastic data check`
// and `train-router`): each input line either parses into a sample with all four fields or gives
// a reason; neither throws.
#include <sstream>

#include "fuzz-common.h"
#include "train/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::istringstream in(elastic::fuzz::as_string(data, size));
    std::string line;
    while (std::getline(in, line)) {
        try {
            elastic::train::TextSample s;
            const std::string why = elastic::train::parse_text_sample(line, s);
            if (why.empty() && (s.category != "sensitive" && s.category != "robust")) __builtin_trap();
        } catch (const elastic::Error&) {
        }
    }
    return 0;
}
