// The op interface the model forward is written against (CONVENTIONS.md #3). A backend owns its
// buffers (`alloc` returns backend memory: host for CPU, device for CUDA) and runs each op on them.
// Shapes are in comments as [rows, cols]; every buffer is dense row-major float32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attention/plan.h"
#include "attention/router.h"
#include "model/weights.h"

namespace elastic {

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;

    virtual float* alloc(size_t n) = 0;                              // n floats, uninitialised
    virtual void release(float* p) = 0;
    virtual void upload(float* dst, const float* host, size_t n) = 0;
    virtual void download(float* host, const float* src, size_t n) = 0;
    // Waits for the queued work (a GPU backend runs asynchronously); for timing statistics.
    virtual void sync() {}

    // out[T, d] = rows ids[t] of E[vocab, d]
    virtual void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) = 0;
    // y[rows, dim] = x / rms(x) * w      (y may equal x)
    virtual void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) = 0;
    // y[T, W.rows] = x[T, W.cols] @ W^T
    virtual void matmul(const Weight& W, const float* x, float* y, int64_t T) = 0;
    // x[T, n_heads, head_dim] rotated in place (HF rotate_half convention) at positions pos[T]
    virtual void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) = 0;
    // out[n] = silu(gate[n]) * up[n]
    virtual void swiglu(const float* gate, const float* up, float* out, int64_t n) = 0;
    // y[n] += x[n]
    virtual void add(float* y, const float* x, int64_t n) = 0;
    // --- Elastic attention (DESIGN.md §1.2, §1.5, §1.6) ---
    // Layer-major prefill of positions 0..T-1, every KV head in its plan's mode, one pass.
    // q, out [T, n_head, head_dim]; k, v [T, n_kv_head, head_dim]
    virtual void attn_hybrid_prefill(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                                     int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                                     int64_t xa_block, float scale) = 0;
    // XAttention block lists for the plan's XA heads from the (post-RoPE) q [T, n_head, d], k [T, n_kv_head, d].
    virtual void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                              const XAParams& p, LayerPlan& plan) = 0;
    // Router of one layer (DESIGN.md §1.1): the pre-RoPE keys k [T, n_kv_head, head_dim] pooled over
    // their first and last `window` rows (router_pool), through the layer's MLPs (Router::mlp);
    // logits_host [n_kv_head, r.rh4.out] on the host, for Router::decision.
    virtual void router_logits(const RouterLayer& r, const float* k, int64_t T, int n_kv_head, int head_dim, int window,
                               float* logits_host) = 0;
    // Sampling on the backend: the k largest of logits[0, n) as (value, index), value descending,
    // lower index first on ties (std::max_element's choice for k = 1). 1 <= k <= kMaxCandidates.
    static constexpr int kMaxCandidates = 128;
    virtual void top_candidates(const float* logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) = 0;
    // The KV cache of one layer of one sequence: each head keeps what its mode needs.
    struct LayerCache {
        virtual ~LayerCache() = default;
        virtual size_t bytes() const = 0;
    };
    virtual std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win,
                                                        int64_t capacity, int n_kv_head, int head_dim) = 0;
    virtual void cache_store_prefill(LayerCache& c, const float* k, const float* v, int64_t T) = 0;  // k, v [T, n_kv_head, d]
    virtual void cache_append(LayerCache& c, const float* k_tok, const float* v_tok, int64_t pos) = 0;  // [n_kv_head, d]
    // One query token at position pos (already appended): q, out [n_head, head_dim].
    virtual void attn_decode(const float* q, const LayerCache& c, int64_t pos, float* out, int n_head, float scale) = 0;
};

// CPU reference backend (fp32, OpenMP threads, OpenBLAS for dense products).
std::unique_ptr<Backend> make_cpu_backend(int threads);

// What the CUDA backend stores and multiplies in (activations between ops are fp32 in all three):
//   BF16: weights, GEMM inputs and prefill attention inputs in bf16 (tensor cores), fp32 accumulation;
//   F16:  the same in fp16 (3 more mantissa bits, 5 fewer exponent bits: inputs beyond 65504 overflow);
//   F32:  fp32 weights and GEMMs (no TF32) and the fp32 attention kernel: nothing rounded, for small
//         models and for checking against the CPU; slower and twice the weight memory of bf16.
// The KV cache of decode is bf16 in all three.
enum class GpuPrecision { BF16, F16, F32 };

#ifdef ELASTIC_HAVE_CUDA
// CUDA backend on one GPU (src/cuda). Throws elastic::Error when CUDA cannot start or the device
// does not exist.
std::unique_ptr<Backend> make_cuda_backend(int device, GpuPrecision precision = GpuPrecision::BF16);
// Usable CUDA devices; 0 when there is no driver or no GPU.
int cuda_device_count();
#endif

}  // namespace elastic
