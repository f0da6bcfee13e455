// Fused hybrid prefill attention (DESIGN.md §1.5): one launch runs every (sequence, query head)
// of a layer, each query tile in its KV head's mode. FlashAttention-2 structure on mma.sync:
//   - a CTA of 4 warps owns kBlockM query rows of one query head (each warp 16·kMI rows); Q, and
//     K/V tiles of 64 keys double-buffered, arrive by cp.async into padded shared memory
//     (row stride d + 8 elements: the 8 rows of an ldmatrix land on distinct banks);
//   - S = Q Kᵀ and O += P V with mma.sync.m16n8k16 (bf16/fp16 → fp32), fragments by ldmatrix
//     (.trans for V), P re-packed from the S accumulators in registers;
//   - online softmax in base 2 (scale·log2 e folded into one FFMA), masks token-exact and only on
//     tiles that need them (diagonal, past the end, SSA window edge);
//   - the key tiles visited are the mode's (tile_range in attention-common.cuh): FA all causal
//     tiles, SSA the sink tiles and the tiles meeting the window, XA the listed blocks;
//   - persistent grid (SMs × occupancy); CTAs take (sequence, query head, query tile) items from
//     an atomic counter in the order the host sorted them (most key tiles first), so long FA tiles
//     start first and short SSA tiles fill the tail. Query heads of one GQA group on the same tile
//     are adjacent in the list, so their K/V tiles are shared through L2; K/V are never repeated.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "cuda/attention-plan.cuh"
#include "cuda/attention-prefill-kernels.cuh"
#include "cuda/sm90/attention-sm90.h"

namespace elastic::cuda {

using namespace detail;

namespace {

template <typename Tr>
void launch(const PrefillKernelParams& kp, const DevicePlan& plan, cudaStream_t s) {
    auto kernel = hybrid_prefill_kernel<Tr>;
    // The shared-memory limit and the occupancy are properties of the kernel on the plan's device:
    // asked once per plan and tile shape (the backend's plan serves every layer), no global state.
    const void* id = reinterpret_cast<const void*>(kernel);
    if (plan.launch_kernel != id) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tr::kSmem)));
        int blocks_per_sm = 0;
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, Tr::kThreads, Tr::kSmem));
        ELASTIC_ASSERT(blocks_per_sm > 0);
        plan.launch_kernel = id;
        plan.launch_ctas = device_sm_count() * blocks_per_sm;
    }
    if (kp.n_items == 0) return;
    const int grid = std::min(kp.n_items, plan.launch_ctas);
    CUDA_CHECK(cudaMemsetAsync(kp.counter, 0, sizeof(int), s));
    kernel<<<grid, Tr::kThreads, Tr::kSmem, s>>>(kp);
    CUDA_LAUNCH_CHECK();
}

template <typename T>
void dispatch(const PrefillKernelParams& kp, const DevicePlan& plan, int head_dim, int bm, int bn, cudaStream_t s) {
    if (head_dim == 64) {
        if (bm == 128) launch<PrefillTraits<T, 64, 128>>(kp, plan, s);
        else launch<PrefillTraits<T, 64, 64>>(kp, plan, s);
    } else if (bm == 128) {
        if (bn == 32) launch<PrefillTraits<T, 128, 128, 32>>(kp, plan, s);
        else launch<PrefillTraits<T, 128, 128>>(kp, plan, s);
    } else {
        launch<PrefillTraits<T, 128, 64>>(kp, plan, s);
    }
}

// The environment's choice (ELASTIC_PREFILL_KERNEL=sm80|sm90), read once.
PrefillKernel env_kernel() {
    static const PrefillKernel k = [] {
        const char* e = std::getenv("ELASTIC_PREFILL_KERNEL");
        if (!e || !*e || std::string(e) == "auto") return PrefillKernel::Auto;
        if (std::string(e) == "sm80") return PrefillKernel::Sm80;
        if (std::string(e) == "sm90") return PrefillKernel::Sm90;
        fail("ELASTIC_PREFILL_KERNEL=%s: expected auto, sm80 or sm90", e);
    }();
    return k;
}

}  // namespace

bool hopper_prefill_available(DType t, int head_dim, const DevicePlan& plan) {
#ifdef ELASTIC_HAVE_SM90
    return sm90::supported(t, head_dim, plan);
#else
    (void)t, (void)head_dim, (void)plan;
    return false;
#endif
}

