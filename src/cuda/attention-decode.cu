// Split-KV decode attention over the per-head lean KV cache on the GPU (DESIGN.md §1.6; the cache
// is kv-cache.cu, same layout and spans as cpu::LayerKVCache: FA/XA heads every position; SSA heads
// sink slots, then a ring of `local` slots, position j ≥ sink in slot sink + (j − sink) % local),
// stored in bf16. Decode reads the whole cache once per token: the kernel's only job is to stream
// K/V at the memory limit, and at a 40 MB lean cache (32K context, Ω 0.75) that is ~10 µs, so
// launch count and the split's merge matter as much as the stream.
//
// Shape (issue 12, second round):
//   - a "pair" is (KV head g, chunk of ≤ GP of its G query heads); GP = G rounded up to 1, 2, 4 or 8
//     (G = 16 runs as two chunks of 8). All query heads of a pair share one read of K/V.
//   - work split: the grid is one wave of resident CTAs whatever the position; every pair's attended
//     keys are cut into P_pr = ⌈n_pr / chunk⌉ near-equal pieces, one CTA per piece and one pair per
//     CTA, chunk = max(kMinPiece, ⌈Σ n_pr / (grid − pairs)⌉) so that Σ P_pr ≤ grid (decode_chunk;
//     the kernel computes it from the position, so one launch serves every step of a recorded
//     graph, and the position itself may come from device memory). A long FA head gets many
//     pieces, a 2K-key SSA head a few; no CTA straddles two pairs, so each CTA runs one
//     uninterrupted pipeline; CTAs past the last piece only take part in the merge.
//   - streaming: a group of L lanes owns one key row at a time; each lane copies its 16-byte pieces
//     (8 dims) of K and V with cp.async (L1 bypassed, zero-fill past the end) into its OWN slots
//     of a kStages-deep shared-memory ring and later reads back only those slots, so no barrier is
//     needed inside the loop (cp.async.wait_group orders a thread's own copies). Two stages
//     (64 KB per CTA, 128 KB per SM at two CTAs) are always in flight while the third is scored,
//     without holding in-flight bytes in registers (the first version, loading into registers,
//     sat at 247–255 registers and issued its loads in bursts between computes).
//   - scoring: per key the lane scores its dims for every head in fp32 against q held in registers,
//     L-lane shuffles finish the dot products; online softmax in base 2 per head and lane group;
//     the CTA merges its lane groups through shared memory.
//   - merge of cut pairs: each piece leaves (m, l, o[D] unnormalised) in `part`; then ONE grid-wide
//     barrier (the launch is cooperative, so all CTAs are resident; the counter flips its top bit
//     each call and so resets itself: no memset, no second launch) and every CTA merges a few
//     (pair, query head, 32 dims) units, reading the P pieces 32 at a time: the merge costs a couple
//     of L2 round trips however many pieces a head has (the first version's last-CTA merge walked
//     ~110 pieces one after another, tens of µs at 32K fa-ssa).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/attention-common.cuh"
#include "cuda/attention.h"
#include "cuda/convert.cuh"
#include "cuda/kv-cache.cuh"
#include "cuda/pdl.cuh"

