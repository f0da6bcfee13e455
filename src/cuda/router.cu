// The router of a layer on the device (DESIGN.md §1.1; src/attention/router.cpp is the reference).
// Two paths, ELASTIC_ROUTER_KERNEL picks (default fused: 0.0196 ms per layer queued, 0.0182
// replayed from a graph, against 0.1798 for cuBLAS, H100, 2026-12-06; end to end on the Qwen3-8B
// shape at 32K, 2026-12-05, the same Ω_MSR and Ω_ESR as the cuBLAS path):
//  fused   one launch per layer (router_fused_kernel): boundary pooling of the pre-RoPE keys (fp64
//          sums, as router_pool) and the five Linear layers (fp32 FMA, bias, SiLU) for all KV heads,
//          the activations in shared memory. On sm_90 the CTAs of one thread-block cluster (16 by
//          default, ELASTIC_ROUTER_CLUSTER; halved until the device holds one) share one group of up
//          to 8 heads: each pools 1/C of the key columns and computes 1/C of every layer's output
//          neurons (its weight rows asked of the L2 at the start), which it writes into the shared
//          memory of every CTA of the cluster (DSMEM), so each SM reads only 1/C of the ~1 MiB of
//          weights. The hand-off after each layer (ELASTIC_ROUTER_SYNC): st.async counted on the
//          receiver's mbarrier for that layer (default), so a CTA waits only until its own copy of
//          the layer is whole, its next weights already asked for; or plain stores and a cluster
//          barrier. Before sm_90 (or with cluster 1) one CTA per group of 8 heads does everything.
//          Tried and dropped (2026-12-06, H100): staging each CTA's weight slices in shared memory
//          with cp.async (0.0258 against 0.0240 ms graph-replayed at cluster 16: the copies slowed
//          the pooling and no layer got faster) and a reduce-scatter of a warp's partial sums in
//          place of the butterfly (slower at every cluster size).
//  cublas  the previous path: a pooling kernel, then the five Linear layers as fp32 cuBLAS GEMMs
//          (no TF32) each followed by a bias (+ SiLU) kernel (11 launches).
// router_logits copies only the logits [n_kv_head, rh4.out] back (one copy, into pinned memory
// when the caller has some), where Router::decision turns them into modes. A prefill routed on the
// device (Backend::route_prefill) instead queues router_decide after either path: the decision and
// the modes written into the device plan the prefill kernel reads, and a small record copied back
// that the host waits for only once that layer's attention is queued. No key row leaves the GPU.
#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/attention-common.cuh"
#include "cuda/cuda-check.h"
#include "cuda/convert.cuh"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

// ---- the cuBLAS path ------------------------------------------------------------------------

// x[i] = mean of k[t * n + i] over t in [0, head_end) then [tail_begin, T) (both ranges, overlap
// twice). A block owns 32 columns; its 8 warps split the (≤ 2 × window) rows, so each thread issues
// a handful of coalesced loads instead of one long dependent chain, then sum in shared memory.
constexpr int kPoolCols = 32, kPoolGroups = 8;
template <typename TK>
__global__ void __launch_bounds__(kPoolCols * kPoolGroups)
    router_pool_kernel(const TK* __restrict__ k, int64_t T, int n, int64_t head_end, int64_t tail_begin,
                       float* __restrict__ x) {
    __shared__ double part[kPoolGroups][kPoolCols];
    const int c = threadIdx.x % kPoolCols, g = threadIdx.x / kPoolCols;
    const int i = int(blockIdx.x) * kPoolCols + c;
    const int64_t rows = head_end + (T - tail_begin);
    double acc = 0.0;
    if (i < n)
        for (int64_t r = g; r < rows; r += kPoolGroups) {
            const int64_t t = r < head_end ? r : tail_begin + (r - head_end);
            acc += to_f32(k[t * n + i]);
        }
    part[g][c] = acc;
    __syncthreads();
    if (g == 0 && i < n) {
        double s = 0.0;
        for (int j = 0; j < kPoolGroups; ++j) s += part[j][c];
        x[i] = float(s / double(rows));
    }
}

// y[r, o] += b[o], then SiLU when act.
__global__ void bias_act_kernel(float* y, const float* __restrict__ b, int rows, int out, bool act) {
    const int i = int(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * out) return;
    float v = y[i] + b[i % out];
    if (act) v = v / (1.0f + expf(-v));
    y[i] = v;
}

constexpr bool kAct[5] = {true, false, true, true, false};  // fe0 SiLU, fe2, rh0 SiLU, rh2 SiLU, rh4

// ---- the fused path -------------------------------------------------------------------------

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kGroupHeads = 8;  // heads per cluster (or per CTA without clusters)

