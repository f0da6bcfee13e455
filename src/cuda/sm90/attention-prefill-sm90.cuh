#pragma once
// The Hopper (sm_90a) path of the fused hybrid prefill (DESIGN.md §1.5): the same work list, tile
// ranges and masks as the mma.sync kernel (attention-prefill-kernels.cuh, the sm_80 path and the
// reference of the tests), on the Hopper machinery, built on CuTe:
//   - a CTA is three warpgroups: one producer and two consumers. The producer's one elected thread
//     takes work items (sequence, query head, 128-row query tile) from the plan's atomic counter in
//     the host's order (most key tiles first), hands each to the consumers through a two-slot ring
//     in shared memory, and streams the item's Q tile and its mode's K and V tiles (FA every causal
//     tile, SSA the sink and window tiles, XA the listed blocks) into shared memory with TMA, each
//     stage guarded by a pair of mbarriers (full: bytes landed; empty: both consumers done);
//   - each consumer warpgroup owns 64 query rows: S = Q Kᵀ with wgmma (both operands in shared
//     memory, 128B-swizzled), the token-exact mask where the tile needs it, the online softmax in
//     base 2 on the accumulators, then O += P V with wgmma taking P from registers (the S
//     accumulator layout is the A-operand layout) and V from shared memory read as MN-major;
//   - K and V have separate barriers, so Q Kᵀ of a tile starts while its V is still in flight, and
//     the two consumers run independently: the softmax of one overlaps the GEMMs of the other;
//   - registers are moved from the producer (24) to the consumers (240) with setmaxnreg;
//   - persistent grid of one CTA per SM (160 KB of shared memory at d 128).
// Rows of a tile past the sequence end are computed and never stored; TMA zero-fills rows past the
// end of the packed tensor, and keys past the sequence end are masked.
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_types.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "cuda/attention-plan.cuh"
#include "cuda/attention-prefill-kernels.cuh"
#include "cuda/sm90/attention-sm90.h"

namespace elastic::cuda::sm90 {

namespace detail90 {

using namespace cute;
using detail::PrefillKernelParams;
using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
using EmptyBarrier = cutlass::arch::ClusterBarrier;

template <typename Element_, int D, int Stages_, int QBufs_, bool Overlap_>
struct Traits {
    using Element = Element_;
    static constexpr bool kOverlap = Overlap_;  // softmax of tile t under P V of tile t - 1
    static constexpr int kHeadDim = D;
    static constexpr int kBlockM = 128;  // two consumer warpgroups of 64 rows
    static constexpr int kBlockN = 128;
    static constexpr int kStages = Stages_;  // K/V pipeline depth
    static constexpr int kQBufs = QBufs_;    // 2: the next item's Q lands while this one runs
    static constexpr int kConsumerThreads = 256;
    static constexpr int kThreads = 384;
    using BM = Int<kBlockM>;
    using BN = Int<kBlockN>;
    using HD = Int<D>;
    // Q, K, V tiles: rows of D elements, 128B-swizzled K-major atoms (8 rows × 64 elements).
    using SmemLayoutQ = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<BM, HD, Int<kQBufs>>{}));
    using SmemLayoutKV = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<BN, HD, Int<kStages>>{}));
    // V read as the B operand of P V: (D, keys), D contiguous (MN-major), the same bytes.
    using SmemLayoutVt = decltype(composition(
        SmemLayoutKV{}, make_ordered_layout(Shape<HD, BN, Int<kStages>>{}, Step<_2, _1, _3>{})));
    using AtomLayout = Layout<Shape<_2, _1, _1>>;  // the two consumer warpgroups stacked on M
    using MmaQK = decltype(make_tiled_mma(
        GMMA::ss_op_selector<Element, Element, float, Shape<BM, BN, HD>>(), AtomLayout{}));
    using MmaPV = decltype(make_tiled_mma(
        GMMA::rs_op_selector<Element, Element, float, Shape<BM, HD, BN>, GMMA::Major::K, GMMA::Major::MN>(),
        AtomLayout{}));
    static constexpr uint32_t kBytesQ = kBlockM * D * sizeof(Element);
    static constexpr uint32_t kBytesKV = kBlockN * D * sizeof(Element);
};

// A work item as the producer decoded it, handed to the consumers in shared memory (they do not
// repeat the dependent global reads of the work list, cu_seqlens and the head's mode).
struct ItemInfo {
    int item;  // >= n_items: no more work
    int seq0, L, head, g, mode, m0, m1;
    detail::TileRange tr;
};

