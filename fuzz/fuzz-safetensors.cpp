// libFuzzer target for the safetensors reader: any input must either parse, with every tensor's
// bytes readable inside the input, or raise elastic::Error. Crashes, sanitizer reports, other
// exceptions and huge allocations are bugs.
//   cmake --preset fuzz && cmake --build build-fuzz -j2
//   cp -r fuzz/corpus-safetensors /tmp/corpus && ./build-fuzz/bin/fuzz-safetensors -max_total_time=60 /tmp/corpus
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        std::unique_ptr<elastic::SafetensorsFile> f = elastic::SafetensorsFile::parse(data, size, "fuzz");
        uint64_t sum = 0;
        for (const elastic::TensorRef& t : f->tensors()) {
            for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];  // ASan checks each byte is inside the input
            if (f->find_tensor(t.name) != &t) __builtin_trap();
            if (size_t(t.numel()) * elastic::dtype_block_bytes(t.type) != t.nbytes) __builtin_trap();
        }
        for (const auto& kv : f->metadata()) sum += kv.first.size() + kv.second.size();
        volatile uint64_t sink = sum;
        (void)sink;
    } catch (const elastic::Error&) {
    }
    return 0;
}
