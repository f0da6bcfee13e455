// A view of one stored tensor inside a mapped file (GGUF or safetensors).
// `shape` is row-major, outermost first (PyTorch order): a Linear weight is [out, in].
// For GGUF this is the reverse of ggml's ne[] order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace elastic {

struct TensorRef {
    std::string name;
    DType type = DType::F32;
    std::vector<int64_t> shape;
    const uint8_t* data = nullptr;  // points into the mapped file; valid while the file object lives
    size_t nbytes = 0;

    int64_t numel() const {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        return n;
    }
    std::string shape_str() const;  // "[576, 49152]"
};

}  // namespace elastic