namespace elastic::cuda {

using namespace detail;

namespace {

constexpr int kDecWarps = 4;
constexpr int kDecThreads = 32 * kDecWarps;
constexpr int kSmemBytes = 96 * 1024;  // the cp.async ring (and, after it, the merge's scratch)
constexpr int kSegDims = 32;            // merge unit: one query head's 32 output dims
constexpr int kMinPiece = 128;          // keys: a CTA's q load, pipeline fill and merge outweigh less
constexpr int kPartPad = 4;             // part row: m, l, 2 unused, o[D] (16-byte aligned)
constexpr int kMaxKv = 128;             // KV heads per layer: their cache heads and key counts sit in shared memory
// Trace stamps per CTA (ELASTIC_DECODE_TRACE=1, measurements only): entry, split chosen and first
// stages issued, stream done, piece written, past the grid barrier, merge done.
constexpr int kTraceStamps = 6;

__device__ __forceinline__ void trace_stamp(unsigned long long* trace, int i) {
    if (trace && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        trace[size_t(blockIdx.x) * kTraceStamps + i] = t;
    }
}

struct DecodeParams {
    const void* q;  // [n_head, D] of type TQ
    void* out;      // [n_head, D] of type TQ
    const __nv_bfloat16* k;
    const __nv_bfloat16* v;
    const CacheHead* heads;
    float* part;     // [grid][GP][D + kPartPad]: a cut pair's piece: m (base 2), l, -, -, o[D] unnormalised
    unsigned* bar;   // grid barrier (top bit flips once per call; low bits back at 0)
    const int32_t* d_pos;  // device position, or null: pos
    unsigned long long* trace;  // null, or [grid][kTraceStamps] %globaltimer stamps (ELASTIC_DECODE_TRACE)
    int n_kv, G, n_chunks;
    int trigger;  // where the next kernel may be scheduled (decode_trigger()): 0 entry, 1 piece written, 2 exit
    int64_t pos, sink, local;
    float scale_log2;
};

// Keys per CTA: with chunk ≥ kMinPiece and Σ ⌈n_pr / chunk⌉ ≤ Σ (n_pr / chunk + 1) ≤ grid, every
// piece has a CTA (n_total: keys over all pairs; n_max: the longest pair's). A grid of at most one
// CTA per pair cuts nothing.
__host__ __device__ __forceinline__ int64_t decode_chunk(int64_t n_total, int64_t n_max, int n_pairs, int grid) {
    if (grid <= n_pairs) return n_max > 0 ? n_max : 1;
    const int64_t spare = grid - n_pairs, c = (n_total + spare - 1) / spare;
    const int64_t chunk = c > kMinPiece ? c : kMinPiece;
    return chunk < n_max ? chunk : (n_max > 0 ? n_max : 1);
}

// Compile-time shape: GP query heads per pair; DPL dims per lane (16 while q and o of GP ≤ 4 heads
// fit the registers, else 8); L lanes per key row; N keys per lane group per stage; STAGES so that
// the ring is kSmemBytes whatever the stage size.
template <int D, int GP>
struct DecodeShape {
    static constexpr int DPL = GP <= 4 ? 16 : 8;
    static constexpr int NCH = DPL / 8;  // 16-byte pieces per lane and row
    static constexpr int L = D / DPL;
    static constexpr int KG = 32 / L;    // key rows per warp at once
    static constexpr int N = GP == 8 ? 4 : 8 / NCH;
    static constexpr int NGRP = kDecWarps * KG;
    static constexpr int KPI = NGRP * N;  // keys per CTA per stage
    static constexpr int STAGE_BYTES = N * NCH * 2 * 16 * kDecThreads;
    static constexpr int STAGES = kSmemBytes / STAGE_BYTES;
    static_assert(L >= 1 && L <= 32 && 32 % L == 0, "lanes per key row");
    static_assert(STAGES >= 3, "at least two stages in flight while one is scored");
    static_assert(NGRP * GP * (D + 2) * 4 <= kSmemBytes, "lane-group merge fits the ring");
    static_assert(D % kSegDims == 0, "merge units");
};

// 16-byte async copy to shared memory, L1 bypassed, 256-byte L2 prefetch; bytes 0 zero-fills. The
// "memory" clobbers keep the compiler from moving this thread's shared-memory reads across them.
__device__ __forceinline__ void cp_async_stream(void* smem, const void* gmem, int bytes) {
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit_m() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait_m() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// bf16 pair → two floats (exact: a bf16 is the top half of an fp32).
__device__ __forceinline__ float bf_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// All CTAs of the (cooperative) launch meet here. The counter starts at 0; CTA 0 adds
// 2^31 − (grid − 1), the others 1, so when all have arrived the top bit has flipped and the low
// bits are back at 0: ready for the next call whatever its grid (cooperative_groups' scheme).
__device__ __forceinline__ void grid_barrier(unsigned* bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
        __threadfence();
        const unsigned old = atomicAdd(bar, add);
        unsigned now;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(now) : "l"(bar) : "memory");
        } while (((old ^ now) & 0x80000000u) == 0);
        __threadfence();
    }
    __syncthreads();
}

// Block-wide max / sum of one float per thread (s: kDecWarps floats of scratch); all threads get it.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float x, float* s) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, x, off);
        x = kMax ? fmaxf(x, y) : x + y;
    }
    __syncthreads();
    if (threadIdx.x % 32 == 0) s[threadIdx.x / 32] = x;
    __syncthreads();
    x = s[0];
#pragma unroll
    for (int w = 1; w < kDecWarps; ++w) x = kMax ? fmaxf(x, s[w]) : x + s[w];
    return x;
}

// Which pair CTA b works on: the pair index, its keys n, its pieces P and its first CTA.
struct PairOf {
    int pr, first, P;
    int64_t n;
};
__device__ __forceinline__ int pieces_of(int64_t n, int64_t chunk) { return int((n + chunk - 1) / chunk); }

