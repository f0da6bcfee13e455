// CUDA launchers of the backend's small ops and GEMM (src/model/backend.h semantics), one file per
// op family as in src/cpu: elementwise.cu (rms_norm, rope, swiglu, add), matmul.cu (matmul,
// embedding, conversions), router.cu, sampling.cu. All pointers are device pointers; everything
// is queued on stream s. Types: the residual stream is fp32; weights, GEMM inputs and the
// attention tensors are the backend's precision (bf16, fp16 or fp32), accumulation fp32.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "core/dtype.h"

namespace elastic::cuda {

// Decode rows: the most tokens one decode step's fused kernels take (our GEMV, qk_norm_rope(_append)).
constexpr int64_t kGemvMaxT = 4;

// y[rows, dim] = x / rms(x) * w     (y may equal x); w [dim] fp32; x of type tx, y of type ty
// (equal, or tx F32).
void rms_norm(const void* x, DType tx, const float* w, void* y, DType ty, int64_t rows, int64_t dim, float eps,
              cudaStream_t s);
// x[T, n_heads, head_dim] of type t rotated in place (HF rotate_half, fp32 arithmetic); positions
// pos[t], or pos0 + t when pos is null.
void rope(void* x, DType t, int64_t T, int n_heads, int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq,
          cudaStream_t s);
// Decode rows' q and k: each head's RMSNorm (qn / kn null: none; as rms_norm over head_dim), then
// RoPE (as rope), in one launch; head_dim 64 or 128. q [T, nq, d], k [T, nk, d] in type t.
void qk_norm_rope(void* q, void* k, DType t, const float* qn, const float* kn, float eps, int64_t T, int nq, int nk,
                  int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq, cudaStream_t s);
// The same, and each token's k (as rotated, in t) and v rows stored into its layer's KV cache at
// its position, in the same launch (the decode step's cache append folded in: one launch fewer per
// layer). Token t's cache: bf16 K and V buffers, its device head table (detail::CacheHead[nk]) and
// window; the slot and the rounding are cache_append's (kv-cache.cu), so the cache holds the same
// bits. T ≤ kGemvMaxT.
struct KvAppend {
    const void* v = nullptr;  // [T, nk, d] in t
    __nv_bfloat16* kc[kGemvMaxT] = {};
    __nv_bfloat16* vc[kGemvMaxT] = {};
    const void* heads[kGemvMaxT] = {};
    int64_t sink[kGemvMaxT] = {}, local[kGemvMaxT] = {};
};
void qk_norm_rope_append(void* q, void* k, DType t, const float* qn, const float* kn, float eps, int64_t T, int nq,
                         int nk, int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq,
                         const KvAppend& app, cudaStream_t s);
// out[n] = silu(gate[n]) * up[n]   (fp32)
void swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t s);
// y[n] += x[n]   (fp32)
void add(float* y, const float* x, int64_t n, cudaStream_t s);

// Bytes of one element of the weight / activation types (F32, BF16, F16).
size_t elem_bytes(DType t);
// y[n] (type ty) = x[n] (type tx), round to nearest even; a device copy when the types agree.
void convert(const void* x, DType tx, void* y, DType ty, int64_t n, cudaStream_t s);
// out[T, cols] fp32 = rows ids[t] of E[vocab, cols] (type t); ids may be null for T == 1 (then row id0).
void embedding(const void* E, DType t, int64_t cols, const int32_t* ids, int32_t id0, int64_t T, float* out, cudaStream_t s);
// How matmul serves decode-sized products (T ≤ kGemvMaxT, shapes gemv_takes): our GEMV kernel or
// cuBLAS. ELASTIC_GEMV=ours|cublas forces one; unset or `auto`, the first product of each shape
// times both on the stream (a few runs each, once) and keeps the faster. One per backend.
struct GemvTuning {
    enum Mode { kAuto, kOurs, kCublas };
    Mode mode = mode_from_env();
    std::map<std::array<int64_t, 6>, bool> ours;  // (rows, cols, T, tw, tx, ty) → our kernel is the faster
    static Mode mode_from_env();  // ELASTIC_GEMV; an unknown value is an error
};

