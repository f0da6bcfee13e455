// CUDA launchers of the backend's small ops and GEMM (src/model/backend.h semantics), one file per
// op family as in src/cpu: elementwise.cu (rms_norm, rope, swiglu, add), matmul.cu (matmul,
// embedding, fp32 -> bf16). All pointers are device pointers; everything is queued on stream s.
// Precision: activations stay fp32; weights and the GEMM's inputs are bf16, fp16 or fp32 (the
// backend's GpuPrecision) with fp32 accumulation.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

namespace elastic::cuda {

// y[rows, dim] = x / rms(x) * w     (y may equal x); w [dim]
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, cudaStream_t s);
// x[T, n_heads, head_dim] rotated in place (HF rotate_half); positions pos[t], or pos0 + t when pos is null.
void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq,
          cudaStream_t s);
// out[n] = silu(gate[n]) * up[n]
void swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t s);
// y[n] += x[n]
void add(float* y, const float* x, int64_t n, cudaStream_t s);

// How the device stores weights and rounds GEMM inputs (GpuPrecision of src/model/backend.h).
enum class WeightType { BF16, F16, F32 };
size_t weight_elem_bytes(WeightType t);

// y[n] = x[n] in type t, round to nearest even (a device copy for F32)
void f32_to_weight_type(const float* x, void* y, WeightType t, int64_t n, cudaStream_t s);
void f32_to_bf16(const float* x, __nv_bfloat16* y, int64_t n, cudaStream_t s);
// out[T, cols] = rows ids[t] of E[vocab, cols] (type t) as fp32; ids may be null for T == 1 (then row id0).
void embedding(const void* E, WeightType t, int64_t cols, const int32_t* ids, int32_t id0, int64_t T, float* out,
               cudaStream_t s);
// y[T, rows] = x[T, cols] @ W[rows, cols]^T with W of type t and x rounded to t, fp32 accumulation
// and output; xs: scratch of T * cols elements of t (unused for F32). The handle must already be
// bound to stream s.
void matmul(cublasHandle_t h, const void* W, WeightType t, int64_t rows, int64_t cols, const float* x, void* xs, float* y,
            int64_t T, cudaStream_t s);

// One Linear layer of a router on the device: w [out, in] row-major, b [out], fp32.
struct RouterLinearDev {
    const float* w;
    const float* b;
    int in, out;
};
// The router of a layer (fe0, fe2, rh0, rh2, rh4): k [T, n_kv_head, head_dim] pre-RoPE keys on the
// device, pooled over the first and last `window` rows; logits_host [n_kv_head, layers[4].out] on
// the host. Synchronises s.
void router_logits(cublasHandle_t h, const RouterLinearDev (&layers)[5], const float* k, int64_t T, int n_kv_head,
                   int head_dim, int window, float* logits_host, cudaStream_t s);

// The k largest of logits[0, n) (device), value descending, lower index first on ties, into
// out_host[0, k) (host); k <= n, k <= Backend::kMaxCandidates. Synchronises s.
void top_candidates(const float* logits, int32_t n, int k, std::pair<float, int32_t>* out_host, cudaStream_t s);

}  // namespace elastic::cuda