template <typename Tr>
struct SharedStorage {
    alignas(1024) cute::ArrayEngine<typename Tr::Element, cosize_v<typename Tr::SmemLayoutQ>> q;
    alignas(1024) cute::ArrayEngine<typename Tr::Element, cosize_v<typename Tr::SmemLayoutKV>> k;
    alignas(1024) cute::ArrayEngine<typename Tr::Element, cosize_v<typename Tr::SmemLayoutKV>> v;
    alignas(8) uint64_t q_full[Tr::kQBufs], q_empty[Tr::kQBufs];
    uint64_t k_full[Tr::kStages], k_empty[Tr::kStages], v_full[Tr::kStages], v_empty[Tr::kStages];
    uint64_t item_full[2], item_empty[2];
    ItemInfo info[2];
};

// Global tensors as TMA sees them: (rows of the packed batch, head_dim, heads), row stride given.
using GShape = Shape<int, int, int>;
using GStride = Stride<int64_t, _1, int64_t>;

template <typename Tr>
struct TmaTypes {
    using Element = typename Tr::Element;
    using GTensor = decltype(make_tensor(make_gmem_ptr(static_cast<const Element*>(nullptr)), GShape{}, GStride{}));
    using Q = decltype(make_tma_copy(SM90_TMA_LOAD{}, std::declval<GTensor>(), take<0, 2>(typename Tr::SmemLayoutQ{}),
                                     Shape<typename Tr::BM, typename Tr::HD>{}, _1{}));
    using KV = decltype(make_tma_copy(SM90_TMA_LOAD{}, std::declval<GTensor>(),
                                      take<0, 2>(typename Tr::SmemLayoutKV{}),
                                      Shape<typename Tr::BN, typename Tr::HD>{}, _1{}));
};

template <typename Tr>
struct Params {
    typename TmaTypes<Tr>::Q tma_q;
    typename TmaTypes<Tr>::KV tma_k, tma_v;
    PrefillKernelParams p;
    int total_rows, n_head;
};

