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
    // XA lists selected on the device (xa_fill_device_plan): h_xa_off / h_xa_blocks stay empty,
    // d_xa_off holds xa_heads × (xa_nb + 1) offsets, and the work list is built on the device.
    bool xa_device = false;
    // Modes written on the device (fill_plan_device_modes, then router_decide): h_meta holds -1s
    // and the work list is built on the device.
    bool modes_device = false;
    int xa_heads = 0;
    int64_t xa_nb = 0;
    // Scratch of the device selection (element capacities beside each).
    double* d_xa_score = nullptr;             // [nb, nb] block scores of one head
    float* d_xa_ml = nullptr;                 // [2, group, R] row max and sum
    uint32_t* d_xa_bits = nullptr;            // [xa_heads, nb, ceil(nb / 32)] kept blocks
    int32_t* d_xa_count = nullptr;            // [xa_heads, nb] kept blocks per query block
    unsigned long long* d_xa_pairs = nullptr; // [xa_heads] attended pairs
    unsigned long long* h_xa_pairs = nullptr; // pinned copy of d_xa_pairs
    size_t cap_xa_score = 0, cap_xa_ml = 0, cap_xa_bits = 0, cap_xa_count = 0, cap_xa_pairs = 0, cap_xa_pairs_host = 0;
    // Scratch of the device work list: costs in / out, items in, cub's sort storage.
    mutable int32_t* d_cost = nullptr;
    mutable detail::WorkItem* d_items_in = nullptr;
    mutable char* d_sort_tmp = nullptr;
    mutable size_t cap_cost = 0, cap_items_in = 0, cap_sort_tmp = 0;

    ~DevicePlan() {
        cudaFree(d_cu);
        cudaFree(d_meta);
        cudaFree(d_xa_off);
        cudaFree(d_xa_blocks);
        cudaFree(d_counter);
        cudaFree(d_items);
        cudaFree(d_xa_score);
        cudaFree(d_xa_ml);
        cudaFree(d_xa_bits);
        cudaFree(d_xa_count);
        cudaFree(d_xa_pairs);
        cudaFreeHost(h_xa_pairs);
        cudaFree(d_cost);
        cudaFree(d_items_in);
        cudaFree(d_sort_tmp);
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

// d with room for n elements, reallocated (contents dropped) only when it grows.
template <typename T>
void ensure_capacity(T*& d, size_t& cap, size_t n, const char* what) {
    if (n <= cap && d) return;
    CUDA_CHECK(cudaFree(d));
    d = nullptr;
    cap = std::max<size_t>(1, n);
    d = device_alloc<T>(cap, what);
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
// A plan with device XA lists (xa_device) gets it built on the device: the same items in the same
// order as the host's stable sort by cost.
void build_items(const DevicePlan& plan, int n_head, int bm, int sink, int local, cudaStream_t s);
// The plan's fields of one sequence of T tokens with the given modes (cu_seqlens, head metadata,
// uploaded); XA heads get xa_base = j · (nb + 1) for the j-th XA head, their lists to be written on
// the device. Marks the plan xa_device when an XA head is present.
void fill_plan_device_xa(DevicePlan& dp, const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s);

}  // namespace detail
}  // namespace elastic::cuda