struct FusedArgs {
    RouterLinearDev L[5];
    const void* k;
    int64_t row_stride;  // elements between key rows: n_kv_head * head_dim
    int64_t head_end, tail_begin, rows;
    int n_kv_head, head_dim, cluster;
    float* logits;  // [n_kv_head, L[4].out], device
    unsigned long long* trace;  // null, or [grid][kRouterStamps] %globaltimer stamps (ELASTIC_ROUTER_TRACE)
};

// Trace stamps per CTA (ELASTIC_ROUTER_TRACE=1, measurements only): entry, weights asked of the L2,
// keys pooled (past the barrier), then each of the five layers done (past its barrier).
constexpr int kRouterStamps = 8;
__device__ __forceinline__ void router_stamp(unsigned long long* trace, int i) {
    if (trace && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        trace[size_t(blockIdx.x) * kRouterStamps + i] = t;
    }
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define ELASTIC_ROUTER_HAS_CLUSTER 1
__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// *p = v in the shared memory of CTA `rank` of the cluster (p: this CTA's address of the slot).
// The shared::cluster address of p (this CTA's address of a shared-memory slot) in CTA `rank`.
__device__ __forceinline__ unsigned cluster_addr(const void* p, unsigned rank) {
    unsigned ra;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(detail::smem_u32(p)), "r"(rank));
    return ra;
}
__device__ __forceinline__ void st_rank(float* p, unsigned rank, float v) {
    const unsigned ra = cluster_addr(p, rank);
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(ra), "f"(v) : "memory");
}
#else
__device__ __forceinline__ void cluster_arrive_relaxed() { __trap(); }
__device__ __forceinline__ void cluster_wait() { __trap(); }
__device__ __forceinline__ void cluster_sync() { __trap(); }
__device__ __forceinline__ void st_rank(float*, unsigned, float) { __trap(); }
#endif

// *p = v in every CTA of the cluster (cluster > 1) or in this one.
__device__ __forceinline__ void store_all(float* p, float v, int cluster) {
    if (cluster == 1) *p = v;
    else
        for (int r = 0; r < cluster; ++r) st_rank(p, unsigned(r), v);
}
__device__ __forceinline__ void barrier_all(int cluster) {
    if (cluster == 1) __syncthreads();
    else cluster_sync();
}

// Hopper's one-way cluster hand-off (ELASTIC_ROUTER_SYNC=mbarrier): st.async writes a value into
// another CTA's shared memory and counts its bytes on that CTA's mbarrier, so the receiver waits on
// its own barrier for the bytes it expects instead of every CTA meeting at a cluster barrier.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
using detail::smem_u32;
__device__ __forceinline__ void mbar_init(uint64_t* bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// Until phase 0 of *bar completes; acquire at cluster scope (the st.async bytes come from other SMs).
__device__ __forceinline__ void mbar_wait0(uint64_t* bar) {
    asm volatile(
        "{\n\t.reg .pred p;\n"
        "WAIT_%=:\n\t"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%0], 0;\n\t"
        "@!p bra WAIT_%=;\n\t}" ::"r"(smem_u32(bar))
        : "memory");
}
__device__ __forceinline__ void st_async1(float* p, unsigned rank, float v, uint64_t* bar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];" ::"r"(cluster_addr(p, rank)),
                 "f"(v), "r"(cluster_addr(bar, rank))
                 : "memory");
}
__device__ __forceinline__ void st_async4(float* p, unsigned rank, float v0, float v1, float v2, float v3, uint64_t* bar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(
                     cluster_addr(p, rank)),
                 "f"(v0), "f"(v1), "f"(v2), "f"(v3), "r"(cluster_addr(bar, rank))
                 : "memory");
}
#else
__device__ __forceinline__ void mbar_init(uint64_t*) { __trap(); }
__device__ __forceinline__ void mbar_arrive_expect(uint64_t*, unsigned) { __trap(); }
__device__ __forceinline__ void mbar_fence_init() { __trap(); }
__device__ __forceinline__ void mbar_wait0(uint64_t*) { __trap(); }
__device__ __forceinline__ void st_async1(float*, unsigned, float, uint64_t*) { __trap(); }
__device__ __forceinline__ void st_async4(float*, unsigned, float, float, float, float, uint64_t*) { __trap(); }
#endif