// One warpgroup GEMM over the K extent of the fragments: C = A B (zero_init) or C += A B.
template <bool kZeroInit, typename Mma, typename TA, typename TB, typename TC>
__device__ __forceinline__ void wg_gemm(Mma& mma, const TA& a, const TB& b, TC& c) {
    warpgroup_fence_operand(c);
    warpgroup_arrive();
    if constexpr (kZeroInit) mma.accumulate_ = GMMA::ScaleOut::Zero;
    CUTE_UNROLL
    for (int kb = 0; kb < size<2>(a); ++kb) {
        cute::gemm(mma, a(_, _, kb), b(_, _, kb), c);
        mma.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
    warpgroup_fence_operand(c);
}

template <typename Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1) hybrid_prefill_sm90(const __grid_constant__ Params<Tr> prm) {
    using Element = typename Tr::Element;
    constexpr int BM = Tr::kBlockM, BN = Tr::kBlockN, D = Tr::kHeadDim, kStages = Tr::kStages;
    extern __shared__ char smem_raw[];
    auto& sh = *reinterpret_cast<SharedStorage<Tr>*>(smem_raw);
    const PrefillKernelParams& p = prm.p;

    Tensor sQ = make_tensor(make_smem_ptr(sh.q.begin()), typename Tr::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(sh.k.begin()), typename Tr::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(sh.v.begin()), typename Tr::SmemLayoutKV{});
    Tensor sVt = make_tensor(make_smem_ptr(sh.v.begin()), typename Tr::SmemLayoutVt{});

    const int warp = threadIdx.x / 32;
    if (threadIdx.x == 0) {
        for (int s = 0; s < Tr::kQBufs; ++s) {
            FullBarrier::init(&sh.q_full[s], 1);
            EmptyBarrier::init(&sh.q_empty[s], Tr::kConsumerThreads);
        }
        for (int s = 0; s < kStages; ++s) {
            FullBarrier::init(&sh.k_full[s], 1);
            FullBarrier::init(&sh.v_full[s], 1);
            EmptyBarrier::init(&sh.k_empty[s], Tr::kConsumerThreads);
            EmptyBarrier::init(&sh.v_empty[s], Tr::kConsumerThreads);
        }
        for (int s = 0; s < 2; ++s) {
            EmptyBarrier::init(&sh.item_full[s], 1);
            EmptyBarrier::init(&sh.item_empty[s], Tr::kConsumerThreads);
        }
        cutlass::arch::fence_barrier_init();
    }
    __syncthreads();

    if (warp < 4) {
        // ------------------------------------------------------------ producer warpgroup
        cutlass::arch::warpgroup_reg_dealloc<24>();
        if (warp != 0 || !cute::elect_one_sync()) return;
        Tensor mQ = prm.tma_q.get_tma_tensor(make_shape(prm.total_rows, D, prm.n_head));
        Tensor mK = prm.tma_k.get_tma_tensor(make_shape(prm.total_rows, D, p.n_kv_head));
        Tensor mV = prm.tma_v.get_tma_tensor(make_shape(prm.total_rows, D, p.n_kv_head));
        int kv_it = 0;
        for (int it = 0;; ++it) {
            const int slot = it & 1;
            EmptyBarrier::wait(&sh.item_empty[slot], ((it >> 1) & 1) ^ 1);
            const int item = atomicAdd(p.counter, 1);
            ItemInfo& in = sh.info[slot];
            in.item = item;
            if (item >= p.n_items) {
                EmptyBarrier::arrive(&sh.item_full[slot]);
                break;
            }
            const detail::WorkItem w = p.items[item];
            const int seq0 = p.cu_seqlens[w.seq];
            const int L = p.cu_seqlens[w.seq + 1] - seq0;
            const int g = w.head / p.group;
            const detail::HeadMeta hm = p.meta[w.seq * p.n_kv_head + g];
            const int m0 = w.tile * BM, m1 = min(m0 + BM, L);
            const detail::TileRange tr =
                detail::tile_range(hm.mode, m0, m1, BN, p.sink, p.local, p.xa_block, p.xa_offsets, hm.xa_base);
            in.seq0 = seq0;
            in.L = L;
            in.head = w.head;
            in.g = g;
            in.mode = hm.mode;
            in.m0 = m0;
            in.m1 = m1;
            in.tr = tr;
            EmptyBarrier::arrive(&sh.item_full[slot]);

            Tensor gQ = local_tile(domain_offset(make_coord(seq0 + m0, _0{}), mQ(_, _, w.head)), Shape<Int<BM>, Int<D>>{},
                                   make_coord(_0{}, _0{}));
            const int qb = it % Tr::kQBufs;
            auto [tQg, tQs] = tma_partition(prm.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ(_, _, qb)),
                                            group_modes<0, 2>(gQ));
            EmptyBarrier::wait(&sh.q_empty[qb], ((it / Tr::kQBufs) & 1) ^ 1);
            FullBarrier::arrive_and_expect_tx(&sh.q_full[qb], Tr::kBytesQ);
            copy(prm.tma_q.with(sh.q_full[qb]), tQg, tQs);

            Tensor gK = local_tile(domain_offset(make_coord(seq0, _0{}), mK(_, _, g)), Shape<Int<BN>, Int<D>>{},
                                   make_coord(_, _0{}));
            Tensor gV = local_tile(domain_offset(make_coord(seq0, _0{}), mV(_, _, g)), Shape<Int<BN>, Int<D>>{},
                                   make_coord(_, _0{}));
            auto [tKg, tKs] = tma_partition(prm.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
            auto [tVg, tVs] = tma_partition(prm.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));
            for (int t = 0; t < tr.count; ++t, ++kv_it) {
                const int n = detail::tile_at(tr, hm.mode, t, p.xa_blocks);
                const int stage = kv_it % kStages;
                const uint32_t phase = ((kv_it / kStages) & 1) ^ 1;
                EmptyBarrier::wait(&sh.k_empty[stage], phase);
                FullBarrier::arrive_and_expect_tx(&sh.k_full[stage], Tr::kBytesKV);
                copy(prm.tma_k.with(sh.k_full[stage]), tKg(_, n), tKs(_, stage));
                EmptyBarrier::wait(&sh.v_empty[stage], phase);
                FullBarrier::arrive_and_expect_tx(&sh.v_full[stage], Tr::kBytesKV);
                copy(prm.tma_v.with(sh.v_full[stage]), tVg(_, n), tVs(_, stage));
            }
        }
        return;
    }

    // ---------------------------------------------------------------- consumer warpgroups
    cutlass::arch::warpgroup_reg_alloc<240>();
    const int ctid = threadIdx.x - 128;  // 0..255: rows [0, 64) of the tile in warpgroup 0, [64, 128) in 1
    typename Tr::MmaQK mma_qk;
    typename Tr::MmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(ctid);
    auto thr_pv = mma_pv.get_thread_slice(ctid);
    Tensor tSrQ2 = thr_qk.partition_fragment_A(sQ);  // smem descriptors (MMA, MMA_M, MMA_K, Q buffer)
    Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stage)
    Tensor tOrVt = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stage)
    Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<BM>, Int<BN>>{});
    Tensor tOrO = partition_fragment_C(mma_pv, Shape<Int<BM>, Int<D>>{});
    // Tile coordinates of accumulator element v of this thread (CuTe's CLayout_64xN of the SM90
    // GMMA atoms: v = column bit + 2 · row half + 4 · column octet; thread t of a warpgroup has rows
    // t/4 mod 8 + 16 · (t/32) (+ 8) and columns 2 · (t mod 4) (+ 1) of each octet). Computed, not
    // held in registers.
    const int row0 = 64 * (ctid / 128) + 16 * ((ctid % 128) / 32) + (ctid % 32) / 4, col0 = 2 * (ctid % 4);
    auto acc_row = [&](int v) { return row0 + 8 * ((v >> 1) & 1); };
    auto acc_col = [&](int v) { return col0 + (v & 1) + 8 * (v >> 2); };
    // P in the A-operand register layout of the P V wgmma: the S accumulators in their own order
    // ((2 columns, 2 row halves, 2 key octets), k16 steps).
    Tensor tOrP = make_tensor<Element>(Layout<Shape<Shape<_2, _2, _2>, _1, Int<BN / 16>>>{});
    static_assert(decltype(size(tSrS))::value == BM * BN / 256, "64 rows × BN keys per warpgroup");
    static_assert(decltype(size(tOrP))::value == decltype(size(tSrS))::value, "P is S, converted");
    static_assert(decltype(size(tOrO))::value == BM * D / 256, "64 rows × D per warpgroup");
    constexpr int kNS = decltype(size(tSrS))::value, kNO = decltype(size(tOrO))::value;

    int kv_it = 0;
    for (int it = 0;; ++it) {
        const int slot = it & 1;
        EmptyBarrier::wait(&sh.item_full[slot], (it >> 1) & 1);
        const ItemInfo in = sh.info[slot];
        EmptyBarrier::arrive(&sh.item_empty[slot]);
        if (in.item >= p.n_items) break;
        const int seq0 = in.seq0, L = in.L, mode = in.mode, m0 = in.m0, m1 = in.m1;
        const detail::TileRange tr = in.tr;
        const int qb = it % Tr::kQBufs;
        const uint32_t qphase = (it / Tr::kQBufs) & 1;
        auto tSrQ = tSrQ2(_, _, _, qb);

        float row_m[2] = {-INFINITY, -INFINITY}, row_l[2] = {0.0f, 0.0f};
        clear(tOrO);
        FullBarrier::wait(&sh.q_full[qb], qphase);
        // Mask, online softmax of the tile in tSrS (keys from n0), P in tOrP; returns the factors
        // that rescale O's rows. Element v of the accumulators is in row half (v >> 1) & 1 of this
        // thread; a row's keys are spread over the 4 threads of a quad.
        auto softmax = [&](int n0, float (&alpha)[2]) {
            if (detail::tile_needs_mask(mode, m0, BM, n0, BN, L, p.sink, p.local)) {
                CUTE_UNROLL
                for (int v = 0; v < kNS; ++v) {
                    const int i = m0 + acc_row(v), j = n0 + acc_col(v);
                    if (!detail::tile_visible(mode, i, j, L, p.sink, p.local)) tSrS(v) = -INFINITY;
                }
            }
            float mx[2] = {row_m[0], row_m[1]}, ms[2], sum[2] = {0.0f, 0.0f};
            CUTE_UNROLL
            for (int v = 0; v < kNS; ++v) mx[(v >> 1) & 1] = fmaxf(mx[(v >> 1) & 1], tSrS(v));
            CUTE_UNROLL
            for (int h = 0; h < 2; ++h) {
                mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
                mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
                ms[h] = mx[h] == -INFINITY ? 0.0f : mx[h] * p.scale_log2;  // no (-inf) - (-inf)
                alpha[h] = exp2f(row_m[h] * p.scale_log2 - ms[h]);
                row_m[h] = mx[h];
            }
            CUTE_UNROLL
            for (int v = 0; v < kNS; ++v) {
                const int h = (v >> 1) & 1;
                const float e = exp2f(fmaf(tSrS(v), p.scale_log2, -ms[h]));
                tSrS(v) = e;
                sum[h] += e;
            }
            row_l[0] = row_l[0] * alpha[0] + sum[0];  // per-thread partial sums, reduced at the end
            row_l[1] = row_l[1] * alpha[1] + sum[1];
        };
        auto rescale_o = [&](const float (&alpha)[2]) {
            CUTE_UNROLL
            for (int v = 0; v < kNO; ++v) tOrO(v) *= alpha[(v >> 1) & 1];
        };
        auto make_p = [&] {
            CUTE_UNROLL
            for (int v = 0; v < kNS; ++v) tOrP(v) = static_cast<Element>(tSrS(v));
        };
        auto stage_of = [&](int x) { return x % kStages; };
        auto phase_of = [&](int x) { return uint32_t((x / kStages) & 1); };

        if constexpr (!Tr::kOverlap) {
            for (int t = 0; t < tr.count; ++t, ++kv_it) {
                const int n0 = detail::tile_at(tr, mode, t, p.xa_blocks) * BN;
                const int stage = stage_of(kv_it);
                FullBarrier::wait(&sh.k_full[stage], phase_of(kv_it));
                wg_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, stage), tSrS);
                warpgroup_wait<0>();
                EmptyBarrier::arrive(&sh.k_empty[stage]);
                if (t + 1 == tr.count) EmptyBarrier::arrive(&sh.q_empty[qb]);  // Q is free for the next item
                float alpha[2];
                softmax(n0, alpha);
                rescale_o(alpha);
                make_p();
                FullBarrier::wait(&sh.v_full[stage], phase_of(kv_it));
                warpgroup_fence_operand(tOrP);
                wg_gemm<false>(mma_pv, tOrP, tOrVt(_, _, _, stage), tOrO);
                warpgroup_wait<0>();
                EmptyBarrier::arrive(&sh.v_empty[stage]);
            }
        } else if (tr.count > 0) {
            // The softmax of tile t runs while the tensor cores do P V of tile t - 1:
            //   S_t = Q K_tᵀ and O += P_{t-1} V_{t-1} are issued back to back, the wait for S_t
            //   lets P V run on; O is rescaled (and P rewritten) only after P V has finished.
            int stage = stage_of(kv_it);
            FullBarrier::wait(&sh.k_full[stage], phase_of(kv_it));
            wg_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, stage), tSrS);
            warpgroup_wait<0>();
            EmptyBarrier::arrive(&sh.k_empty[stage]);
            if (tr.count == 1) EmptyBarrier::arrive(&sh.q_empty[qb]);
            {
                float alpha[2];
                softmax(detail::tile_at(tr, mode, 0, p.xa_blocks) * BN, alpha);
                make_p();  // O is zero: no rescale
            }
            for (int t = 1; t < tr.count; ++t) {
                const int prev = kv_it++;
                stage = stage_of(kv_it);
                const int pstage = stage_of(prev);
                FullBarrier::wait(&sh.k_full[stage], phase_of(kv_it));
                wg_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, stage), tSrS);
                FullBarrier::wait(&sh.v_full[pstage], phase_of(prev));
                warpgroup_fence_operand(tOrP);
                wg_gemm<false>(mma_pv, tOrP, tOrVt(_, _, _, pstage), tOrO);
                warpgroup_wait<1>();  // S_t is ready; P V of t - 1 may still run
                EmptyBarrier::arrive(&sh.k_empty[stage]);
                if (t + 1 == tr.count) EmptyBarrier::arrive(&sh.q_empty[qb]);
                float alpha[2];
                softmax(detail::tile_at(tr, mode, t, p.xa_blocks) * BN, alpha);
                warpgroup_wait<0>();
                EmptyBarrier::arrive(&sh.v_empty[pstage]);
                rescale_o(alpha);
                make_p();
            }
            stage = stage_of(kv_it);
            FullBarrier::wait(&sh.v_full[stage], phase_of(kv_it));
            warpgroup_fence_operand(tOrP);
            wg_gemm<false>(mma_pv, tOrP, tOrVt(_, _, _, stage), tOrO);
            warpgroup_wait<0>();
            EmptyBarrier::arrive(&sh.v_empty[stage]);
            ++kv_it;
        }
        if (tr.count == 0) EmptyBarrier::arrive(&sh.q_empty[qb]);

        // Epilogue: O / l, two adjacent columns per store, rows inside the sequence only.
        float inv[2];
        CUTE_UNROLL
        for (int h = 0; h < 2; ++h) {
            float l = row_l[h];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            inv[h] = l > 0.0f ? 1.0f / l : 0.0f;
        }
        Element* og = static_cast<Element*>(p.out) + int64_t(seq0) * p.o_row + int64_t(in.head) * p.o_head;
        CUTE_UNROLL
        for (int v = 0; v < kNO; v += 2) {
            const int r = acc_row(v), c = acc_col(v);
            if (m0 + r < m1) {
                const int h = (v >> 1) & 1;
                Element pair[2] = {static_cast<Element>(tOrO(v) * inv[h]), static_cast<Element>(tOrO(v + 1) * inv[h])};
                *reinterpret_cast<uint32_t*>(og + int64_t(m0 + r) * p.o_row + c) = *reinterpret_cast<uint32_t*>(pair);
            }
        }
    }
}