// y[T, rows] (type ty) = x[T, cols] (type tx) @ W[rows, cols]^T with W of type tw, fp32 accumulation.
// When x is fp32 and W 16-bit, x is first rounded to tw (into xs, scratch of T * cols elements, on
// the cuBLAS path); otherwise tx must equal tw. The handle must already be bound to stream s.
// tune: null means cuBLAS always.
void matmul(cublasHandle_t h, const void* W, DType tw, int64_t rows, int64_t cols, const void* x, DType tx, void* xs,
            void* y, DType ty, int64_t T, cudaStream_t s, GemvTuning* tune = nullptr);

// Our GEMV (gemv.cu): the same product for 16-bit W, T ≤ kGemvMaxT, cols a multiple of 8, W and x
// 16-byte aligned, tx and ty each tw or F32 (an fp32 x is rounded to tw as it is read). kGemvMaxT
// is defined at the top of this namespace.
bool gemv_takes(DType tw, int64_t rows, int64_t cols, const void* W, DType tx, const void* x, DType ty, int64_t T);
void gemv(const void* W, DType tw, int64_t rows, int64_t cols, const void* x, DType tx, void* y, DType ty, int64_t T,
          cudaStream_t s);
// Fused forms for decode rows (same conditions; x of the norm forms is the fp32 residual stream):
// gemv_norm: y_i[T, rows_i] = (x / rms(x) · norm, rounded to tw) @ W_i^T for nseg (1-3) products in
// one launch; gemv_norm_swiglu: out[T, rows] = silu(h @ Wg^T) · (h @ Wu^T) with that h; gemv_add:
// y[T, rows] (fp32) += x @ W^T. Each gives the bits of rms_norm + gemv (+ swiglu / add).
void gemv_norm(const void* const* W, DType tw, const int64_t* rows, void* const* y, DType ty, int nseg, const float* x,
               const float* norm, float eps, int64_t cols, int64_t T, cudaStream_t s);
void gemv_norm_swiglu(const void* Wg, const void* Wu, DType tw, int64_t rows, float* out, const float* x, const float* norm,
                      float eps, int64_t cols, int64_t T, cudaStream_t s);
void gemv_add(const void* W, DType tw, int64_t rows, int64_t cols, const void* x, DType tx, float* y, int64_t T,
              cudaStream_t s);

// One Linear layer of a router on the device: w [out, in] row-major, b [out], fp32.
struct RouterLinearDev {
    const float* w;
    const float* b;
    int in, out;
};
// Floats of scratch router_logits needs for this layer (pooled keys and every layer's output).
size_t router_scratch_floats(const RouterLinearDev (&layers)[5], int n_kv_head, int head_dim);
// Which router path router_logits takes: the single fused kernel (default) or the pooling kernel +
// five cuBLAS GEMMs + bias kernels of before; ELASTIC_ROUTER_KERNEL=fused|cublas (read per call).
enum class RouterKernel { Fused, Cublas };
RouterKernel router_kernel_from_env();
// The router of a layer (fe0, fe2, rh0, rh2, rh4): k [T, n_kv_head, head_dim] pre-RoPE keys of
// type tk on the device, pooled over the first and last `window` rows; logits_host
// [n_kv_head, layers[4].out] on the host. scratch: router_scratch_floats() floats. pinned: nullptr
// or page-locked host memory for the logits (the copy goes there, then to logits_host). The fused
// kernel serves whenever router_fused_takes; otherwise the cuBLAS path. Synchronises s.
void router_logits(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T, int n_kv_head,
                   int head_dim, int window, float* scratch, float* logits_host, cudaStream_t s, float* pinned = nullptr,
                   RouterKernel kernel = router_kernel_from_env());
// The same queued only (no copy, no sync); returns the device pointer of the logits in scratch.
const float* router_queue(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T,
                          int n_kv_head, int head_dim, int window, float* scratch, cudaStream_t s,
                          RouterKernel kernel = router_kernel_from_env());
