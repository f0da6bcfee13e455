// Router training on the GPU (src/cuda/train.cu): the backward ops and the training attention
// behind the CUDA backend's Backend training methods (model/backend.h), all fp32. Device pointers,
// work queued on stream s; the functions that return host values synchronise it.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/plan.h"
#include "model/backend.h"

namespace elastic::cuda {

struct DevicePlan;

// dx[rows, dim] (written, or added to when accumulate) of y = rms_norm(x) * w, from dy.
void rms_norm_backward(const float* x, const float* w, const float* dy, float* dx, int64_t rows, int64_t dim, float eps,
                       bool accumulate, cudaStream_t s);
void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n,
                     cudaStream_t s);
// dx[T, cols] (= or +=) dy[T, rows] @ W[rows, cols], fp32 (no TF32). The handle is bound to the stream.
void matmul_dx(cublasHandle_t h, const float* W, int64_t rows, int64_t cols, const float* dy, float* dx, int64_t T,
               bool accumulate, cudaStream_t s);
// Backend::cross_entropy with W [V, D] fp32 on the device, hid and dh [T, D], targets on the host.
CrossEntropy cross_entropy(cublasHandle_t h, const float* W, int64_t V, int64_t D, const float* hid,
                           const int32_t* targets, int64_t T, float* dh, cudaStream_t s);

struct MixWeights {
    float w[64];
};
// Backend::mix_heads / mix_heads_dw (w, dw_host on the host).
void mix_heads(const float* a, const float* b, const float* w, float* out, int64_t T, int n_head, int n_kv_head,
               int head_dim, cudaStream_t s);
void mix_heads_dw(const float* dout, const float* a, const float* b, int64_t T, int n_head, int n_kv_head, int head_dim,
                  double* dw_host, cudaStream_t s);

// Backend::attn_forward_lse / attn_backward over a plan already on the device (upload_plan /
// refill_plan with the same T and xa_block). head_dim 32, 64 or 128; coef host [n_kv_head] or null.
void attn_forward_lse(const AttnShape& sh, const DevicePlan& dp, const float* q, const float* k, const float* v,
                      float* out, float* lse, cudaStream_t s);
void attn_backward(const AttnShape& sh, const DevicePlan& dp, const float* q, const float* k, const float* v,
                   const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv,
                   const float* coef, cudaStream_t s);

}  // namespace elastic::cuda