template <typename Tr>
void launch(const PrefillKernelParams& kp, int total_rows, int n_head, const DevicePlan& plan, cudaStream_t s) {
    using Element = typename Tr::Element;
    constexpr int D = Tr::kHeadDim;
    auto kernel = hybrid_prefill_sm90<Tr>;
    constexpr int kSmem = int(sizeof(SharedStorage<Tr>));
    const void* id = reinterpret_cast<const void*>(kernel);
    if (plan.launch_kernel != id) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
        plan.launch_kernel = id;
        plan.launch_ctas = detail::device_sm_count();  // one CTA per SM (shared memory and registers)
    }
    if (kp.n_items == 0) return;
    auto gtensor = [&](const void* ptr, int heads, int64_t row, int64_t head) {
        return make_tensor(make_gmem_ptr(static_cast<const Element*>(ptr)), GShape{total_rows, D, heads},
                           GStride{row, _1{}, head});
    };
    Params<Tr> prm{
        make_tma_copy(SM90_TMA_LOAD{}, gtensor(kp.q, n_head, kp.q_row, kp.q_head), take<0, 2>(typename Tr::SmemLayoutQ{}),
                      Shape<typename Tr::BM, typename Tr::HD>{}, _1{}),
        make_tma_copy(SM90_TMA_LOAD{}, gtensor(kp.k, kp.n_kv_head, kp.k_row, kp.k_head),
                      take<0, 2>(typename Tr::SmemLayoutKV{}), Shape<typename Tr::BN, typename Tr::HD>{}, _1{}),
        make_tma_copy(SM90_TMA_LOAD{}, gtensor(kp.v, kp.n_kv_head, kp.v_row, kp.v_head),
                      take<0, 2>(typename Tr::SmemLayoutKV{}), Shape<typename Tr::BN, typename Tr::HD>{}, _1{}),
        kp, total_rows, n_head};
    const int grid = std::min(kp.n_items, plan.launch_ctas);
    CUDA_CHECK(cudaMemsetAsync(kp.counter, 0, sizeof(int), s));
    kernel<<<grid, Tr::kThreads, kSmem, s>>>(prm);
    CUDA_LAUNCH_CHECK();
}