template <int D, int GP, typename TQ>
__global__ void __launch_bounds__(kDecThreads) decode_kernel(const DecodeParams p) {
    using S = DecodeShape<D, GP>;
    constexpr int DPL = S::DPL, NCH = S::NCH, L = S::L, KG = S::KG, N = S::N, NGRP = S::NGRP, KPI = S::KPI;
    constexpr int STAGES = S::STAGES;
    extern __shared__ __align__(16) unsigned char smem[];
    uint4* ring = reinterpret_cast<uint4*>(smem);  // [STAGES][N][NCH][K, V][kDecThreads]

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, li = lane % L;
    const int grp = warp * KG + lane / L;  // this lane group's rank in the CTA
    const int n_pairs = p.n_kv * p.n_chunks;
    __shared__ CacheHead s_head[kMaxKv];  // the layer's cache heads and each one's attended keys
    __shared__ int64_t s_keys[kMaxKv];
    trace_stamp(p.trace, 0);
    // Programmatic dependent launch (pdl.cuh): the next kernel (the attention's output projection)
    // may be scheduled once every CTA of this one has passed this point (p.trigger 0), or its piece
    // is written (1), or at its exit (2); it waits for this grid to finish either way.
    if (p.trigger == 0) pdl_launch_dependents();

    // The prologue reads only what no kernel of this step writes (the cache heads, the position:
    // copied in before the step), so under a programmatic launch it overlaps the previous kernel.
    // One load per KV head by as many threads, all in flight at once (a loop over the heads in
    // every thread was a chain of dependent loads: 4–8 µs before the first K/V byte was asked for).
    const int64_t pos = p.d_pos ? int64_t(*p.d_pos) : p.pos;
    for (int g = tid; g < p.n_kv; g += kDecThreads) {
        const CacheHead h = p.heads[g];
        int64_t b[3], e[3];
        s_head[g] = h;
        s_keys[g] = spans_total(b, e, cache_spans(h, p.sink, p.local, pos, b, e));
    }
    __syncthreads();

    // The split at this position (uniform over the grid): keys per piece, and the merge units
    // (cut pairs × GP × D / kSegDims; 0: no pair is cut, no barrier).
    int64_t chunk = 1;
    int n_units = 0;
    {
        int64_t n_total = 0, n_max = 0;
        for (int g = 0; g < p.n_kv; ++g) {
            n_total += s_keys[g];
            n_max = s_keys[g] > n_max ? s_keys[g] : n_max;
        }
        chunk = decode_chunk(n_total * p.n_chunks, n_max, n_pairs, int(gridDim.x));
        for (int g = 0; g < p.n_kv; ++g) n_units += s_keys[g] > chunk ? 1 : 0;
        n_units *= p.n_chunks * GP * (D / kSegDims);
    }
    // This CTA's pair and piece (none past the last piece: it only merges).
    PairOf me{-1, 0, 1, 0};
    {
        int first = 0;
        for (int pr = 0; pr < n_pairs; ++pr) {
            const int64_t n = s_keys[pr / p.n_chunks];
            const int P = pieces_of(n, chunk);
            if (int(blockIdx.x) < first + P) {
                me = PairOf{pr, first, P, n};
                break;
            }
            first += P;
        }
    }
    // Everything below reads q (written by the kernels before this one) or the K/V cache (the
    // previous kernel appended this step's row).
    pdl_wait();
    if (me.pr >= 0) {  // stream this CTA's piece
        const int g = me.pr / p.n_chunks, hc = me.pr % p.n_chunks, piece = int(blockIdx.x) - me.first;
        int64_t sb[3] = {0, 0, 0}, se[3] = {0, 0, 0};
        const int ns = cache_spans(s_head[g], p.sink, p.local, pos, sb, se);
        const int32_t x0 = int32_t(me.n * piece / me.P), x1 = int32_t(me.n * (piece + 1) / me.P);  // this CTA's keys
        // The spans as scalars (arrays indexed at run time would live in local memory): logical key
        // x < n0 is slot b0 + x, then b1 + (x − n0) below n0 + n1, then b2 + (x − n0 − n1).
        const int32_t b0 = int32_t(sb[0]), n0 = int32_t(se[0] - sb[0]);
        const int32_t b1 = ns > 1 ? int32_t(sb[1]) : 0, n1 = ns > 1 ? int32_t(se[1] - sb[1]) : 0;
        const int32_t b2 = ns > 2 ? int32_t(sb[2]) : 0;
        const int hq0 = g * p.G + hc * GP, gv = min(GP, p.G - hc * GP);  // first query head, heads in use
        const __nv_bfloat16* kh = p.k + s_head[g].off + li * 8;
        const __nv_bfloat16* vh = p.v + s_head[g].off + li * 8;
        auto slot_of = [&](int32_t x) { return x < n0 ? b0 + x : x - n0 < n1 ? b1 + (x - n0) : b2 + (x - n0 - n1); };
        auto at = [&](int st, int i, int c, int kv) { return ring + (((st * N + i) * NCH + c) * 2 + kv) * kDecThreads + tid; };

        // Stage `it` of this thread: its N keys' K and V pieces into ring slot it % STAGES (an empty
        // group past the end keeps the group count uniform).
        const int32_t n_iter = (x1 - x0 + KPI - 1) / KPI;
        auto issue = [&](int32_t it) {
            if (it < n_iter) {
                const int st = it % STAGES;
#pragma unroll
                for (int i = 0; i < N; ++i) {
                    const int32_t x = x0 + it * KPI + i * NGRP + grp;
                    const bool ok = x < x1;
                    const int64_t off = ok ? int64_t(slot_of(x)) * D : 0;
#pragma unroll
                    for (int c = 0; c < NCH; ++c) {
                        cp_async_stream(at(st, i, c, 0), kh + off + L * 8 * c, ok ? 16 : 0);
                        cp_async_stream(at(st, i, c, 1), vh + off + L * 8 * c, ok ? 16 : 0);
                    }
                }
            }
            cp_async_commit_m();
        };
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) issue(s);
        trace_stamp(p.trace, 1);

        float qf[GP][DPL];  // q · scale · log2(e) on this lane's dims: (li + L·c)·8 + e
#pragma unroll
        for (int h = 0; h < GP; ++h)
#pragma unroll
            for (int c = 0; c < NCH; ++c)
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    qf[h][c * 8 + e] =
                        h < gv ? to_f32(static_cast<const TQ*>(p.q)[int64_t(hq0 + h) * D + (li + L * c) * 8 + e]) * p.scale_log2
                               : 0.0f;
        float m[GP], l[GP], o[GP][DPL];
#pragma unroll
        for (int h = 0; h < GP; ++h) {
            m[h] = -INFINITY;
            l[h] = 0.0f;
#pragma unroll
            for (int j = 0; j < DPL; ++j) o[h][j] = 0.0f;
        }

        for (int32_t it = 0; it < n_iter; ++it) {
            cp_async_wait_m<STAGES - 2>();  // stage it has landed (this thread's copies)
            issue(it + STAGES - 1);         // into the slot read in iteration it − 1
            const int st = it % STAGES;
            bool ok[N];
            float sc[N][GP];
#pragma unroll
            for (int i = 0; i < N; ++i) {
                ok[i] = x0 + it * KPI + i * NGRP + grp < x1;
#pragma unroll
                for (int h = 0; h < GP; ++h) sc[i][h] = 0.0f;
#pragma unroll
                for (int c = 0; c < NCH; ++c) {
                    const uint4 kr = *at(st, i, c, 0);
                    const uint32_t w[4] = {kr.x, kr.y, kr.z, kr.w};
#pragma unroll
                    for (int u = 0; u < 4; ++u) {
                        const float k0 = bf_lo(w[u]), k1 = bf_hi(w[u]);
#pragma unroll
                        for (int h = 0; h < GP; ++h)
                            sc[i][h] = fmaf(qf[h][c * 8 + 2 * u + 1], k1, fmaf(qf[h][c * 8 + 2 * u], k0, sc[i][h]));
                    }
                }
            }
#pragma unroll
            for (int off = L / 2; off > 0; off >>= 1)
#pragma unroll
                for (int i = 0; i < N; ++i)
#pragma unroll
                    for (int h = 0; h < GP; ++h) sc[i][h] += __shfl_xor_sync(0xffffffffu, sc[i][h], off);
            float ms[GP];
#pragma unroll
            for (int h = 0; h < GP; ++h) {
                float mx = m[h];
#pragma unroll
                for (int i = 0; i < N; ++i) mx = ok[i] ? fmaxf(mx, sc[i][h]) : mx;
                // A group that has seen no key yet keeps m = −inf: subtract 0 then, so no inf − inf.
                ms[h] = mx == -INFINITY ? 0.0f : mx;
                const float alpha = exp2f(m[h] - ms[h]);
                m[h] = mx;
                l[h] *= alpha;
#pragma unroll
                for (int j = 0; j < DPL; ++j) o[h][j] *= alpha;
            }
#pragma unroll
            for (int i = 0; i < N; ++i) {
                float pw[GP];
#pragma unroll
                for (int h = 0; h < GP; ++h) {
                    pw[h] = ok[i] ? exp2f(sc[i][h] - ms[h]) : 0.0f;
                    l[h] += pw[h];
                }
#pragma unroll
                for (int c = 0; c < NCH; ++c) {
                    const uint4 vr = *at(st, i, c, 1);  // zero-filled past the end: 0 · 0, never NaN
                    const uint32_t w[4] = {vr.x, vr.y, vr.z, vr.w};
#pragma unroll
                    for (int u = 0; u < 4; ++u) {
                        const float v0 = bf_lo(w[u]), v1 = bf_hi(w[u]);
#pragma unroll
                        for (int h = 0; h < GP; ++h) {
                            o[h][c * 8 + 2 * u] = fmaf(pw[h], v0, o[h][c * 8 + 2 * u]);
                            o[h][c * 8 + 2 * u + 1] = fmaf(pw[h], v1, o[h][c * 8 + 2 * u + 1]);
                        }
                    }
                }
            }
        }
        cp_async_wait_m<0>();  // only empty groups can be pending; the ring is reused below
        __syncthreads();
        trace_stamp(p.trace, 2);

        // Merge the lane groups' (m, l, o) through shared memory (over the ring).
        float* s_o = reinterpret_cast<float*>(smem);  // [NGRP][GP][D]
        float* s_m = s_o + NGRP * GP * D;             // [NGRP][GP]
        float* s_l = s_m + NGRP * GP;
#pragma unroll
        for (int h = 0; h < GP; ++h) {
#pragma unroll
            for (int c = 0; c < NCH; ++c)
#pragma unroll
                for (int e = 0; e < 8; ++e) s_o[(grp * GP + h) * D + (li + L * c) * 8 + e] = o[h][c * 8 + e];
            if (li == 0) {
                s_m[grp * GP + h] = m[h];
                s_l[grp * GP + h] = l[h];
            }
        }
        __syncthreads();
        const bool whole = me.P == 1;
        float* part = p.part + size_t(blockIdx.x) * GP * (D + kPartPad);
        for (int idx = tid; idx < GP * D; idx += kDecThreads) {
            const int h = idx / D, d = idx % D;
            float M = -INFINITY;
#pragma unroll
            for (int r = 0; r < NGRP; ++r) M = fmaxf(M, s_m[r * GP + h]);
            float Ls = 0.0f, O = 0.0f;
#pragma unroll
            for (int r = 0; r < NGRP; ++r) {
                const float mr = s_m[r * GP + h];
                const float w = mr == -INFINITY ? 0.0f : exp2f(mr - M);
                Ls = fmaf(s_l[r * GP + h], w, Ls);
                O = fmaf(s_o[(r * GP + h) * D + d], w, O);
            }
            if (whole) {
                if (h < gv) static_cast<TQ*>(p.out)[int64_t(hq0 + h) * D + d] = from_f32<TQ>(O / Ls);
            } else {
                part[h * (D + kPartPad) + kPartPad + d] = O;
                if (d == 0) {
                    part[h * (D + kPartPad)] = M;  // finite: every piece holds ≥ 1 key
                    part[h * (D + kPartPad) + 1] = Ls;
                }
            }
        }
    }
    if (me.pr >= 0) trace_stamp(p.trace, 3);
    if (p.trigger == 1) pdl_launch_dependents();
    if (n_units == 0) return;  // uniform over the grid: no pair is cut, no barrier

    grid_barrier(p.bar);
    trace_stamp(p.trace, 4);

    // Merge units u = (cut pair, query head h, 32-dim segment sg), spread over the grid.
    constexpr int kSegs = D / kSegDims, kCols = kSegDims / 4, kRows = kDecThreads / kCols;
    float* s_red = reinterpret_cast<float*>(smem);  // [kRows][kSegDims] partial sums, then kDecWarps floats
    float* s_w = s_red + kRows * kSegDims + kDecWarps;  // [P] piece weights
    for (int u = int(blockIdx.x); u < n_units; u += int(gridDim.x)) {
        const int cut = u / (GP * kSegs), h = u / kSegs % GP, sg = u % kSegs;
        int first = 0, P = 0, pr = 0, nth = 0;  // the cut-th pair with P > 1
        for (; pr < n_pairs; ++pr) {
            P = pieces_of(s_keys[pr / p.n_chunks], chunk);
            if (P > 1 && nth++ == cut) break;
            first += P;
        }
        const int ug = pr / p.n_chunks, uhq0 = ug * p.G + pr % p.n_chunks * GP, ugv = min(GP, p.G - pr % p.n_chunks * GP);
        if (h >= ugv) continue;  // padding head of a short last chunk (uniform over the CTA)
        auto row = [&](int j) { return p.part + (size_t(first + j) * GP + h) * (D + kPartPad); };
        // Every load of the first pieces is issued before any is used (one L2 round trip): the
        // o segments of pieces r, r + kRows, … (kPre of them) and (m, l) of piece tid.
        const int col = tid % kCols, r = tid / kCols;
        constexpr int kPre = 8;  // up to kPre · kRows = 128 pieces' segments in one L2 round trip
        float4 ov[kPre];
#pragma unroll
        for (int i = 0; i < kPre; ++i) {
            const int j = r + i * kRows;
            ov[i] = j < P ? __ldcg(reinterpret_cast<const float4*>(row(j) + kPartPad + sg * kSegDims) + col)
                          : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        const float2 ml = tid < P ? __ldcg(reinterpret_cast<const float2*>(row(tid))) : make_float2(-INFINITY, 0.0f);
        float mx = ml.x;
        for (int j = tid + kDecThreads; j < P; j += kDecThreads) mx = fmaxf(mx, __ldcg(row(j)));
        mx = block_reduce<true>(mx, s_red + kRows * kSegDims);
        float ls = 0.0f;
        if (tid < P) {
            const float w = exp2f(ml.x - mx);
            s_w[tid] = w;
            ls = w * ml.y;
        }
        for (int j = tid + kDecThreads; j < P; j += kDecThreads) {
            const float w = exp2f(__ldcg(row(j)) - mx);
            s_w[j] = w;
            ls = fmaf(w, __ldcg(row(j) + 1), ls);
        }
        ls = block_reduce<false>(ls, s_red + kRows * kSegDims);  // its barriers also publish s_w
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int i = 0; i < kPre; ++i) {
            const int j = r + i * kRows;
            const float w = j < P ? s_w[j] : 0.0f;
            acc.x = fmaf(w, ov[i].x, acc.x);
            acc.y = fmaf(w, ov[i].y, acc.y);
            acc.z = fmaf(w, ov[i].z, acc.z);
            acc.w = fmaf(w, ov[i].w, acc.w);
        }
#pragma unroll 4
        for (int j = r + kPre * kRows; j < P; j += kRows) {
            const float4 o4 = __ldcg(reinterpret_cast<const float4*>(row(j) + kPartPad + sg * kSegDims) + col);
            const float w = s_w[j];
            acc.x = fmaf(w, o4.x, acc.x);
            acc.y = fmaf(w, o4.y, acc.y);
            acc.z = fmaf(w, o4.z, acc.z);
            acc.w = fmaf(w, o4.w, acc.w);
        }
        reinterpret_cast<float4*>(s_red)[r * kCols + col] = acc;
        __syncthreads();
        if (tid < kSegDims) {
            float sum = 0.0f;
            for (int rr = 0; rr < kRows; ++rr) sum += s_red[rr * kSegDims + tid];
            static_cast<TQ*>(p.out)[int64_t(uhq0 + h) * D + sg * kSegDims + tid] = from_f32<TQ>(sum / ls);
        }
        __syncthreads();  // s_red and s_w free for the next unit
    }
    trace_stamp(p.trace, 5);
}

