// The router of a layer on the device (DESIGN.md §1.1; src/attention/router.cpp is the reference).
// Two paths, ELASTIC_ROUTER_KERNEL picks (default fused: 0.0255 ms per layer against 0.1765 on
// the H200, 2026-12-03; end to end on the Qwen3-8B shape at 32K, 2026-12-05 on an H100, the same
// Ω_MSR and Ω_ESR as the cuBLAS path and 0.088 against 0.34 ms per layer, sync included):
//  fused   one launch per layer (router_fused_kernel): boundary pooling of the pre-RoPE keys (fp64
//          sums, as router_pool) and the five Linear layers (fp32 FMA, bias, SiLU) for all KV heads,
//          the activations in shared memory. On sm_90 the CTAs of one thread-block cluster (16 by
//          default, ELASTIC_ROUTER_CLUSTER; halved until the device holds one) share one group of up
//          to 8 heads: each pools 1/C of the key columns and computes 1/C of every layer's output
//          neurons, which it stores into the shared memory of every CTA of the cluster (DSMEM) before
//          a cluster barrier, so each SM reads only 1/C of the ~1 MiB of weights. A CTA copies its
//          slices into its own shared memory (cp.async, issued at the kernel's start, landed while
//          the keys are pooled) when they fit, clusters of 8 and 16 at the 8B shape
//          (ELASTIC_ROUTER_STAGE=0: never); otherwise it asks the L2 for them then and the layers
//          read them there. Before sm_90 (or with cluster 1) one CTA per group of 8 heads does
//          everything.
//  cublas  the previous path: a pooling kernel, then the five Linear layers as fp32 cuBLAS GEMMs
//          (no TF32) each followed by a bias (+ SiLU) kernel (11 launches).
// Either way only the logits [n_kv_head, rh4.out] come back to the host (one copy, into pinned
// memory when the caller has some), where Router::decision turns them into modes. No key row
// leaves the GPU.
#include <algorithm>
#include <atomic>
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
    int n_kv_head, head_dim, maxw, cluster;
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
__device__ __forceinline__ void st_rank(float* p, unsigned rank, float v) {
    const unsigned a = unsigned(__cvta_generic_to_shared(p));
    unsigned ra;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(a), "r"(rank));
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

