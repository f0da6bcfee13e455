// libFuzzer target for `elastic eval` result files (parse_run_file), then the report over them.
#include "eval/report.h"
#include "eval/results.h"
#include "fuzz-common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const elastic::eval::RunFile f = elastic::eval::parse_run_file(elastic::fuzz::as_string(data, size), "fuzz");
        const elastic::eval::Report r = elastic::eval::build_report({f});
        volatile size_t n = elastic::eval::report_markdown(r).size() + elastic::eval::score_vs_length(r).size();
        (void)n;
    } catch (const elastic::Error&) {
    }
    return 0;
}