void hybrid_prefill(const HybridParams& p, cudaStream_t s) {
    ELASTIC_ASSERT(p.plan != nullptr);
    const DevicePlan& plan = *p.plan;
    ELASTIC_ASSERT(p.head_dim == 64 || p.head_dim == 128);
    ELASTIC_ASSERT(p.n_kv_head == plan.n_kv && p.n_head > 0 && p.n_head % p.n_kv_head == 0);
    ELASTIC_ASSERT(p.win.sink >= 0 && p.win.local >= 1);
    const int64_t d = p.head_dim;
    auto def = [](int64_t x, int64_t dflt) { return x ? x : dflt; };
    PrefillKernelParams kp{};
    kp.q = p.q;
    kp.k = p.k;
    kp.v = p.v;
    kp.out = p.out;
    kp.q_row = def(p.q_row_stride, p.n_head * d);
    kp.q_head = def(p.q_head_stride, d);
    kp.k_row = def(p.k_row_stride, p.n_kv_head * d);
    kp.k_head = def(p.k_head_stride, d);
    kp.v_row = def(p.v_row_stride, p.n_kv_head * d);
    kp.v_head = def(p.v_head_stride, d);
    kp.o_row = def(p.o_row_stride, p.n_head * d);
    kp.o_head = def(p.o_head_stride, d);
    for (int64_t x : {kp.q_row, kp.q_head, kp.k_row, kp.k_head, kp.v_row, kp.v_head, kp.o_row, kp.o_head})
        ELASTIC_ASSERT_MSG(x % 8 == 0, "strides must be multiples of 8 elements (16-byte copies)");
    for (const void* ptr : {p.q, p.k, p.v, static_cast<const void*>(p.out)})
        ELASTIC_ASSERT_MSG(ptr != nullptr && reinterpret_cast<uintptr_t>(ptr) % 16 == 0, "pointers 16-byte aligned");
    ELASTIC_ASSERT_MSG(p.dtype != DType::F32, "the tensor-core kernel takes bf16 or fp16 (fp32: attn_hybrid_prefill)");
    // The plan's part of the kernel parameters, with the work list for query tiles of bm rows.
    auto plan_fields = [&](int bm) {
        const LaunchConsts lc = launch_consts(p.win, plan, p.scale);
        build_items(plan, p.n_head, bm, lc.sink, lc.local, s);
        kp.cu_seqlens = p.cu_seqlens ? p.cu_seqlens : plan.d_cu;
        kp.meta = plan.d_meta;
        kp.xa_offsets = plan.d_xa_off;
        kp.xa_blocks = plan.d_xa_blocks;
        kp.items = plan.d_items;
        kp.n_items = plan.n_items;
        kp.counter = plan.d_counter;
        kp.n_kv_head = p.n_kv_head;
        kp.group = p.n_head / p.n_kv_head;
        kp.sink = lc.sink;
        kp.local = lc.local;
        kp.xa_block = lc.xa_block;
        kp.scale_log2 = lc.scale_log2;
    };
    const PrefillKernel want = p.kernel != PrefillKernel::Auto ? p.kernel : env_kernel();
    if (want != PrefillKernel::Sm80 && hopper_prefill_available(p.dtype, p.head_dim, plan)) {
#ifdef ELASTIC_HAVE_SM90
        plan_fields(128);
        sm90::hybrid_prefill(kp, p.dtype, p.head_dim, plan.h_cu.back(), p.n_head, plan, s);
        return;
#endif
    }
    ELASTIC_ASSERT_MSG(want != PrefillKernel::Sm90,
                       "the Hopper prefill kernel cannot take this launch (not built, not an sm_90 device, "
                       "fp32, head_dim not 64/128, or XA blocks not multiples of 128)");
    int bm = p.force_block_m ? p.force_block_m : auto_block_m(p.head_dim, plan);
    ELASTIC_ASSERT(bm == 64 || bm == 128);
    if (plan.has_xa) ELASTIC_ASSERT_MSG(plan.xa_block % bm == 0, "query tile must lie in one XA block");
    plan_fields(bm);
    // Key tiles: 64, or 32 for 128-row tiles at d 128 (half the S registers: no spills).
    const int bn = p.force_block_n ? p.force_block_n : auto_block_n(p.head_dim, bm);
    ELASTIC_ASSERT_MSG(bn == 64 || (bn == 32 && bm == 128 && p.head_dim == 128), "32-key tiles: d 128 with 128-row tiles only");
    if (p.dtype == DType::BF16) dispatch<__nv_bfloat16>(kp, plan, p.head_dim, bm, bn, s);
    else dispatch<__half>(kp, plan, p.head_dim, bm, bn, s);
}

void attn_hybrid_prefill(const void* q, const void* k, const void* v, void* out, DType t, int64_t T, int n_head,
                         int n_kv_head, int head_dim, const DevicePlan& plan, const StreamingWindow& win,
                         int64_t xa_block, float scale, cudaStream_t s, PrefillKernel kernel) {
    ELASTIC_ASSERT(plan.n_seq == 1 && plan.h_cu[1] == T);
    if (plan.has_xa) ELASTIC_ASSERT(plan.xa_block == xa_block);
    if (T == 0) return;
    ELASTIC_ASSERT(head_dim == 64 || head_dim == 128);
    ELASTIC_ASSERT(n_kv_head == plan.n_kv && n_head % n_kv_head == 0);
    if (t == DType::F32) {
        F32KernelParams kp{};
        kp.q = static_cast<const float*>(q);
        kp.k = static_cast<const float*>(k);
        kp.v = static_cast<const float*>(v);
        kp.out = static_cast<float*>(out);
        kp.L = int(T);
        kp.n_head = n_head;
        kp.n_kv_head = n_kv_head;
        kp.group = n_head / n_kv_head;
        kp.meta = plan.d_meta;
        kp.xa_offsets = plan.d_xa_off;
        kp.xa_blocks = plan.d_xa_blocks;
        const LaunchConsts lc = launch_consts(win, plan, scale);
        kp.sink = lc.sink;
        kp.local = lc.local;
        kp.xa_block = lc.xa_block;
        kp.scale_log2 = lc.scale_log2;
        const dim3 grid(unsigned((T + kF32Rows - 1) / kF32Rows), unsigned(n_head));
        if (head_dim == 64) prefill_f32_kernel<64><<<grid, 32 * kF32Warps, 0, s>>>(kp);
        else prefill_f32_kernel<128><<<grid, 32 * kF32Warps, 0, s>>>(kp);
        CUDA_LAUNCH_CHECK();
        return;
    }
    HybridParams p;
    p.dtype = t;
    p.q = q;
    p.k = k;
    p.v = v;
    p.out = out;
    p.n_head = n_head;
    p.n_kv_head = n_kv_head;
    p.head_dim = head_dim;
    p.scale = scale;
    p.win = win;
    p.plan = &plan;
    p.kernel = kernel;
    hybrid_prefill(p, s);
}

}  // namespace elastic::cuda