// Where the decode kernel lets the next kernel (the output projection, launched programmatically
// where ELASTIC_PDL=1) be scheduled: ELASTIC_DECODE_TRIGGER=exit (default: no early trigger, the
// projection is scheduled when the grid ends), written (each CTA after its piece is written) or
// entry. Entry cost the 8B shape's decode at 32K 6 % (H100, 2026-12-06: 115.8 tok/s against 124.8
// at exit, same run): the projection's CTAs then wait on the SMs while the attention streams.
int decode_trigger() {
    static const int t = [] {
        const char* e = std::getenv("ELASTIC_DECODE_TRIGGER");
        if (!e || !*e || std::strcmp(e, "exit") == 0) return 2;
        if (std::strcmp(e, "written") == 0) return 1;
        if (std::strcmp(e, "entry") == 0) return 0;
        std::fprintf(stderr, "ELASTIC_DECODE_TRIGGER=%s: expected exit, written or entry; using exit\n", e);
        return 2;
    }();
    return t;
}

// ELASTIC_DECODE_PDL=1 launches the decode kernel with the programmatic attribute beside the
// cooperative one (where ELASTIC_PDL=1, pdl.cuh). Off by default: on an H100 it gained 0–0.5 %,
// inside the noise, and no test runs it (docs/performance.md, "Where issue 12 stood (2026-12-06,
// evening, H100)").
bool decode_pdl() {
    static const bool on = [] {
        const char* e = std::getenv("ELASTIC_DECODE_PDL");
        return pdl_enabled() && e && *e == '1';
    }();
    return on;
}

