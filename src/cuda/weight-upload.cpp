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

void* upload_weight(const Weight& W, DType t, cudaStream_t s) {
    const int64_t rows = W.rows, cols = W.cols;
    auto* dev = device_alloc<uint8_t>(size_t(rows * cols) * elem_bytes(t), "a weight matrix");
    // Stored already in the device type (a bf16 checkpoint on the bf16 path): one plain copy.
    if (W.type == t && W.row_bytes == size_t(cols) * elem_bytes(t)) {
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
        convert(staging, DType::F32, dev + size_t(r0 * cols) * elem_bytes(t), t, n * cols, s);
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
    CUDA_CHECK(cudaFree(staging));
    for (int k = 0; k < 2; ++k) {
        CUDA_CHECK(cudaFreeHost(host[k]));
        CUDA_CHECK(cudaEventDestroy(done[k]));
    }
    return dev;
}

}  // namespace elastic::cuda
