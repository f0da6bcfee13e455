// Elastic attention on the GPU (DESIGN.md §1.2, §1.5, §1.6): the fused hybrid prefill kernel
// (every KV head in its own mode, one launch per layer, varlen batches, persistent grid with the
// longest query tiles first), the split-KV decode over the per-head lean KV cache (bf16), and the
// XAttention block estimation. The CPU versions in src/attention/ are the specification; tests in
// tests/test-cuda-attention.cpp hold these to them.
//
// Host API only: no CUDA headers beyond the runtime types, so C++ code of the backend can include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "attention/plan.h"

namespace elastic::cuda {

// Per-layer plan of a batch on the device: per (sequence, KV head) the mode and the start of its
// XA lists; the XA lists (CSR over query blocks, key block ids counted from the start of the
// sequence, i.e. the BlockList ids unchanged); cu_seqlens; and, built on first use per launch
// shape, the work list of (sequence, query head, query tile) items sorted by cost.
// One plan must not be used by two launches running at the same time (it owns the work counter).
struct DevicePlan;
struct DeviceLayerCache;

}  // namespace elastic::cuda

// The opaque types are destroyed inside the library (attention-prefill.cu, attention-decode.cu).
namespace std {
template <>
struct default_delete<elastic::cuda::DevicePlan> {
    void operator()(elastic::cuda::DevicePlan* p) const;
};
template <>
struct default_delete<elastic::cuda::DeviceLayerCache> {
    void operator()(elastic::cuda::DeviceLayerCache* p) const;
};
}  // namespace std

namespace elastic::cuda {

enum class DType : int { BF16 = 0, F16 = 1, F32 = 2 };  // F32: hybrid_prefill_f32io only

// One sequence of T tokens. XA heads need plan.xa[g] with ceil(T / xa_block) query blocks,
// xa_block a multiple of 64.
std::unique_ptr<DevicePlan> upload_plan(const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s);
// A varlen batch: sequence b has seqlens[b] tokens and its own plan (same n_kv_head for all).
std::unique_ptr<DevicePlan> upload_batch_plan(const std::vector<LayerPlan>& plans, const std::vector<int64_t>& seqlens,
                                              int64_t xa_block, cudaStream_t s);
// Device copy of the plan's cumulative sequence offsets [n_seq + 1] (int32).
const int32_t* plan_cu_seqlens(const DevicePlan& plan);
int plan_n_seq(const DevicePlan& plan);

// Native varlen launcher. All strides in elements; a zero stride means the packed default
// (q/out row stride n_head·head_dim, k/v row stride n_kv_head·head_dim, head stride head_dim).
// Pointers 16-byte aligned, strides multiples of 8 elements, head_dim 64 or 128.
struct HybridParams {
    DType dtype = DType::BF16;
    const void* q = nullptr;  // [total_T, n_head, head_dim]      (bf16 or fp16)
    const void* k = nullptr;  // [total_T, n_kv_head, head_dim]
    const void* v = nullptr;  // [total_T, n_kv_head, head_dim]
    void* out = nullptr;      // [total_T, n_head, head_dim]
    int64_t q_row_stride = 0, q_head_stride = 0;
    int64_t k_row_stride = 0, k_head_stride = 0;
    int64_t v_row_stride = 0, v_head_stride = 0;
    int64_t o_row_stride = 0, o_head_stride = 0;
    const int32_t* cu_seqlens = nullptr;  // device [n_seq + 1]; null: the plan's own (must agree with it)
    int n_head = 0, n_kv_head = 0, head_dim = 0;
    float scale = 0.0f;  // softmax scale (1/sqrt(d) usually)
    StreamingWindow win;
    const DevicePlan* plan = nullptr;
    int force_block_m = 0;  // 0: automatic (128 rows at d 64, 64 at d 128 or with 64-token XA blocks)
    int force_block_n = 0;  // 0: automatic (64 keys); 32 only with 128-row tiles at d 128
};
void hybrid_prefill(const HybridParams& p, cudaStream_t s);

// fp32 in/out device buffers (q, out [T, Hq, d]; k, v [T, Hkv, d]), one sequence. dtype BF16 / F16:
// converts to it, runs the tensor-core kernel, converts back; F32: the fp32 CUDA-core kernel (same
// fused launch and tiles, nothing rounded). Same arguments as cpu::attn_hybrid_prefill.
void hybrid_prefill_f32io(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                          int n_kv_head, int head_dim, const DevicePlan& plan, const StreamingWindow& win,
                          int64_t xa_block, float scale, DType dtype, cudaStream_t s);

// XAttention estimation: device q [T, Hq, d], k [T, Hkv, d] fp32; block scores on the GPU (fp32
// dot products, fp64 block sums), selection on the host with cpu::xa_estimate's rule. Fills
// plan.xa[g] for every XA head (plan.xa resized to n_kv_head). Synchronises s.
void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                  LayerPlan& plan, cudaStream_t s);
// The raw scores of KV head g (for tests): host [nb, nb] row-major, summed over the group's query
// heads, entries kb > qb zero. Synchronises s.
std::vector<double> xa_block_scores(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                                    int g, const XAParams& p, cudaStream_t s);

// Per-head lean KV cache of one layer (same layout as cpu::LayerKVCache, stored in bf16: half
// the bytes of fp32, and decode is bandwidth-bound, so it is also twice as fast).
std::unique_ptr<DeviceLayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                  int n_kv_head, int head_dim);
size_t cache_bytes(const DeviceLayerCache& c);
// k, v device fp32 [T, n_kv_head, head_dim].
void cache_store_prefill(DeviceLayerCache& c, const float* k, const float* v, int64_t T, cudaStream_t s);
// k_tok, v_tok device fp32 [n_kv_head, head_dim]: the token at position pos.
void cache_append(DeviceLayerCache& c, const float* k_tok, const float* v_tok, int64_t pos, cudaStream_t s);
// Decode of one token at pos (already appended): q, out device fp32 [n_head, head_dim].
void attn_decode(const float* q, const DeviceLayerCache& c, int64_t pos, float* out, int n_head, float scale,
                 cudaStream_t s);
// Number of split-KV pieces per KV head the last attn_decode call used (for benchmarks).
int decode_splits(const DeviceLayerCache& c);

}  // namespace elastic::cuda