// Output neurons [o0, o1) of L for the group's Hg heads: x [Hg, L.in] (shared) -> y [Hg, L.out]
// (shared, in every CTA of the cluster) or out_global [Hg, L.out] (device). A warp takes NB
// neurons at a time: each lane reads float4 slices of the NB weight rows (coalesced, read once per
// CTA) and of each head's input row (shared; reused NB times), fp32 FMAs, then a butterfly over
// the warp; lane n * 8 + h holds neuron n of head h. Then either (bar_out null) it stores that
// value into every CTA and the caller meets the others at a barrier, or (MBAR) the warp sends its
// NB * 8 values with st.async to every CTA, whose bar_out counts the bytes; a float4 of 4
// neighbouring neurons of one head at a time when the block is whole and aligned. MBAR: x is
// complete once bar_in (null: already) completes, waited on after the first weights are asked for.
template <int NB, bool MBAR>
__device__ __forceinline__ void linear_part(const RouterLinearDev& L, const float* __restrict__ x, float* y,
                                            float* out_global, int o0, int o1, int Hg, bool act, int cluster,
                                            uint64_t* bar_in, uint64_t* bar_out, unsigned long long* trace, int stamp) {
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    bool wait = MBAR && bar_in != nullptr;
    auto wait_input = [&] {
        mbar_wait0(bar_in);
        router_stamp(trace, stamp);
        wait = false;
    };
    for (int ob = o0 + warp * NB; ob < o1; ob += kWarps * NB) {
        float acc[NB][kGroupHeads];
#pragma unroll
        for (int n = 0; n < NB; ++n)
#pragma unroll
            for (int h = 0; h < kGroupHeads; ++h) acc[n][h] = 0.0f;
        const float* wr[NB];
#pragma unroll
        for (int n = 0; n < NB; ++n) wr[n] = L.w + size_t(min(ob + n, o1 - 1)) * size_t(L.in);  // past o1: discarded
#pragma unroll 4  // the 8B shape's 512-wide rows: all four float4 loads of a lane in flight at once
        for (int i = lane * 4; i < L.in; i += 128) {
            float4 w[NB];
#pragma unroll
            for (int n = 0; n < NB; ++n) w[n] = __ldg(reinterpret_cast<const float4*>(wr[n] + i));
            if (MBAR && wait) wait_input();  // the loads above are in flight while this waits
#pragma unroll
            for (int h = 0; h < kGroupHeads; ++h) {
                if (h >= Hg) break;
                const float4 xv = *reinterpret_cast<const float4*>(x + size_t(h) * L.in + i);
#pragma unroll
                for (int n = 0; n < NB; ++n) {
                    float a = acc[n][h];
                    a = fmaf(w[n].x, xv.x, a);
                    a = fmaf(w[n].y, xv.y, a);
                    a = fmaf(w[n].z, xv.z, a);
                    a = fmaf(w[n].w, xv.w, a);
                    acc[n][h] = a;
                }
            }
        }
        float mine = 0.0f;
#pragma unroll
        for (int n = 0; n < NB; ++n)
#pragma unroll
            for (int h = 0; h < kGroupHeads; ++h) {
                float v = acc[n][h];
#pragma unroll
                for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
                if (lane == n * kGroupHeads + h) mine = v;
            }
        const int n = lane / kGroupHeads, h = lane % kGroupHeads, o = ob + n;
        const bool valid = n < NB && o < o1 && h < Hg;
        if (valid) {
            mine += __ldg(L.b + o);
            if (act) mine = mine / (1.0f + expf(-mine));
        }
        if (out_global) {
            if (valid) out_global[size_t(h) * L.out + o] = mine;
        } else if (!MBAR) {
            if (valid) store_all(y + size_t(h) * L.out + o, mine, cluster);
        } else if (NB == 4 && ob + 4 <= o1 && ob % 4 == 0 && L.out % 4 == 0) {
            // Lane l: head l % 8's four neurons, to ranks l / 8, l / 8 + 4, ...
            const int hh = lane & 7;
            const float v0 = __shfl_sync(0xffffffffu, mine, hh), v1 = __shfl_sync(0xffffffffu, mine, 8 + hh);
            const float v2 = __shfl_sync(0xffffffffu, mine, 16 + hh), v3 = __shfl_sync(0xffffffffu, mine, 24 + hh);
            if (hh < Hg)
                for (int r = lane >> 3; r < cluster; r += 4) st_async4(y + size_t(hh) * L.out + ob, unsigned(r), v0, v1, v2, v3, bar_out);
        } else {
            // Lane l: value l % (NB * 8), to ranks l / (NB * 8), + 32 / (NB * 8), ...
            constexpr int kVals = NB * kGroupHeads, kStep = 32 / kVals;
            const int vi = lane % kVals, vn = vi / kGroupHeads, vh = vi % kGroupHeads, vo = ob + vn;
            const float v = __shfl_sync(0xffffffffu, mine, vi);
            if (vo < o1 && vh < Hg)
                for (int r = lane / kVals; r < cluster; r += kStep) st_async1(y + size_t(vh) * L.out + vo, unsigned(r), v, bar_out);
        }
    }
    if (MBAR && wait) wait_input();  // no neuron here: still wait, so that x is complete before the CTA moves on
}