template <int D, int GP, typename T>
void launch_decode(const DecodeParams& p, int grid, bool cooperative, cudaStream_t s) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(grid));
    cfg.blockDim = dim3(kDecThreads);
    cfg.dynamicSmemBytes = kSmemBytes;
    cfg.stream = s;
    cudaLaunchAttribute attr[2];
    int n = 0;
    if (cooperative) {  // the merge's grid barrier needs every CTA resident
        attr[n].id = cudaLaunchAttributeCooperative;
        attr[n++].val.cooperative = 1;
    }
    // A driver that refuses the programmatic attribute beside the cooperative one gets plain
    // cooperative launches from then on (said once on stderr).
    static std::atomic<bool> pdl_refused{false};
    const bool pdl = decode_pdl() && !pdl_refused.load();
    if (pdl) {  // the prologue (cache heads, split) overlaps the previous kernel
        attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    cfg.attrs = attr;
    cfg.numAttrs = unsigned(n);
    const cudaError_t e = cudaLaunchKernelEx(&cfg, decode_kernel<D, GP, T>, p);
    if (e != cudaSuccess && pdl && cooperative && (e == cudaErrorInvalidValue || e == cudaErrorNotSupported)) {
        (void)cudaGetLastError();
        if (!pdl_refused.exchange(true))
            std::fprintf(stderr, "decode attention: programmatic launch refused beside the cooperative one (%s); launching without it\n",
                         cudaGetErrorString(e));
        cfg.numAttrs = unsigned(n - 1);
        CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_kernel<D, GP, T>, p));
        return;
    }
    CUDA_CHECK(e);
}

