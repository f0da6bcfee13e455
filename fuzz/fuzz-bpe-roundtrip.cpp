// libFuzzer target for the BPE encoder on arbitrary bytes with a real tokenizer (SmolLM2's by
// default, see fuzz-common.h): every id in range, and decode(encode(x)) == x for valid UTF-8 x
// whose every byte has its byte-level token (special tokens not parsed: the text is data).
#include "fuzz-common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const elastic::Tokenizer& t = elastic::fuzz::real_tokenizer();
    const std::string x = elastic::fuzz::as_string(data, size);
    try {
        const std::vector<int32_t> ids = t.encode(x, /*parse_special=*/false);
        for (int32_t id : ids)
            if (id < 0 || id >= t.vocab_size()) __builtin_trap();
        const std::string y = t.decode(ids);
        if (elastic::utf8_valid(x) && elastic::fuzz::bytes_in_vocab(t, x) && y != x) {
            std::fprintf(stderr, "round trip differs: %zu bytes in, %zu out\n", x.size(), y.size());
            __builtin_trap();
        }
    } catch (const elastic::Error&) {
    }
    return 0;
}