// Shared memory of the fused kernel, in floats from its start: the pooled keys [8, head_dim] at 0,
// then each of layers 0-3's outputs [8, out] (each its own buffer, so no layer writes where another
// is still read; act_floats apart), then the pooling's fp64 partial sums, then five mbarriers
// (pooled keys, layers 0-3).
__host__ __device__ __forceinline__ int act_floats(int width) { return kGroupHeads * ((width + 3) / 4 * 4); }
struct FusedSmem {
    int part;  // float offset of the doubles (8-byte aligned)
    int bars;  // float offset of the mbarriers
    size_t bytes;
};
__host__ __device__ inline FusedSmem fused_smem(const RouterLinearDev (&layers)[5], int head_dim) {
    FusedSmem s{};
    int off = act_floats(head_dim);
    for (int l = 0; l < 4; ++l) off += act_floats(layers[l].out);
    s.part = (off + 1) / 2 * 2;
    s.bars = s.part + kThreads * 8 * 2;
    s.bytes = size_t(s.bars) * sizeof(float) + 5 * sizeof(uint64_t);
    return s;
}

// One CTA (cluster 1) or one cluster of `cluster` CTAs per group of kGroupHeads KV heads. MBAR
// (cluster > 1 only): the pooled keys and layers 0-3 are handed over with st.async and an mbarrier
// each instead of a cluster barrier after each step.
template <typename TK, bool MBAR>
__global__ void __launch_bounds__(kThreads) router_fused_kernel(const FusedArgs a) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float* const sm = reinterpret_cast<float*>(smem_raw);
    const FusedSmem S = fused_smem(a.L, a.head_dim);
    double* part = reinterpret_cast<double*>(sm + S.part);
    uint64_t* bars = reinterpret_cast<uint64_t*>(sm + S.bars);
    const int C = a.cluster;
    const int rank = int(blockIdx.x) % C, g = int(blockIdx.x) / C;
    const int h0 = g * kGroupHeads, Hg = min(kGroupHeads, a.n_kv_head - h0);
    router_stamp(a.trace, 0);
    if (MBAR && threadIdx.x == 0) {
        // bars[0] expects the group's pooled keys, bars[l + 1] layer l's whole output, each from
        // all the cluster's CTAs.
        mbar_init(&bars[0]);
        mbar_arrive_expect(&bars[0], unsigned(Hg * a.head_dim) * unsigned(sizeof(float)));
        for (int l = 0; l < 4; ++l) {
            mbar_init(&bars[l + 1]);
            mbar_arrive_expect(&bars[l + 1], unsigned(Hg * a.L[l].out) * unsigned(sizeof(float)));
        }
        mbar_fence_init();
    }
    if (C > 1) cluster_arrive_relaxed();  // the wait before the first store into another CTA

    // The weights do not depend on the keys: ask the L2 for this CTA's rows of all five layers now,
    // so the layers below find them there (~0.2 µs a round trip) rather than in DRAM (~0.6 µs+).
