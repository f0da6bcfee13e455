// CUDA error checks, the first tier of CONVENTIONS.md #9: a failed CUDA or cuBLAS call is a bug or a
// broken device, not a user mistake, so it aborts with file:line and the library's own message.
// (Device problems a user can cause, such as no GPU or a bad --device, are reported as
// elastic::Error by make_cuda_backend before any of these can fire.)
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace elastic::cuda {

[[noreturn]] inline void cuda_abort(const char* what, const char* msg, const char* file, int line) {
    std::fprintf(stderr, "elastic: CUDA error at %s:%d: %s: %s\n", file, line, what, msg);
    std::abort();
}

// cudaMalloc that reports running out of device memory as a user-facing elastic::Error (a context
// or model too large for the GPU), like std::bad_alloc on the CPU; other failures abort.
template <typename T>
T* device_alloc(size_t count, const char* what) {
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, count * sizeof(T) + (count == 0));
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        fail("CUDA: out of device memory allocating %.1f MiB for %s", double(count * sizeof(T)) / (1 << 20), what);
    }
    if (err != cudaSuccess) cuda_abort("cudaMalloc", cudaGetErrorString(err), __FILE__, __LINE__);
    return static_cast<T*>(p);
}

}  // namespace elastic::cuda

#define CUDA_CHECK(call)                                                                    \
    do {                                                                                    \
        const cudaError_t err_ = (call);                                                    \
        if (err_ != cudaSuccess)                                                            \
            ::elastic::cuda::cuda_abort(#call, cudaGetErrorString(err_), __FILE__, __LINE__); \
    } while (0)

// After a kernel launch: catches bad launch configurations at once (not asynchronous faults).
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                       \
    do {                                                                                         \
        const cublasStatus_t st_ = (call);                                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                        \
            ::elastic::cuda::cuda_abort(#call, cublasGetStatusString(st_), __FILE__, __LINE__); \
    } while (0)