// Once per kernel and cache: allow the ring's dynamic shared memory, ask how many CTAs fit per SM.
template <int D, int GP, typename T>
int prepare_kernel() {
    CUDA_CHECK(cudaFuncSetAttribute(decode_kernel<D, GP, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel<D, GP, T>, kDecThreads, kSmemBytes));
    return std::max(1, n);
}

#define ELASTIC_DECODE_SWITCH(D, GP, ...)                                         \
    do {                                                                          \
        if ((D) == 64) {                                                          \
            constexpr int kD = 64;                                                \
            ELASTIC_DECODE_GP_SWITCH(GP, __VA_ARGS__);                            \
        } else {                                                                  \
            constexpr int kD = 128;                                               \
            ELASTIC_DECODE_GP_SWITCH(GP, __VA_ARGS__);                            \
        }                                                                         \
    } while (0)
#define ELASTIC_DECODE_GP_SWITCH(GP, ...)                                         \
    switch (GP) {                                                                 \
    case 1: { constexpr int kGP = 1; __VA_ARGS__; break; }                        \
    case 2: { constexpr int kGP = 2; __VA_ARGS__; break; }                        \
    case 4: { constexpr int kGP = 4; __VA_ARGS__; break; }                        \
    default: { constexpr int kGP = 8; __VA_ARGS__; break; }                       \
    }