#pragma unroll 1
    for (int l = 0; l < 5; ++l) {
        const RouterLinearDev& L = a.L[l];
        const int per = (L.out + C - 1) / C, o0 = min(L.out, rank * per), o1 = min(L.out, o0 + per);
        const char* w = reinterpret_cast<const char*>(L.w + size_t(o0) * L.in);
        const size_t bytes = size_t(o1 - o0) * size_t(L.in) * sizeof(float);
        for (size_t off = size_t(threadIdx.x) * 128; off < bytes; off += size_t(kThreads) * 128)
            asm volatile("prefetch.global.L2 [%0];" ::"l"(w + off));
        if (threadIdx.x == 0 && o1 > o0) asm volatile("prefetch.global.L2 [%0];" ::"l"(L.b + o0));
    }
    router_stamp(a.trace, 1);

    // Pooling: this CTA's 16-byte column chunks of the group's [Hg * d] columns; a tile of nt
    // chunks × (kThreads / nt) row groups, fp64 sums per thread, then over the row groups in
    // shared memory. Group-local column h * d + i is also the index of x[h, i] in the pooled buffer
    // (its rows are d apart: d is a multiple of 8).
    float* const pooled = sm;
    constexpr int VEC = 16 / int(sizeof(TK));
    const int nch = Hg * a.head_dim / VEC;
    const int c0 = int(int64_t(rank) * nch / C), c1 = int(int64_t(rank + 1) * nch / C), mine = c1 - c0;
    const TK* kg = static_cast<const TK*>(a.k) + int64_t(h0) * a.head_dim;
    bool waited = false;
    for (int tb = 0; tb < mine; tb += kThreads) {
        const int nt = min(kThreads, mine - tb), groups = kThreads / nt;
        const int c = int(threadIdx.x) % nt, rg = int(threadIdx.x) / nt;
        if (rg < groups) {
            double acc[VEC];
#pragma unroll
            for (int j = 0; j < VEC; ++j) acc[j] = 0.0;
            const TK* col = kg + int64_t(c0 + tb + c) * VEC;
#pragma unroll 8
            for (int64_t r = rg; r < a.rows; r += groups) {
                const int64_t t = r < a.head_end ? r : a.tail_begin + (r - a.head_end);
                const uint4 v = __ldg(reinterpret_cast<const uint4*>(col + t * a.row_stride));
                const TK* e = reinterpret_cast<const TK*>(&v);
#pragma unroll
                for (int j = 0; j < VEC; ++j) acc[j] += double(to_f32(e[j]));
            }
#pragma unroll
            for (int j = 0; j < VEC; ++j) part[(rg * nt + c) * VEC + j] = acc[j];
        }
        __syncthreads();
        if (C > 1 && !waited) {
            cluster_wait();
            waited = true;
        }
        for (int e = int(threadIdx.x); e < nt * VEC; e += kThreads) {
            const int cc = e / VEC, j = e % VEC;
            double s = 0.0;
            for (int q = 0; q < groups; ++q) s += part[(q * nt + cc) * VEC + j];
            const float v = float(s / double(a.rows));
            if (MBAR)
                for (int r = 0; r < C; ++r) st_async1(pooled + (c0 + tb + cc) * VEC + j, unsigned(r), v, &bars[0]);
            else store_all(pooled + (c0 + tb + cc) * VEC + j, v, C);
        }
        __syncthreads();  // part is reused by the next tile
    }
    if (C > 1 && !waited) cluster_wait();
    if (!MBAR) {
        barrier_all(C);  // the pooled keys of the group are in every CTA
        router_stamp(a.trace, 2);
    }

    int xoff = 0, xw = a.head_dim;  // layer l's input and its width
#pragma unroll 1
    for (int l = 0; l < 5; ++l) {
        const RouterLinearDev& L = a.L[l];
        const bool act = l == 0 || l == 2 || l == 3;  // kAct
        const int per = (L.out + C - 1) / C, o0 = min(L.out, rank * per), o1 = min(L.out, o0 + per);
        float* out_global = l == 4 ? a.logits + size_t(h0) * L.out : nullptr;
        const int yoff = xoff + act_floats(xw);
        const float* x = sm + xoff;
        float* y = l < 4 ? sm + yoff : nullptr;
        xoff = yoff;
        xw = L.out;
        uint64_t* bar_in = MBAR ? &bars[l] : nullptr;
        uint64_t* bar_out = MBAR && l < 4 ? &bars[l + 1] : nullptr;
        const int n = o1 - o0;
        if (n >= kWarps * 4) linear_part<4, MBAR>(L, x, y, out_global, o0, o1, Hg, act, C, bar_in, bar_out, a.trace, 2 + l);
        else if (n >= kWarps * 2) linear_part<2, MBAR>(L, x, y, out_global, o0, o1, Hg, act, C, bar_in, bar_out, a.trace, 2 + l);
        else linear_part<1, MBAR>(L, x, y, out_global, o0, o1, Hg, act, C, bar_in, bar_out, a.trace, 2 + l);
        if (!MBAR) {
            if (l < 4) barrier_all(C);  // also: no CTA leaves while another may still store into it
            router_stamp(a.trace, 3 + l);
        }
    }
    if (MBAR) {
        // No CTA leaves while another may still store into it: every byte sent to this one is here
        // once its five barriers complete (a CTA without neurons in a layer has not waited yet).
        if (threadIdx.x == 0)
            for (int l = 0; l < 5; ++l) mbar_wait0(&bars[l]);
        router_stamp(a.trace, 7);
    }
}

int env_cluster(int major) {
    if (const char* e = std::getenv("ELASTIC_ROUTER_CLUSTER")) {
        const int c = std::atoi(e);
        if (c != 1 && c != 2 && c != 4 && c != 8 && c != 16) fail("ELASTIC_ROUTER_CLUSTER must be 1, 2, 4, 8 or 16 (got '%s')", e);
        return major >= 9 ? c : 1;
    }
    return major >= 9 ? 16 : 1;
}

