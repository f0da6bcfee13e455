// Elastic attention on the GPU (DESIGN.md §1.2, §1.5, §1.6): the fused hybrid prefill kernel
// (every KV head in its own mode, one launch per layer, varlen batches, persistent grid with the
// longest query tiles first), the split-KV decode over the per-head lean KV cache (bf16), and the
// XAttention block estimation. The CPU versions in src/cpu/attention.h are the specification; tests in
// tests/test-cuda-attention.cpp hold these to them.
//
// Host API only: no CUDA headers beyond the runtime types, so C++ code of the backend can include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attention/plan.h"
#include "core/dtype.h"

namespace elastic::cuda {

// Per-layer plan of a batch on the device: per (sequence, KV head) the mode and the start of its
// XA lists; the XA lists (CSR over query blocks, key block ids counted from the start of the
// sequence, i.e. the BlockList ids unchanged); cu_seqlens; and, built on first use per launch
// shape, the work list of (sequence, query head, query tile) items sorted by cost.
// One plan must not be used by two launches running at the same time (it owns the work counter).
struct DevicePlan;
struct DeviceLayerCache;
struct KvAppend;  // ops.h

}  // namespace elastic::cuda

// The opaque types are destroyed inside the library (attention-plan.cu, kv-cache.cu).
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


// An empty plan (for xa_fill_device_plan, or to be refilled).
std::unique_ptr<DevicePlan> new_plan();
// One sequence of T tokens. XA heads need plan.xa[g] with ceil(T / xa_block) query blocks,
// xa_block a multiple of 64.
std::unique_ptr<DevicePlan> upload_plan(const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s);
// The same into an existing plan, reusing its device buffers (no allocation once they are large
// enough): the backend refills one plan layer after layer. The stream orders the refill after the
// kernels that read the previous contents.
void refill_plan(DevicePlan& dp, const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s);
// One sequence of T tokens whose modes a kernel writes later into dp's head metadata (mode, then
// xa_base 0, per KV head; router_decide): the plan's other fields, and head_meta_words() points to
// where the modes go. FA and SSA heads only; the launch's work list is built on the device.
void fill_plan_device_modes(DevicePlan& dp, int n_kv_head, int64_t T, int64_t xa_block, cudaStream_t s);
int32_t* head_meta_words(DevicePlan& dp);
// Whether dp holds modes written on the device for T tokens and n_kv_head heads.
bool holds_device_modes(const DevicePlan& dp, int n_kv_head, int64_t T);
// A varlen batch: sequence b has seqlens[b] tokens and its own plan (same n_kv_head for all).
std::unique_ptr<DevicePlan> upload_batch_plan(const std::vector<LayerPlan>& plans, const std::vector<int64_t>& seqlens,
                                              int64_t xa_block, cudaStream_t s);

// Which tensor-core prefill kernel runs: the Hopper one (wgmma + TMA, sm_90a; built when the CuTe
// headers are present) or the mma.sync one (sm_80 and later). Auto: Hopper where it is built and
// takes the launch (bf16/fp16, d 64/128, XA blocks multiples of 128, an sm_90 device), unless the
// environment says ELASTIC_PREFILL_KERNEL=sm80. Sm90 where it cannot run is an error.
enum class PrefillKernel { Auto, Sm80, Sm90 };
// Whether the Hopper kernel would take a launch of this type, head_dim and plan on this device.
bool hopper_prefill_available(DType t, int head_dim, const DevicePlan& plan);

// Native varlen launcher of the tensor-core kernel. All strides in elements; a zero stride means
// the packed default (q/out row stride n_head·head_dim, k/v row stride n_kv_head·head_dim, head
// stride head_dim). Pointers 16-byte aligned, strides multiples of 8 elements, head_dim 64 or 128.
struct HybridParams {
    DType dtype = DType::BF16;  // BF16 or F16
    const void* q = nullptr;    // [total_T, n_head, head_dim]
    const void* k = nullptr;    // [total_T, n_kv_head, head_dim]
    const void* v = nullptr;    // [total_T, n_kv_head, head_dim]
    void* out = nullptr;        // [total_T, n_head, head_dim]
    int64_t q_row_stride = 0, q_head_stride = 0;
    int64_t k_row_stride = 0, k_head_stride = 0;
    int64_t v_row_stride = 0, v_head_stride = 0;
    int64_t o_row_stride = 0, o_head_stride = 0;
    const int32_t* cu_seqlens = nullptr;  // device [n_seq + 1]; null: the plan's own (must agree with it)
    int n_head = 0, n_kv_head = 0, head_dim = 0;
    float scale = 0.0f;  // softmax scale (1/sqrt(d) usually)
    StreamingWindow win;
    const DevicePlan* plan = nullptr;
    int force_block_m = 0;  // 0: automatic (128 rows when the XA blocks allow, else 64)
    int force_block_n = 0;  // 0: automatic (64 keys; 32 with 128-row tiles at d 128)
    PrefillKernel kernel = PrefillKernel::Auto;  // force_block_m/n apply to the Sm80 kernel only
};
void hybrid_prefill(const HybridParams& p, cudaStream_t s);

