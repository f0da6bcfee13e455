// Dense products and the embedding gather on the device, for the three GPU precisions
// (src/model/backend.h, GpuPrecision): weights stored in bf16, fp16 or fp32, fp32 accumulation.
// matmul: for bf16 / fp16, x is rounded to the weight type by a small kernel, then one
// cublasGemmEx (16-bit x 16-bit -> fp32, CUBLAS_COMPUTE_32F) on the tensor cores; for fp32 one
// cublasGemmEx in plain fp32 (CUBLAS_COMPUTE_32F with the default math mode: no TF32). For T == 1
// cuBLAS picks its GEMV path itself. 16-bit weights halve the bytes of decode (memory-bound: every
// weight byte read once per token) against fp32 and are what the tensor cores take at full rate.
#include "cuda/cuda-check.h"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

template <typename T>
__global__ void f32_to_kernel(const float* x, T* y, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = from_f32<T>(x[i]);
}

// One block per token.
template <typename T>
__global__ void embedding_kernel(const T* E, int64_t cols, const int32_t* ids, int32_t id0, float* out) {
    const int64_t t = blockIdx.x;
    const int64_t id = ids ? ids[t] : id0;
    const T* row = E + id * cols;
    float* o = out + t * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = to_f32(row[c]);
}

unsigned grid_of(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return unsigned(b < (1 << 16) ? b : (1 << 16));
}

}  // namespace

size_t weight_elem_bytes(WeightType t) { return t == WeightType::F32 ? 4 : 2; }

void f32_to_weight_type(const float* x, void* y, WeightType t, int64_t n, cudaStream_t s) {
    if (n <= 0) return;
    switch (t) {
    case WeightType::BF16: f32_to_kernel<<<grid_of(n), kThreads, 0, s>>>(x, static_cast<__nv_bfloat16*>(y), n); break;
    case WeightType::F16: f32_to_kernel<<<grid_of(n), kThreads, 0, s>>>(x, static_cast<__half*>(y), n); break;
    case WeightType::F32:
        CUDA_CHECK(cudaMemcpyAsync(y, x, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, s));
        return;
    }
    CUDA_LAUNCH_CHECK();
}

void f32_to_bf16(const float* x, __nv_bfloat16* y, int64_t n, cudaStream_t s) {
    f32_to_weight_type(x, y, WeightType::BF16, n, s);
}

void embedding(const void* E, WeightType t, int64_t cols, const int32_t* ids, int32_t id0, int64_t T, float* out,
               cudaStream_t s) {
    if (T <= 0) return;
    switch (t) {
    case WeightType::BF16:
        embedding_kernel<<<unsigned(T), kThreads, 0, s>>>(static_cast<const __nv_bfloat16*>(E), cols, ids, id0, out);
        break;
    case WeightType::F16:
        embedding_kernel<<<unsigned(T), kThreads, 0, s>>>(static_cast<const __half*>(E), cols, ids, id0, out);
        break;
    case WeightType::F32:
        embedding_kernel<<<unsigned(T), kThreads, 0, s>>>(static_cast<const float*>(E), cols, ids, id0, out);
        break;
    }
    CUDA_LAUNCH_CHECK();
}

void matmul(cublasHandle_t h, const void* W, WeightType t, int64_t rows, int64_t cols, const float* x, void* xs, float* y,
            int64_t T, cudaStream_t s) {
    if (T <= 0) return;
    const void* xin = x;
    cudaDataType_t type = CUDA_R_32F;
    if (t != WeightType::F32) {
        f32_to_weight_type(x, xs, t, T * cols, s);
        xin = xs;
        type = t == WeightType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
    }
    // Column-major view: y^T[rows, T] = (W as [cols, rows])^T @ x^T[cols, T].
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(T), int(cols), &alpha, W, type, int(cols), xin,
                              type, int(cols), &beta, y, CUDA_R_32F, int(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace elastic::cuda
