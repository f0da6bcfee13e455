// libFuzzer target for LongBench JSONL files (load_longbench on a stream), for a dataset with a
// chat prompt and one with class labels; the first input byte picks which.
#include <sstream>

#include "eval/longbench.h"
#include "fuzz-common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    elastic::eval::LongBenchFile f;
    f.dataset = data[0] % 2 ? "trec" : "hotpotqa";
    f.path = "fuzz.jsonl";
    std::istringstream in(elastic::fuzz::as_string(data + 1, size - 1));
    try {
        const auto samples = elastic::eval::load_longbench(in, f, data[0] % 3 == 0 ? 2 : -1);
        for (const auto& s : samples)
            if (s.task != f.dataset) __builtin_trap();
    } catch (const elastic::Error&) {
    }
    return 0;
}