size_t fused_smem_bytes(const RouterLinearDev (&layers)[5], int head_dim) { return fused_smem(layers, head_dim).bytes; }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

std::mutex g_launch_mu;

// Whether a cluster of this size, with this kernel and shared memory, can be resident on the device
// (asked of the driver once per kernel, device, size and shared memory).
bool cluster_fits(const void* kern, int dev, int cluster, const cudaLaunchConfig_t& cfg) {
    static std::map<std::tuple<const void*, int, int, size_t>, bool> known;
    std::lock_guard<std::mutex> lock(g_launch_mu);
    const auto key = std::make_tuple(kern, dev, cluster, cfg.dynamicSmemBytes);
    auto it = known.find(key);
    if (it == known.end()) {
        int n = 0;
        const cudaError_t e = cudaOccupancyMaxActiveClusters(&n, kern, &cfg);
        if (e != cudaSuccess) (void)cudaGetLastError();
        it = known.emplace(key, e == cudaSuccess && n > 0).first;
    }
    return it->second;
}

struct RouterTrace {
    unsigned long long* d = nullptr;
    int cap = 0, grid = 0;
    cudaStream_t stream = nullptr;
};
RouterTrace g_rtrace;

// Once per kernel and device (cudaFuncSetAttribute costs host time on every call otherwise): all
// the shared memory the device allows a block, and (sm_90+) clusters of 16.
void set_fused_attributes(const void* kern, int dev, int major, int optin) {
    static std::set<std::pair<const void*, int>> done;
    std::lock_guard<std::mutex> lock(g_launch_mu);
    if (!done.insert({kern, dev}).second) return;
    CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    if (major >= 9) CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
}

}  // namespace

std::string router_trace_summary() {
    if (!g_rtrace.d || g_rtrace.grid == 0) return "router trace: off (ELASTIC_ROUTER_TRACE=1 turns it on)";
    CUDA_CHECK(cudaStreamSynchronize(g_rtrace.stream));
    std::vector<unsigned long long> h(size_t(g_rtrace.grid) * kRouterStamps);
    CUDA_CHECK(cudaMemcpy(h.data(), g_rtrace.d, h.size() * sizeof(h[0]), cudaMemcpyDeviceToHost));
    unsigned long long t0 = ~0ull;
    for (int b = 0; b < g_rtrace.grid; ++b)
        if (h[size_t(b) * kRouterStamps]) t0 = std::min(t0, h[size_t(b) * kRouterStamps]);
    std::string out =
        "router trace (" + std::to_string(g_rtrace.grid) + " CTAs; µs after the first entry, min/median/max):";
    const char* names[kRouterStamps] = {"entry", "prefetched", "pooled", "fe0", "fe2", "rh0", "rh2", "rh4"};
    for (int i = 0; i < kRouterStamps; ++i) {
        std::vector<double> v;
        for (int b = 0; b < g_rtrace.grid; ++b)
            if (const unsigned long long t = h[size_t(b) * kRouterStamps + i]) v.push_back(double(t - t0) * 1e-3);
        if (v.empty()) continue;
        std::sort(v.begin(), v.end());
        char buf[128];
        std::snprintf(buf, sizeof buf, " %s %.2f/%.2f/%.2f", names[i], v.front(), v[v.size() / 2], v.back());
        out += buf;
    }
    return out;
}

RouterSync router_sync_from_env() {
    static const RouterSync v = [] {
        const char* e = std::getenv("ELASTIC_ROUTER_SYNC");
        if (!e || !*e || std::strcmp(e, "mbarrier") == 0) return RouterSync::Mbarrier;
        if (std::strcmp(e, "barrier") == 0) return RouterSync::Barrier;
        fail("ELASTIC_ROUTER_SYNC must be 'mbarrier' or 'barrier' (got '%s')", e);
    }();
    return v;
}

RouterKernel router_kernel_from_env() {
    const char* e = std::getenv("ELASTIC_ROUTER_KERNEL");
    if (!e || !*e || std::strcmp(e, "fused") == 0) return RouterKernel::Fused;
    if (std::strcmp(e, "cublas") == 0) return RouterKernel::Cublas;
    fail("ELASTIC_ROUTER_KERNEL must be 'fused' or 'cublas' (got '%s')", e);
}

size_t router_scratch_floats(const RouterLinearDev (&layers)[5], int n_kv_head, int head_dim) {
    size_t total = size_t(n_kv_head) * size_t(head_dim);
    for (const RouterLinearDev& L : layers) total += size_t(n_kv_head) * size_t(L.out);
    return total;
}