// The fused kernel's conditions: head_dim a multiple of 8, every Linear's input a multiple of 4,
// k and the weights 16-byte aligned, its shared memory within the device's limit.
bool router_fused_takes(const RouterLinearDev (&layers)[5], const void* k, int head_dim);
// How the fused kernel's CTAs hand each layer's output to each other (clusters > 1):
// Mbarrier (default): st.async into every CTA's shared memory, counted on that CTA's mbarrier for
// the layer, so a CTA waits only for the bytes it needs; Barrier: plain stores and a cluster
// barrier after each layer. ELASTIC_ROUTER_SYNC=mbarrier|barrier (read once).
enum class RouterSync { Mbarrier, Barrier };
RouterSync router_sync_from_env();
// Queues the fused kernel only (no copy, no sync): logits_dev [n_kv_head, layers[4].out] on the
// device. cluster: CTAs per thread-block cluster (1, 2, 4, 8, 16; sm_90+, else 1); 0 = the default
// (ELASTIC_ROUTER_CLUSTER or 16); halved until the device can hold one.
void router_logits_fused(const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T, int n_kv_head,
                         int head_dim, int window, float* logits_dev, cudaStream_t s, int cluster = 0,
                         RouterSync sync = router_sync_from_env());
// ELASTIC_ROUTER_TRACE=1 (measurements only): the last fused call's per-CTA %globaltimer stamps
// (entry, weights asked of the L2, keys pooled, then each layer done: past its cluster barrier, or
// with the mbarrier hand-off its whole output arrived in the CTA) as min/median/max µs after the
// first CTA's entry; synchronises that call's stream.
std::string router_trace_summary();
// The decision of one layer on the device, as Router::decision then choose_modes of a routed
// spec (no host round trip): softmax variant (n_out 2) FA iff l1 > l0, margin l1 - l0; sigmoid
// variant (n_out 1) the LayerNorm over the heads (fp64 mean and variance, eps 1e-5), prob_fa its
// sigmoid, FA iff prob_fa > 0.5, margin prob_fa - 0.5. Routed (n_sparse < 0): each head its
// decision's mode; MSR: the n_sparse heads of lowest margin (ties: lower head) get sparse_mode.
struct RouteRule {
    int n_sparse = -1;  // < 0: routed; else MSR's count of sparse heads for this layer
    int full_mode = 0, sparse_mode = 1;  // kModeFA / kModeSSA / kModeXA
};
// Floats of one layer's record: logits [n_kv_head * n_out] (after the LayerNorm for the sigmoid
// variant), prob_fa [n_kv_head], margin [n_kv_head], mode [n_kv_head] (the HeadMode value), full
// [n_kv_head] (1: the decision is FA).
inline size_t route_record_floats(int n_kv_head, int n_out) { return size_t(n_kv_head) * size_t(n_out + 4); }
// Queues the decision: logits [n_kv_head, n_out] (device) -> record (device) and meta_modes
// [n_kv_head] (the plan's HeadMeta, stride meta_stride int32 words: mode, then xa_base set to 0).
// One warp; n_kv_head <= 64.
void router_decide(const float* logits, int n_kv_head, int n_out, const RouteRule& rule, int32_t* meta,
                   int meta_stride, float* record, cudaStream_t s);

// Queues the cuBLAS path only; returns the device pointer of the logits inside scratch.
const float* router_logits_cublas(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T,
                                  int n_kv_head, int head_dim, int window, float* scratch, cudaStream_t s);

// The k largest of logits[0, n) (device), value descending, lower index first on ties, into
// out_host[0, k) (host); k <= n, k <= Backend::kMaxCandidates. Synchronises s.
void top_candidates(const float* logits, int32_t n, int k, std::pair<float, int32_t>* out_host, cudaStream_t s);
// Top-p's sort (Backend::sorted_candidates): s_i = logits[i] / temperature of [0, n) sorted value
// descending, lower index first on ties; the leading m (<= n) as (s_i, i) into out_host [m] (host);
// returns the normaliser Σ over all n of exp(double(s_i − s_0)). Synchronises s.
double sorted_candidates(const float* logits, int32_t n, float temperature, int m, std::pair<float, int32_t>* out_host,
                         cudaStream_t s);

}  // namespace elastic::cuda
