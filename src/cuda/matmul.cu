// Dense products and the embedding gather on the device, bf16 storage with fp32 accumulation.
// matmul: x is rounded to bf16 by a small kernel, then one cublasGemmEx (bf16 x bf16 -> fp32,
// CUBLAS_COMPUTE_32F) on the tensor cores; for T == 1 cuBLAS picks its GEMV path itself. bf16
// halves the bytes of decode (memory-bound: every weight byte read once per token) against fp32,
// and is what the GPU's tensor cores take at full rate for prefill.
#include "cuda/cuda-check.h"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void f32_to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

// One block per token.
__global__ void embedding_kernel(const __nv_bfloat16* E, int64_t cols, const int32_t* ids, int32_t id0, float* out) {
    const int64_t t = blockIdx.x;
    const int64_t id = ids ? ids[t] : id0;
    const __nv_bfloat16* row = E + id * cols;
    float* o = out + t * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = __bfloat162float(row[c]);
}

}  // namespace

void f32_to_bf16(const float* x, __nv_bfloat16* y, int64_t n, cudaStream_t s) {
    if (n <= 0) return;
    const int64_t b = (n + kThreads - 1) / kThreads;
    f32_to_bf16_kernel<<<unsigned(b < (1 << 16) ? b : (1 << 16)), kThreads, 0, s>>>(x, y, n);
    CUDA_LAUNCH_CHECK();
}

void embedding_bf16(const __nv_bfloat16* E, int64_t cols, const int32_t* ids, int32_t id0, int64_t T, float* out,
                    cudaStream_t s) {
    if (T <= 0) return;
    embedding_kernel<<<unsigned(T), kThreads, 0, s>>>(E, cols, ids, id0, out);
    CUDA_LAUNCH_CHECK();
}

void matmul_bf16(cublasHandle_t h, const __nv_bfloat16* W, int64_t rows, int64_t cols, const float* x, __nv_bfloat16* xb,
                 float* y, int64_t T, cudaStream_t s) {
    if (T <= 0) return;
    f32_to_bf16(x, xb, T * cols, s);
    // Column-major view: y^T[rows, T] = (W as [cols, rows])^T @ x^T[cols, T].
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(T), int(cols), &alpha, W, CUDA_R_16BF, int(cols),
                              xb, CUDA_R_16BF, int(cols), &beta, y, CUDA_R_32F, int(rows), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

}  // namespace elastic::cuda