// The floats a CTA of a cluster of C stages of layer L in its shared memory (STAGE kernels): its
// rows of w (ceil(out / C) of them, the last CTAs may use fewer), then as many biases padded to 4,
// so every layer's slice starts 16-byte aligned.
__host__ __device__ __forceinline__ int stage_layer_floats(const RouterLinearDev& L, int C) {
    const int per = (L.out + C - 1) / C;
    return per * L.in + (per + 3) / 4 * 4;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(unsigned(__cvta_generic_to_shared(dst))), "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(unsigned(__cvta_generic_to_shared(dst))), "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.commit_group;\n\tcp.async.wait_all;" ::: "memory"); }
#else
__device__ __forceinline__ void cp_async16(void* dst, const void* src) { *static_cast<float4*>(dst) = *static_cast<const float4*>(src); }
__device__ __forceinline__ void cp_async4(void* dst, const void* src) { *static_cast<float*>(dst) = *static_cast<const float*>(src); }
__device__ __forceinline__ void cp_async_wait_all() {}
#endif

// Output neurons [o0, o1) of L for the group's Hg heads: x [Hg, L.in] (shared) -> y [Hg, L.out]
// (shared, in every CTA of the cluster) or out_global [Hg, L.out] (device). w / b: the rows and
// biases of neurons o0.. (the CTA's staged slice in shared memory when STAGE, else L.w + o0 * L.in
// and L.b + o0 in global memory). A warp takes NB neurons at a time: each lane reads float4 slices
// of the NB weight rows and of each head's input row (shared; reused NB times), fp32 FMAs; then the
// warp's V = NB * 8 partial sums are reduced and scattered over the lanes at once (at each xor step
// a lane keeps half of its values and adds its partner's copy of that half: V - 1 + 5 - log2 V
// shuffles per lane instead of 5 V), and the lane left with neuron n of head h stores it.
template <int NB, bool STAGE>
__device__ __forceinline__ void linear_part(const RouterLinearDev& L, const float* w, const float* b,
                                            const float* __restrict__ x, float* y, float* out_global, int o0, int o1,
                                            int Hg, bool act, int cluster) {
    constexpr int V = NB * kGroupHeads;  // 8, 16 or 32 values per lane
    constexpr int kLogV = V == 8 ? 3 : V == 16 ? 4 : 5;
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    for (int ob = o0 + warp * NB; ob < o1; ob += kWarps * NB) {
        float acc[V];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = 0.0f;
        const float* wr[NB];
#pragma unroll
        for (int n = 0; n < NB; ++n) wr[n] = w + size_t(min(ob + n, o1 - 1) - o0) * size_t(L.in);  // past o1: discarded
#pragma unroll 2
        for (int i = lane * 4; i < L.in; i += 128) {
            float4 wv[NB];
#pragma unroll
            for (int n = 0; n < NB; ++n)
                wv[n] = STAGE ? *reinterpret_cast<const float4*>(wr[n] + i) : __ldg(reinterpret_cast<const float4*>(wr[n] + i));
#pragma unroll
            for (int h = 0; h < kGroupHeads; ++h) {
                if (h >= Hg) break;
                const float4 xv = *reinterpret_cast<const float4*>(x + size_t(h) * L.in + i);
#pragma unroll
                for (int n = 0; n < NB; ++n) {
                    float a = acc[n * kGroupHeads + h];
                    a = fmaf(wv[n].x, xv.x, a);
                    a = fmaf(wv[n].y, xv.y, a);
                    a = fmaf(wv[n].z, xv.z, a);
                    a = fmaf(wv[n].w, xv.w, a);
                    acc[n * kGroupHeads + h] = a;
                }
            }
        }
        // Reduce-scatter: after the steps at xor 16, 8, .. (log2 V of them) lane l holds a partial
        // of value l >> (5 - log2 V); the remaining xor steps finish that one sum.
#pragma unroll
        for (int s = 0; s < kLogV; ++s) {
            const int half = V >> (s + 1), off = 16 >> s;
            const bool upper = (lane & off) != 0;
#pragma unroll
            for (int j = 0; j < half; ++j) {
                const float send = upper ? acc[j] : acc[half + j];
                const float keep = upper ? acc[half + j] : acc[j];
                acc[j] = keep + __shfl_xor_sync(0xffffffffu, send, off);
            }
        }
        float mine = acc[0];
#pragma unroll
        for (int off = 16 >> kLogV; off > 0; off >>= 1) mine += __shfl_xor_sync(0xffffffffu, mine, off);
        const int idx = lane >> (5 - kLogV), n = idx / kGroupHeads, h = idx % kGroupHeads, o = ob + n;
        if ((lane & ((1 << (5 - kLogV)) - 1)) == 0 && n < NB && o < o1 && h < Hg) {
            float v = mine + (STAGE ? b[o - o0] : __ldg(b + (o - o0)));
            if (act) v = v / (1.0f + expf(-v));
            if (out_global) out_global[size_t(h) * L.out + o] = v;
            else store_all(y + size_t(h) * L.out + o, v, cluster);
        }
    }
}

// One CTA (cluster 1) or one cluster of `cluster` CTAs per group of kGroupHeads KV heads. Shared
// memory: two activation buffers [8, maxw] fp32, the pooling's fp64 partial sums, then (STAGE) the
// CTA's slices of the five layers' weights and biases (stage_layer_floats each), copied in with
// cp.async at the start while the keys are pooled, so no layer waits on the L2 or DRAM. Without
// STAGE (the slices do not fit: small clusters) the slices are asked of the L2 instead and the
// layers read them there.
template <typename TK, bool STAGE>
__global__ void __launch_bounds__(kThreads) router_fused_kernel(const FusedArgs a) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float* buf0 = reinterpret_cast<float*>(smem_raw);
    float* buf1 = buf0 + kGroupHeads * a.maxw;
    double* part = reinterpret_cast<double*>(buf1 + kGroupHeads * a.maxw);
    float* stage = reinterpret_cast<float*>(part + kThreads * 8);
    const int C = a.cluster;
    const int rank = int(blockIdx.x) % C, g = int(blockIdx.x) / C;
    const int h0 = g * kGroupHeads, Hg = min(kGroupHeads, a.n_kv_head - h0);
    router_stamp(a.trace, 0);
    if (C > 1) cluster_arrive_relaxed();  // the wait before the first store into another CTA

    // The weights do not depend on the keys: fetch this CTA's rows of all five layers now.
    {
        int off = 0;
#pragma unroll 1
        for (int l = 0; l < 5; ++l) {
            const RouterLinearDev& L = a.L[l];
            const int per = (L.out + C - 1) / C, o0 = min(L.out, rank * per), o1 = min(L.out, o0 + per);
            if (STAGE) {
                const int nvec = (o1 - o0) * L.in / 4;
                const float* gw = L.w + size_t(o0) * L.in;
                for (int v = int(threadIdx.x); v < nvec; v += kThreads) cp_async16(stage + off + 4 * v, gw + 4 * v);
                for (int j = int(threadIdx.x); j < o1 - o0; j += kThreads) cp_async4(stage + off + per * L.in + j, L.b + o0 + j);
                off += stage_layer_floats(L, C);
            } else {
                const char* w = reinterpret_cast<const char*>(L.w + size_t(o0) * L.in);
                const size_t bytes = size_t(o1 - o0) * size_t(L.in) * sizeof(float);
                for (size_t o = size_t(threadIdx.x) * 128; o < bytes; o += size_t(kThreads) * 128)
                    asm volatile("prefetch.global.L2 [%0];" ::"l"(w + o));
                if (threadIdx.x == 0 && o1 > o0) asm volatile("prefetch.global.L2 [%0];" ::"l"(L.b + o0));
            }
        }
    }
    router_stamp(a.trace, 1);

    // Pooling: this CTA's 16-byte column chunks of the group's [Hg * d] columns; a tile of nt
    // chunks × (kThreads / nt) row groups, fp64 sums per thread, then over the row groups in
    // shared memory. Group-local column h * d + i is also the index of x[h, i] in buf0.
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
#pragma unroll 8
            for (int q = 0; q < groups; ++q) s += part[(q * nt + cc) * VEC + j];
            store_all(buf0 + (c0 + tb + cc) * VEC + j, float(s / double(a.rows)), C);
        }
        __syncthreads();  // part is reused by the next tile
    }
    if (C > 1 && !waited) cluster_wait();
    if (STAGE) {
        cp_async_wait_all();  // this thread's copies have landed ...
        if (C > 1) __syncthreads();  // ... and every thread's are visible (cluster 1: the barrier below)
    }
    barrier_all(C);  // the pooled keys of the group are in every CTA
    router_stamp(a.trace, 2);

    const float* x = buf0;
    float* y = buf1;
    int off = 0;