bool router_fused_takes(const RouterLinearDev (&layers)[5], const void* k, int head_dim) {
    if (head_dim % 8 != 0 || !aligned16(k)) return false;
    for (const RouterLinearDev& L : layers)
        if (L.in % 4 != 0 || !aligned16(L.w)) return false;
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return fused_smem_bytes(layers, head_dim) <= size_t(optin);
}

void router_logits_fused(const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T, int n_kv_head,
                         int head_dim, int window, float* logits_dev, cudaStream_t s, int cluster, RouterSync sync) {
    int dev = 0, major = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (cluster <= 0) cluster = env_cluster(major);
    if (major < 9) cluster = 1;
    FusedArgs a{};
    for (int l = 0; l < 5; ++l) a.L[l] = layers[l];
    a.k = k;
    a.row_stride = int64_t(n_kv_head) * head_dim;
    a.head_end = T < window ? T : window;
    a.tail_begin = T - window > 0 ? T - window : 0;
    a.rows = a.head_end + (T - a.tail_begin);
    a.n_kv_head = n_kv_head;
    a.head_dim = head_dim;
    a.logits = logits_dev;
    const size_t smem = fused_smem_bytes(layers, head_dim);
    const int groups = (n_kv_head + kGroupHeads - 1) / kGroupHeads;
    cudaLaunchConfig_t cfg = {};
    cfg.blockDim = dim3(kThreads);
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    // ELASTIC_ROUTER_TRACE=1 (measurements only): each CTA stamps %globaltimer at its steps into a
    // buffer that router_trace_summary() reads back (the last call's stamps).
    static const bool tracing = [] {
        const char* e = std::getenv("ELASTIC_ROUTER_TRACE");
        return e && *e && *e != '0';
    }();
    ELASTIC_TYPE_SWITCH(tk, TK, {
        // The largest cluster up to the one asked for that the device can hold (e.g. a small MIG
        // slice may hold no cluster of 16); the mbarrier hand-off needs a cluster.
        const void* kern = nullptr;
        for (int c = cluster;; c /= 2) {
            const bool mbar = sync == RouterSync::Mbarrier && c > 1;
            kern = mbar ? reinterpret_cast<const void*>(router_fused_kernel<TK, true>)
                        : reinterpret_cast<const void*>(router_fused_kernel<TK, false>);
            set_fused_attributes(kern, dev, major, optin);
            a.cluster = c;
            cfg.gridDim = dim3(unsigned(groups * c));
            cfg.dynamicSmemBytes = smem;
            attr[0].val.clusterDim.x = unsigned(c);
            cfg.numAttrs = c > 1 ? 1 : 0;
            if (c == 1 || cluster_fits(kern, dev, c, cfg)) break;
        }
        if (tracing) {
            const int grid = int(cfg.gridDim.x);
            if (g_rtrace.cap < grid) {
                if (g_rtrace.d) CUDA_CHECK(cudaFree(g_rtrace.d));
                g_rtrace.d = device_alloc<unsigned long long>(size_t(grid) * kRouterStamps, "router trace");
                g_rtrace.cap = grid;
            }
            CUDA_CHECK(cudaMemsetAsync(g_rtrace.d, 0, size_t(grid) * kRouterStamps * sizeof(unsigned long long), s));
            g_rtrace.grid = grid;
            g_rtrace.stream = s;
            a.trace = g_rtrace.d;
        }
        void* args[] = {&a};
        CUDA_CHECK(cudaLaunchKernelExC(&cfg, kern, args));
    });
    CUDA_LAUNCH_CHECK();
}

const float* router_logits_cublas(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T,
                                  int n_kv_head, int head_dim, int window, float* buf, cudaStream_t s) {
    const int n = n_kv_head * head_dim;
    const int64_t head_end = T < window ? T : window, tail_begin = T - window > 0 ? T - window : 0;
    const unsigned grid = unsigned((n + kPoolCols - 1) / kPoolCols);
    ELASTIC_TYPE_SWITCH(tk, TK, (router_pool_kernel<TK><<<grid, kPoolCols * kPoolGroups, 0, s>>>(
                                    static_cast<const TK*>(k), T, n, head_end, tail_begin, buf)));
    CUDA_LAUNCH_CHECK();
    const float* x = buf;
    float* y = buf + n;
    const float one = 1.0f, zero = 0.0f;
    for (int l = 0; l < 5; ++l) {
        const RouterLinearDev& L = layers[l];
        // Column-major view: y^T[out, H] = (W as [in, out])^T @ x^T[in, H].
        CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, L.out, n_kv_head, L.in, &one, L.w, CUDA_R_32F, L.in, x,
                                  CUDA_R_32F, L.in, &zero, y, CUDA_R_32F, L.out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        const int m = n_kv_head * L.out;
        bias_act_kernel<<<unsigned((m + 127) / 128), 128, 0, s>>>(y, L.b, n_kv_head, L.out, kAct[l]);
        CUDA_LAUNCH_CHECK();
        x = y;
        y += m;
    }
    return x;
}

