// libFuzzer target for the GGUF reader: any input must parse or raise elastic::Error, and every
// tensor the parser accepts must be readable in full (ASan checks the bytes exist) and its first
// block dequantisable. Build: cmake --preset fuzz && cmake --build build-fuzz -j2;
// run: scripts/run-fuzzers.sh 60 (seeds in fuzz/corpus-gguf/, made by fuzz/make-gguf-corpus.cpp).
#include <cstddef>
#include <cstdint>

#include "formats/gguf.h"
#include "formats/quants.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto g = elastic::GGUFFile::parse(data, size, "fuzz.gguf");
        for (const auto& kv : g->metadata()) (void)kv.second.to_string();
        volatile uint8_t sink = 0;
        for (const elastic::TensorRef& t : g->tensors()) {
            uint8_t x = 0;
            for (size_t i = 0; i < t.nbytes; ++i) x ^= t.data[i];
            sink = sink ^ x;
            int64_t bs = elastic::dtype_block_size(t.type);
            if (t.numel() >= bs && t.nbytes >= elastic::dtype_block_bytes(t.type)) {
                float out[256];
                elastic::dequantize(t.type, t.data, out, bs);
                float xs[256] = {};
                (void)elastic::dot_row(t.type, t.data, xs, bs);
            }
        }
    } catch (const elastic::Error&) {
    }
    return 0;
}