// The backend's op (cpu::attn_hybrid_prefill's arguments): one sequence, packed device buffers of
// type t (q, out [T, Hq, d]; k, v [T, Hkv, d]). BF16 / F16: the tensor-core kernel; F32: the fp32
// CUDA-core kernel (same fused launch and tiles, nothing rounded).
void attn_hybrid_prefill(const void* q, const void* k, const void* v, void* out, DType t, int64_t T, int n_head,
                         int n_kv_head, int head_dim, const DevicePlan& plan, const StreamingWindow& win,
                         int64_t xa_block, float scale, cudaStream_t s,
                         PrefillKernel kernel = PrefillKernel::Auto);

// XAttention estimation: device q [T, Hq, d], k [T, Hkv, d] of type t; block scores on the GPU
// (fp32 dot products, fp64 block sums), selection on the host with xa_select_blocks. Fills
// plan.xa[g] for every XA head (plan.xa resized to n_kv_head). Synchronises s.
void xa_fill_plan(const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head, int head_dim,
                  const XAParams& p, LayerPlan& plan, cudaStream_t s);
// The same kept on the device (the forward's path): scores, selection and lists on the GPU, written
// into dp (a single-sequence plan for plan.mode, its work list then built on the device). Nothing
// waits for the host; the attended-pair counts follow into pinned memory (device_xa_pairs).
// Needs xa_device_select_supported (else xa_fill_plan and upload the host lists).
void xa_fill_device_plan(DevicePlan& dp, const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head,
                         int head_dim, const XAParams& p, const LayerPlan& plan, cudaStream_t s);
bool xa_device_select_supported(int64_t T, const XAParams& p, int xa_heads);
// Whether dp holds lists selected on the device, for T tokens and these modes.
bool holds_device_xa(const DevicePlan& dp, const LayerPlan& plan, int64_t T, int64_t xa_block);
// Attended (query, key) pairs per KV head of dp's device lists (0 for other heads), as
// attended_pairs would count them; synchronises s.
std::vector<int64_t> device_xa_pairs(const DevicePlan& dp, const LayerPlan& plan, cudaStream_t s);
// dp's device lists into plan.xa (host, offsets from 0 per head), xa_on_device cleared; synchronises s.
void download_device_xa(const DevicePlan& dp, LayerPlan& plan, cudaStream_t s);
// For tests: the device selection over given scores (host [heads][nb × nb], nb = ceil(T / block)),
// lists and attended pairs back. Synchronises s.
void xa_select_on_device(const std::vector<std::vector<double>>& scores, int64_t T, int64_t block, double threshold,
                         std::vector<BlockList>& lists, std::vector<int64_t>& pairs, cudaStream_t s);
// For tests: the work list a launch over dp with query tiles of bm rows runs (seq, head, tile, cost
// per item, in order), built as the kernels build it; synchronises s.
std::vector<int32_t> work_list(const DevicePlan& dp, int n_head, int bm, const StreamingWindow& win, cudaStream_t s);
// The raw scores of KV head g (for tests): host [nb, nb] row-major, summed over the group's query
// heads, entries kb > qb zero. Synchronises s.
std::vector<double> xa_block_scores(const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head,
                                    int head_dim, int g, const XAParams& p, cudaStream_t s);

// Per-head lean KV cache of one layer (same layout as cpu::LayerKVCache, stored in bf16: half
// the bytes of fp32, and decode is bandwidth-bound, so it is also twice as fast).
// Its head table and zeroed slots are queued on s (nothing waits for the work before).
std::unique_ptr<DeviceLayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                  int n_kv_head, int head_dim, cudaStream_t s = nullptr);
size_t cache_bytes(const DeviceLayerCache& c);
// k, v device [T, n_kv_head, head_dim] of type t.
void cache_store_prefill(DeviceLayerCache& c, const void* k, const void* v, DType t, int64_t T, cudaStream_t s);
// k_tok, v_tok device [n_kv_head, head_dim] of type t: the token at position pos. d_pos (device,
// may be null): where the kernel reads the position instead (a decode step recorded once and
// replayed, backend-cuda.cu); pos is then only checked against the capacity.
void cache_append(DeviceLayerCache& c, const void* k_tok, const void* v_tok, DType t, int64_t pos, cudaStream_t s,
                  const int32_t* d_pos = nullptr);
// Token t's target in a fused append (ops.h: KvAppend, qk_norm_rope_append): c's buffers, head
// table and window; pos is checked against the capacity as cache_append checks it.
void cache_append_target(KvAppend& app, int t, DeviceLayerCache& c, int64_t pos);
// Decode of one token at pos (already appended): q, out device [n_head, head_dim] of type t.
// d_pos as for cache_append: the launch is then the same for every position.
void attn_decode(const void* q, const DeviceLayerCache& c, int64_t pos, void* out, DType t, int n_head, float scale,
                 cudaStream_t s, const int32_t* d_pos = nullptr);
// Number of split-KV pieces of the longest KV head in the last attn_decode call (for benchmarks).
int decode_splits(const DeviceLayerCache& c);
// With ELASTIC_DECODE_TRACE=1: where the last attn_decode call's CTAs spent their time (%globaltimer
// stamps per CTA: entry, stages issued, stream done, piece written, grid barrier, merge), one line.
std::string decode_trace_summary();

}  // namespace elastic::cuda