#pragma unroll 1
    for (int l = 0; l < 5; ++l) {
        const RouterLinearDev& L = a.L[l];
        const bool act = l == 0 || l == 2 || l == 3;  // kAct
        const int per = (L.out + C - 1) / C, o0 = min(L.out, rank * per), o1 = min(L.out, o0 + per);
        float* out_global = l == 4 ? a.logits + size_t(h0) * L.out : nullptr;
        const float* w = STAGE ? stage + off : L.w + size_t(o0) * L.in;
        const float* b = STAGE ? stage + off + per * L.in : L.b + o0;
        off += stage_layer_floats(L, C);
        const int n = o1 - o0;
        if (n >= kWarps * 4) linear_part<4, STAGE>(L, w, b, x, y, out_global, o0, o1, Hg, act, C);
        else if (n >= kWarps * 2) linear_part<2, STAGE>(L, w, b, x, y, out_global, o0, o1, Hg, act, C);
        else linear_part<1, STAGE>(L, w, b, x, y, out_global, o0, o1, Hg, act, C);
        if (l < 4) barrier_all(C);  // also: no CTA leaves while another may still store into it
        router_stamp(a.trace, 3 + l);
        const float* nx = y;
        y = const_cast<float*>(x);
        x = nx;
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

// ELASTIC_ROUTER_STAGE=0: never stage the weights in shared memory (read them from the L2 as
// before; for comparisons). Read once.
bool env_stage() {
    static const bool on = [] {
        const char* e = std::getenv("ELASTIC_ROUTER_STAGE");
        return !(e && std::strcmp(e, "0") == 0);
    }();
    return on;
}

int router_maxw(const RouterLinearDev (&layers)[5], int head_dim) {
    int m = head_dim;
    for (const RouterLinearDev& L : layers) m = std::max(m, L.out);
    return (m + 3) / 4 * 4;
}

// Shared memory of the kernel without the staged weights: activations and pooling partials.
size_t fused_smem_bytes(const RouterLinearDev (&layers)[5], int head_dim) {
    return size_t(2) * kGroupHeads * size_t(router_maxw(layers, head_dim)) * sizeof(float) +
           size_t(kThreads) * 8 * sizeof(double);
}

// Bytes of one CTA's staged weight and bias slices at cluster size C.
size_t stage_bytes(const RouterLinearDev (&layers)[5], int C) {
    size_t f = 0;
    for (const RouterLinearDev& L : layers) f += size_t(stage_layer_floats(L, C));
    return f * sizeof(float);
}

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
                         int head_dim, int window, float* logits_dev, cudaStream_t s, int cluster) {
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
    a.maxw = router_maxw(layers, head_dim);
    a.logits = logits_dev;
    const size_t base = fused_smem_bytes(layers, head_dim);
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
        // slice may hold no cluster of 16), its weight slices staged in shared memory when they fit.
        const void* kern = nullptr;
        for (int c = cluster;; c /= 2) {
            const bool staged = env_stage() && base + stage_bytes(layers, c) <= size_t(optin);
            kern = staged ? reinterpret_cast<const void*>(router_fused_kernel<TK, true>)
                          : reinterpret_cast<const void*>(router_fused_kernel<TK, false>);
            set_fused_attributes(kern, dev, major, optin);
            a.cluster = c;
            cfg.gridDim = dim3(unsigned(groups * c));
            cfg.dynamicSmemBytes = base + (staged ? stage_bytes(layers, c) : 0);
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

void router_logits(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T, int n_kv_head,
                   int head_dim, int window, float* buf, float* logits_host, cudaStream_t s, float* pinned,
                   RouterKernel kernel) {
    const float* logits = buf;  // the fused kernel writes them at the start of the scratch
    if (kernel == RouterKernel::Fused && router_fused_takes(layers, k, head_dim))
        router_logits_fused(layers, k, tk, T, n_kv_head, head_dim, window, buf, s);
    else logits = router_logits_cublas(h, layers, k, tk, T, n_kv_head, head_dim, window, buf, s);
    const size_t bytes = size_t(n_kv_head) * size_t(layers[4].out) * sizeof(float);
    CUDA_CHECK(cudaMemcpyAsync(pinned ? pinned : logits_host, logits, bytes, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    if (pinned) std::memcpy(logits_host, pinned, bytes);
}

}  // namespace elastic::cuda
