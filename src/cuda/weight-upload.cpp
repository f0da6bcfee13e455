// Host side of the weight cache: dequantise rows to fp32 with OpenMP into pinned staging memory,
// copy to the device and round to the device type there (bf16 / fp16: the same round-to-nearest-even
// as the activations; fp32: kept as is).
// Two staging buffers so that the dequantisation of one chunk overlaps the copy of the previous.
#include "cuda/weight-upload.h"

#include <algorithm>
#include <cstring>

#include "cuda/cuda-check.h"
#include "cuda/ops.h"
#include "formats/quants.h"

namespace elastic::cuda {

namespace {
constexpr int64_t kChunkElems = int64_t(8) << 20;  // 32 MiB of fp32 per staging buffer
}

void* upload_weight(const Weight& W, WeightType t, cudaStream_t s) {
    const int64_t rows = W.rows, cols = W.cols;
    auto* dev = device_alloc<uint8_t>(size_t(rows * cols) * weight_elem_bytes(t), "a weight matrix");
    // Stored already in the device type (a bf16 checkpoint on the bf16 path): one plain copy.
    const bool same = (W.type == DType::BF16 && t == WeightType::BF16) || (W.type == DType::F16 && t == WeightType::F16) ||
                      (W.type == DType::F32 && t == WeightType::F32);
    if (same && W.row_bytes == size_t(cols) * weight_elem_bytes(t)) {
        CUDA_CHECK(cudaMemcpyAsync(dev, W.data, W.nbytes(), cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        return dev;
    }
    const int64_t chunk_rows = std::max<int64_t>(1, std::min(rows, kChunkElems / std::max<int64_t>(cols, 1)));
    float* host[2] = {nullptr, nullptr};
    cudaEvent_t done[2];
    for (int b = 0; b < 2; ++b) {
        CUDA_CHECK(cudaMallocHost(&host[b], size_t(chunk_rows * cols) * sizeof(float)));
        CUDA_CHECK(cudaEventCreateWithFlags(&done[b], cudaEventDisableTiming));
    }
    float* staging = device_alloc<float>(size_t(chunk_rows * cols), "weight staging");  // one: the stream orders its reuse
    int b = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows, b ^= 1) {
        const int64_t n = std::min(chunk_rows, rows - r0);
        CUDA_CHECK(cudaEventSynchronize(done[b]));  // the copy out of host[b] two chunks ago has finished
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n; ++r) dequantize(W.type, W.row(r0 + r), host[b] + r * cols, cols);
        CUDA_CHECK(cudaMemcpyAsync(staging, host[b], size_t(n * cols) * sizeof(float), cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaEventRecord(done[b], s));
        f32_to_weight_type(staging, dev + size_t(r0 * cols) * weight_elem_bytes(t), t, n * cols, s);
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
    CUDA_CHECK(cudaFree(staging));
    for (int k = 0; k < 2; ++k) {
        CUDA_CHECK(cudaFreeHost(host[k]));
        CUDA_CHECK(cudaEventDestroy(done[k]));
    }
    return dev;
}

uint64_t weight_fingerprint(const Weight& W) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    auto mix = [&h](uint64_t v) {
        for (int i = 0; i < 8; ++i, v >>= 8) h = (h ^ (v & 0xff)) * 1099511628211ull;
    };
    mix(uint64_t(W.type));
    mix(uint64_t(W.rows));
    mix(uint64_t(W.cols));
    const size_t n = W.nbytes();
    constexpr int kSamples = 16;
    for (int i = 0; i < kSamples && n >= 8; ++i) {
        uint64_t v;
        std::memcpy(&v, W.data + (n - 8) * size_t(i) / (kSamples - 1), 8);
        mix(v);
    }
    return h;
}

}  // namespace elastic::cuda
