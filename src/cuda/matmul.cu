// Dense products and the embedding gather on the device, for the three GPU precisions
// (make_cuda_backend in src/model/backend.h): weights stored in bf16, fp16 or fp32, fp32 accumulation.
// matmul: for bf16 / fp16, x (when fp32) is rounded to the weight type by a small kernel, then one
// cublasGemmEx (16-bit x 16-bit -> fp32 or 16-bit output, CUBLAS_COMPUTE_32F) on the tensor cores; for fp32 one
// cublasGemmEx in plain fp32 (CUBLAS_COMPUTE_32F with the default math mode: no TF32). 16-bit
// weights halve the bytes of decode (memory-bound: every weight byte read once per token) against
// fp32 and are what the tensor cores take at full rate. Decode-sized products (T ≤ 4) may instead
// run our GEMV (gemv.cu): GemvTuning picks per shape, by a one-time timing or by ELASTIC_GEMV.
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "cuda/cuda-check.h"
#include "cuda/convert.cuh"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

constexpr int kThreads = 256;

template <typename A, typename B>
__global__ void convert_kernel(const A* __restrict__ x, B* __restrict__ y, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = from_f32<B>(to_f32(x[i]));
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

cudaDataType_t cublas_type(DType t) {
    switch (t) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    case DType::F32: return CUDA_R_32F;
    default: break;
    }
    ELASTIC_ASSERT_MSG(false, "GEMM types are F32, BF16 or F16");
    return CUDA_R_32F;
}

}  // namespace

size_t elem_bytes(DType t) { return t == DType::F32 ? 4 : 2; }

void convert(const void* x, DType tx, void* y, DType ty, int64_t n, cudaStream_t s) {
    if (n <= 0) return;
    if (tx == ty) {
        CUDA_CHECK(cudaMemcpyAsync(y, x, size_t(n) * elem_bytes(tx), cudaMemcpyDeviceToDevice, s));
        return;
    }
    ELASTIC_TYPE_SWITCH(tx, A, ELASTIC_TYPE_SWITCH(ty, B, (convert_kernel<A, B><<<grid_of(n), kThreads, 0, s>>>(
                                                               static_cast<const A*>(x), static_cast<B*>(y), n))));
    CUDA_LAUNCH_CHECK();
}

void embedding(const void* E, DType t, int64_t cols, const int32_t* ids, int32_t id0, int64_t T, float* out, cudaStream_t s) {
    if (T <= 0) return;
    ELASTIC_TYPE_SWITCH(t, W, (embedding_kernel<W><<<unsigned(T), kThreads, 0, s>>>(static_cast<const W*>(E), cols, ids, id0, out)));
    CUDA_LAUNCH_CHECK();
}

GemvTuning::Mode GemvTuning::mode_from_env() {
    const char* e = std::getenv("ELASTIC_GEMV");
    if (!e || !*e || std::strcmp(e, "auto") == 0) return kAuto;
    if (std::strcmp(e, "ours") == 0) return kOurs;
    if (std::strcmp(e, "cublas") == 0) return kCublas;
    throw Error(std::string("ELASTIC_GEMV must be ours, cublas or auto, not '") + e + "'");
}

namespace {

void cublas_matmul(cublasHandle_t h, const void* W, DType tw, int64_t rows, int64_t cols, const void* x, DType tx,
                   void* xs, void* y, DType ty, int64_t T, cudaStream_t s) {
    const void* xin = x;
    if (tx != tw) {
        ELASTIC_ASSERT_MSG(tx == DType::F32, "matmul: 16-bit inputs must match the weight type");
        convert(x, tx, xs, tw, T * cols, s);
        xin = xs;
    }
    // Column-major view: y^T[rows, T] = (W as [cols, rows])^T @ x^T[cols, T].
    const float alpha = 1.0f, beta = 0.0f;
    const cudaDataType_t ab = cublas_type(tw);
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(T), int(cols), &alpha, W, ab, int(cols), xin, ab,
                              int(cols), &beta, y, cublas_type(ty), int(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Mean milliseconds of f over 20 runs on s after 3 warm-up runs.
template <class F>
float time_on(cudaStream_t s, F&& f) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; ++i) f();
    CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < 20; ++i) f();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    return ms / 20.0f;
}

}  // namespace

void matmul(cublasHandle_t h, const void* W, DType tw, int64_t rows, int64_t cols, const void* x, DType tx, void* xs,
            void* y, DType ty, int64_t T, cudaStream_t s, GemvTuning* tune) {
    if (T <= 0) return;
    if (tune && tune->mode != GemvTuning::kCublas && gemv_takes(tw, rows, cols, W, tx, x, ty, T)) {
        bool ours = true;
        if (tune->mode == GemvTuning::kAuto) {
            const std::array<int64_t, 6> key{rows, cols, T, int64_t(tw), int64_t(tx), int64_t(ty)};
            auto it = tune->ours.find(key);
            if (it == tune->ours.end()) {  // y is overwritten by the real call below
                cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
                CUDA_CHECK(cudaStreamIsCapturing(s, &cap));
                ELASTIC_ASSERT_MSG(cap == cudaStreamCaptureStatusNone,
                                   "GEMV tuning (it times and synchronises) inside a captured decode step");
                const float t_ours = time_on(s, [&] { gemv(W, tw, rows, cols, x, tx, y, ty, T, s); });
                const float t_blas = time_on(s, [&] { cublas_matmul(h, W, tw, rows, cols, x, tx, xs, y, ty, T, s); });
                it = tune->ours.emplace(key, t_ours <= t_blas).first;
            }
            ours = it->second;
        }
        if (ours) {
            gemv(W, tw, rows, cols, x, tx, y, ty, T, s);
            return;
        }
    }
    cublas_matmul(h, W, tw, rows, cols, x, tx, xs, y, ty, T, s);
}

}  // namespace elastic::cuda
