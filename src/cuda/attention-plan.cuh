// The device plan of a prefill launch (internal to src/cuda/attention-*.cu): per (sequence, KV
// head) the mode and the start of its XA lists, the XA lists, cu_seqlens, and the work list of
// (sequence, query head, query tile) items sorted longest first, built per launch shape.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "cuda/attention-tiles.h"
#include "cuda/attention.h"
#include "cuda/cuda-check.h"

namespace elastic::cuda {

struct DevicePlan {
    int n_seq = 0, n_kv = 0;
    int64_t xa_block = 0;
    bool has_xa = false;
    std::vector<int32_t> h_cu;          // [n_seq + 1]
    std::vector<detail::HeadMeta> h_meta;       // [n_seq, n_kv]
    std::vector<int32_t> h_xa_off;      // per XA head: n_qblocks + 1 offsets into xa_blocks
    std::vector<int32_t> h_xa_blocks;   // key block ids
    int32_t* d_cu = nullptr;
    detail::HeadMeta* d_meta = nullptr;
    int32_t* d_xa_off = nullptr;
    int32_t* d_xa_blocks = nullptr;
    int* d_counter = nullptr;
    LayerPlan last;        // refill_plan: the single-sequence plan now on the device
    int64_t last_T = -1;   // (-1: none, or a batch plan)
    size_t cap_cu = 0, cap_meta = 0, cap_xa_off = 0, cap_xa_blocks = 0;  // element capacities: a refill reuses them
    // Work list for the last launch shape (built on first use, reused while the shape holds).
    mutable detail::WorkItem* d_items = nullptr;
    mutable size_t cap_items = 0;
    mutable int n_items = 0;
    mutable const void* launch_kernel = nullptr;  // the tensor-core kernel last prepared for this plan
    mutable int launch_ctas = 0;                  // its persistent grid: SMs × resident CTAs per SM
    mutable int key_head = -1, key_bm = -1, key_sink = -1, key_local = -1;

    ~DevicePlan() {
        cudaFree(d_cu);
        cudaFree(d_meta);
        cudaFree(d_xa_off);
        cudaFree(d_xa_blocks);
        cudaFree(d_counter);
        cudaFree(d_items);
    }
};

namespace detail {

// h on the device in d (capacity cap elements), reallocated only when it grows: plans are refilled
// layer after layer without device allocations.
template <typename T>
void upload_into(T*& d, size_t& cap, const std::vector<T>& h, cudaStream_t s) {
    if (h.size() > cap || !d) {
        CUDA_CHECK(cudaFree(d));
        cap = std::max<size_t>(1, h.size());
        d = device_alloc<T>(cap, "an attention plan");
    }
    if (!h.empty()) CUDA_CHECK(cudaMemcpyAsync(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, s));
}

// What both prefill kernels take from the window, the plan and the scale: the window clamped to
// int range (a window covering the whole sequence behaves like FA), the XA block (64 when no head
// is XA) and the softmax scale in base 2.
struct LaunchConsts {
    int sink, local, xa_block;
    float scale_log2;
};
LaunchConsts launch_consts(const StreamingWindow& win, const DevicePlan& plan, float scale);
// Query rows per tile and keys per tile of the tensor-core kernel (attention-plan.cu says why).
int auto_block_m(int head_dim, const DevicePlan& plan);
int auto_block_n(int head_dim, int bm);
// The plan's work list for tiles of bm rows (kept while n_head, bm and the window stay the same).
void build_items(const DevicePlan& plan, int n_head, int bm, int sink, int local, cudaStream_t s);

}  // namespace detail
}  // namespace elastic::cuda
