// libFuzzer target for config.json (parse_hf_config_text): accepted configs must also write back.
#include "formats/hf-config.h"
#include "fuzz-common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const elastic::HFConfig c = elastic::parse_hf_config_text(elastic::fuzz::as_string(data, size), "fuzz");
        volatile size_t n = elastic::write_hf_config(c).size();
        (void)n;
    } catch (const elastic::Error&) {
    }
    return 0;
}