struct DecodeTrace {
    unsigned long long* d = nullptr;
    int64_t cap = 0;
    int grid = 0;
    cudaStream_t stream = nullptr;
};
DecodeTrace g_trace;

}  // namespace

std::string decode_trace_summary() {
    if (!g_trace.d || g_trace.grid == 0) return "decode trace: off (ELASTIC_DECODE_TRACE=1 turns it on)";
    CUDA_CHECK(cudaStreamSynchronize(g_trace.stream));
    std::vector<unsigned long long> h(size_t(g_trace.grid) * kTraceStamps);
    CUDA_CHECK(cudaMemcpy(h.data(), g_trace.d, h.size() * sizeof(h[0]), cudaMemcpyDeviceToHost));
    unsigned long long t0 = ~0ull;
    for (int b = 0; b < g_trace.grid; ++b) t0 = std::min(t0, h[size_t(b) * kTraceStamps]);
    // Per stamp over the CTAs that reached it: min, median, max µs after the first CTA's entry.
    std::string out = "decode trace (" + std::to_string(g_trace.grid) + " CTAs; µs after the first entry, min/median/max):";
    const char* names[kTraceStamps] = {"entry", "issued", "streamed", "written", "barrier", "merged"};
    for (int i = 0; i < kTraceStamps; ++i) {
        std::vector<double> v;
        for (int b = 0; b < g_trace.grid; ++b)
            if (const unsigned long long t = h[size_t(b) * kTraceStamps + i]) v.push_back(double(t - t0) * 1e-3);
        if (v.empty()) continue;
        std::sort(v.begin(), v.end());
        char buf[128];
        std::snprintf(buf, sizeof buf, " %s %.2f/%.2f/%.2f (%zu)", names[i], v.front(), v[v.size() / 2], v.back(), v.size());
        out += buf;
    }
    return out;
}

