// libFuzzer target for tokenizer.json (Tokenizer::from_json_text): an accepted tokenizer must
// encode and decode a fixed text without crashing, and map every id it returns back to a token.
#include "fuzz-common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const std::unique_ptr<elastic::Tokenizer> t =
            elastic::Tokenizer::from_json_text(elastic::fuzz::as_string(data, size), "fuzz");
        const std::vector<int32_t> ids = t->encode("Hello wörld <|im_start|> 123\n\tend", true);
        for (int32_t id : ids)
            if (id < 0) __builtin_trap();
        volatile size_t n = t->decode(ids).size() + t->token_text(ids.empty() ? 0 : ids[0]).size();
        (void)n;
    } catch (const elastic::Error&) {
    }
    return 0;
}