namespace {

// One thread decides (a layer has at most 64 KV heads); the order of every operation is the host's
// (Router::decision, choose_modes), so the modes and margins are the host's bit for bit, but for
// the sigmoid variant's exp (the device's against the host's libm, within an ulp).
__global__ void router_decide_kernel(const float* __restrict__ logits, int H, int n_out, RouteRule rule,
                                     int32_t* meta, int meta_stride, float* rec) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    float* out = rec;
    float* prob = rec + H * n_out;
    float* margin = prob + H;
    float* mode = margin + H;
    bool full[64];
    if (n_out == 2) {
        for (int h = 0; h < H; ++h) {
            const float l0 = logits[2 * h], l1 = logits[2 * h + 1];
            out[2 * h] = l0;
            out[2 * h + 1] = l1;
            margin[h] = l1 - l0;
            prob[h] = 1.0f / (1.0f + expf(-(l1 - l0)));
            full[h] = l1 > l0;
        }
    } else {
        double mean = 0, var = 0;
        for (int h = 0; h < H; ++h) mean += logits[h];
        mean /= H;
        for (int h = 0; h < H; ++h) var += (logits[h] - mean) * (logits[h] - mean);
        var /= H;
        const double inv = 1.0 / sqrt(var + 1e-5);
        for (int h = 0; h < H; ++h) {
            out[h] = float((logits[h] - mean) * inv);
            const float p = 1.0f / (1.0f + expf(-out[h]));
            prob[h] = p;
            full[h] = p > 0.5f;
            margin[h] = p - 0.5f;
        }
    }
    int m[64];
    if (rule.n_sparse < 0) {
        for (int h = 0; h < H; ++h) m[h] = full[h] ? rule.full_mode : rule.sparse_mode;
    } else {
        // The n_sparse lowest margins, lower head first on ties (the host's stable sort).
        bool sparse[64];
        for (int h = 0; h < H; ++h) sparse[h] = false;
        for (int i = 0; i < rule.n_sparse && i < H; ++i) {
            int best = -1;
            for (int h = 0; h < H; ++h)
                if (!sparse[h] && (best < 0 || margin[h] < margin[best])) best = h;
            sparse[best] = true;
        }
        for (int h = 0; h < H; ++h) m[h] = sparse[h] ? rule.sparse_mode : rule.full_mode;
    }
    for (int h = 0; h < H; ++h) {
        mode[h] = float(m[h]);
        mode[H + h] = full[h] ? 1.0f : 0.0f;
        meta[h * meta_stride] = m[h];
        meta[h * meta_stride + 1] = 0;
    }
}

}  // namespace

void router_decide(const float* logits, int n_kv_head, int n_out, const RouteRule& rule, int32_t* meta,
                   int meta_stride, float* record, cudaStream_t s) {
    ELASTIC_ASSERT(n_kv_head >= 1 && n_kv_head <= 64 && (n_out == 1 || n_out == 2));
    router_decide_kernel<<<1, 32, 0, s>>>(logits, n_kv_head, n_out, rule, meta, meta_stride, record);
    CUDA_LAUNCH_CHECK();
}

const float* router_queue(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T,
                          int n_kv_head, int head_dim, int window, float* buf, cudaStream_t s, RouterKernel kernel) {
    if (kernel == RouterKernel::Fused && router_fused_takes(layers, k, head_dim)) {
        router_logits_fused(layers, k, tk, T, n_kv_head, head_dim, window, buf, s);
        return buf;  // the fused kernel writes them at the start of the scratch
    }
    return router_logits_cublas(h, layers, k, tk, T, n_kv_head, head_dim, window, buf, s);
}

void router_logits(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T, int n_kv_head,
                   int head_dim, int window, float* buf, float* logits_host, cudaStream_t s, float* pinned,
                   RouterKernel kernel) {
    const float* logits = router_queue(h, layers, k, tk, T, n_kv_head, head_dim, window, buf, s, kernel);
    const size_t bytes = size_t(n_kv_head) * size_t(layers[4].out) * sizeof(float);
    CUDA_CHECK(cudaMemcpyAsync(pinned ? pinned : logits_host, logits, bytes, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    if (pinned) std::memcpy(logits_host, pinned, bytes);
}

}  // namespace elastic::cuda