void attn_decode(const void* q, const DeviceLayerCache& c, int64_t pos, void* out, DType t, int n_head, float scale,
                 cudaStream_t s, const int32_t* d_pos) {
    ELASTIC_ASSERT(n_head % c.n_kv == 0 && pos >= 0 && pos < c.capacity);
    ELASTIC_ASSERT(c.head_dim == 64 || c.head_dim == 128);
    if (c.n_kv > kMaxKv)
        fail("decode attention: %d KV heads per layer; the CUDA kernel takes at most %d", c.n_kv, kMaxKv);
    const int G = n_head / c.n_kv, D = c.head_dim;
    const int GP = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
    const int n_chunks = (G + GP - 1) / GP;
    const int key = D * 64 + GP * 4 + int(t);
    if (c.prepared != key) {
        if (c.sms == 0) c.sms = device_sm_count();
        ELASTIC_TYPE_SWITCH(t, T, ELASTIC_DECODE_SWITCH(D, GP, c.resident = prepare_kernel<kD, kGP, T>()));
        c.prepared = key;
    }
    // One wave of resident CTAs whatever the position (the kernel splits the keys among them), or
    // one CTA per pair when there are more pairs than that (nothing cut, no grid barrier).
    // ELASTIC_DECODE_CTAS=N (read once; for measurements) caps the grid at N CTAs: at most one
    // per pair means no pair is cut, no grid barrier and no merge.
    static const int64_t cap = [] {
        const char* e = std::getenv("ELASTIC_DECODE_CTAS");
        return e && *e ? std::max<int64_t>(1, std::atoll(e)) : int64_t(0);
    }();
    const int64_t slots = int64_t(c.sms) * c.resident, n_pairs = int64_t(c.n_kv) * n_chunks;
    const int64_t grid = std::max(cap > 0 ? std::min(cap, slots) : slots, n_pairs);
    // ELASTIC_DECODE_COOP=0 (measurements only) launches without the cooperative attribute, to see
    // what it costs; safe only where nothing else runs (one wave of this kernel alone is resident).
    static const bool coop = [] {
        const char* e = std::getenv("ELASTIC_DECODE_COOP");
        return !(e && *e == '0');
    }();
    const bool cooperative = coop && grid > n_pairs;  // pairs may be cut: the merge's barrier needs every CTA resident
    ELASTIC_ASSERT(grid + 1024 <= kSmemBytes / 4);  // the merge's piece weights (s_w) fit the ring
    // Sized for the grid at the first call, so nothing is reallocated inside a captured decode
    // step (backend-cuda.cu's graphs).
    const size_t need = size_t(grid) * size_t(GP) * size_t(D + kPartPad);
    if (need > c.part_floats) {
        if (c.d_part) CUDA_CHECK(cudaFree(c.d_part));
        c.d_part = device_alloc<float>(need, "decode partial results");
        c.part_floats = need;
    }
    if (c.count_n == 0) {  // the grid barrier's counter: zeroed once, every call leaves its low bits at 0
        c.d_count = device_alloc<int>(1, "decode grid barrier");
        CUDA_CHECK(cudaMemsetAsync(c.d_count, 0, sizeof(int), s));
        c.count_n = 1;
    }
    {  // the split the kernel will choose at pos, for decode_splits() (host arithmetic only)
        int64_t n_total = 0, n_max = 0;
        for (const CacheHead& h : c.h_heads) {
            int64_t b[3], e[3];
            const int64_t n = spans_total(b, e, cache_spans(h, c.win.sink, c.win.local, pos, b, e));
            n_total += n;
            n_max = std::max(n_max, n);
        }
        const int64_t chunk = decode_chunk(n_total * n_chunks, n_max, int(n_pairs), int(grid));
        c.last_splits = int((n_max + chunk - 1) / chunk);
    }
    // ELASTIC_DECODE_TRACE=1 (measurements only): each CTA stamps %globaltimer at its steps into a
    // buffer that decode_trace_summary() reads back (the last call's stamps).
    static const bool tracing = [] {
        const char* e = std::getenv("ELASTIC_DECODE_TRACE");
        return e && *e && *e != '0';
    }();
    if (tracing && g_trace.cap < grid) {
        if (g_trace.d) CUDA_CHECK(cudaFree(g_trace.d));
        g_trace.d = device_alloc<unsigned long long>(size_t(grid) * kTraceStamps, "decode trace");
        g_trace.cap = grid;
    }
    if (tracing) {
        CUDA_CHECK(cudaMemsetAsync(g_trace.d, 0, size_t(grid) * kTraceStamps * sizeof(unsigned long long), s));
        g_trace.grid = int(grid);
        g_trace.stream = s;
    }
    const DecodeParams p{q,
                         out,
                         c.k,
                         c.v,
                         c.d_heads,
                         c.d_part,
                         reinterpret_cast<unsigned*>(c.d_count),
                         d_pos,
                         tracing ? g_trace.d : nullptr,
                         c.n_kv,
                         G,
                         n_chunks,
                         decode_trigger(),
                         pos,
                         c.win.sink,
                         c.win.local,
                         scale * 1.4426950408889634f};
    ELASTIC_TYPE_SWITCH(t, T,
                        ELASTIC_DECODE_SWITCH(D, GP, (launch_decode<kD, kGP, T>(p, int(grid), cooperative, s))));
}

}  // namespace elastic::cuda