// Every instance of one element type (attention-prefill-sm90-{bf16,f16}.cu: two translation units
// that compile in parallel).
template <typename E>
void launch_type(const PrefillKernelParams& kp, int head_dim, Variant variant, int total_rows, int n_head,
                 const DevicePlan& plan, cudaStream_t s) {
    auto by_dim = [&](auto tr128, auto tr64) {
        if (head_dim == 128) launch<decltype(tr128)>(kp, total_rows, n_head, plan, s);
        else launch<decltype(tr64)>(kp, total_rows, n_head, plan, s);
    };
    switch (variant) {
    case Variant::Overlap:  // d 128: 2 × 32 KB of Q + 2 × 64 KB of K/V; d 64: 2 × 16 + 4 × 32
        by_dim(Traits<E, 128, 2, 2, true>{}, Traits<E, 64, 4, 2, true>{});
        break;
    case Variant::Deep:  // one Q buffer, one more K/V stage (d 128: 32 + 3 × 64 KB)
        by_dim(Traits<E, 128, 3, 1, true>{}, Traits<E, 64, 5, 1, true>{});
        break;
    case Variant::Simple:
        by_dim(Traits<E, 128, 2, 2, false>{}, Traits<E, 64, 4, 2, false>{});
        break;
    }
}

}  // namespace detail90
}  // namespace elastic::cuda::sm90
