// Split-KV decode attention over the per-head lean KV cache on the GPU (DESIGN.md §1.6; the cache
// is kv-cache.cu, same layout and spans as cpu::LayerKVCache: FA/XA heads every position; SSA heads
// sink slots, then a ring of `local` slots, position j ≥ sink in slot sink + (j − sink) % local),
// stored in bf16. Decode reads the whole cache once per token: the kernel's only job is to stream
// K/V at the memory limit.
//
// Why the kernel is shaped this way (issue 12; the previous version reached 2.0 TB/s of the H200's
// ~4 TB/s): it staged K/V tiles through shared memory and then read every K row G times and every V
// element once per query head with 4-byte loads, plus the fp32 q once per FMA, so each DRAM byte
// cost about five bytes of shared-memory traffic, and with three barriers per tile the SM was
// bound by shared memory, not DRAM. Here K/V go straight from DRAM to registers:
//   - a "pair" is (KV head g, chunk of ≤ GP of its G query heads); GP = G rounded up to 1, 2, 4 or 8
//     (G = 16 runs as two chunks of 8). All query heads of a pair share one read of K/V.
//   - a group of L lanes owns one key row at a time: each lane loads 16-byte pieces (8 dims) of K
//     and V with ld.global.nc (L1 bypassed: nothing is reused), scores its dims for every head in
//     fp32 against q held in registers, and L-lane shuffles finish the dot products. A warp holds
//     32/L keys per load instruction, 128 or 256 contiguous bytes per key row.
//   - each group loads N keys (all K and V loads issued before any is used) per iteration: 8 KB in
//     flight per warp, 64 KB per SM at two CTAs of 4 warps, above the ~25 KB Little's law asks for
//     15 B/clk/SM at ~1.5k cycles of loaded latency.
//   - work is split stream-K style: all pairs' attended keys are laid end to end and cut into one
//     equal piece per resident CTA (one wave, no tail of idle SMs whatever the mix of FA heads and
//     short SSA heads). A pair inside one CTA is finished there; a pair cut across CTAs leaves
//     (max, sum, unnormalised o) pieces, and the last CTA to finish one (an atomic counter per
//     pair) merges them: no second launch.
// Online softmax in base 2 per head and per lane group; q pre-scaled by scale·log2(e), fp32 throughout.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "cuda/attention-common.cuh"
#include "cuda/attention.h"
#include "cuda/convert.cuh"
#include "cuda/kv-cache.cuh"

namespace elastic::cuda {

using namespace detail;

namespace {

constexpr int kDecWarps = 4;
constexpr int kDecThreads = 32 * kDecWarps;

struct DecodeParams {
    const void* q;  // [n_head, D] of type TQ
    void* out;      // [n_head, D] of type TQ
    const __nv_bfloat16* k;
    const __nv_bfloat16* v;
    const CacheHead* heads;
    float* part;    // [grid][2][GP][D + 2]: a CTA's first and last cut pair: m (base 2), l, o[D] unnormalised
    int* count;     // [n_kv · n_chunks] pieces finished per pair (left at 0 after each call)
    int n_kv, G, n_chunks;  // n_chunks: query-head chunks of GP per KV head
    int64_t pos, sink, local, chunk;  // chunk: keys per CTA
    float scale_log2;
};

// Compile-time shape: GP query heads per pair; DPL dims per lane (16 while q and o of GP ≤ 4 heads
// fit the registers, else 8); L lanes per key row; N keys per lane group per iteration (64 bytes of
// K + V loads per lane in flight).
template <int D, int GP>
struct DecodeShape {
    static constexpr int DPL = GP <= 4 ? 16 : 8;
    static constexpr int NCH = DPL / 8;  // 16-byte pieces per lane and row
    static constexpr int L = D / DPL;
    static constexpr int KG = 32 / L;    // key rows per warp at once
    static constexpr int N = GP == 8 ? 4 : 8 / NCH;  // GP 8: the N × GP scores also live in registers
    static constexpr int NGRP = kDecWarps * KG;
    static constexpr int KPI = NGRP * N;  // keys per CTA iteration
    static_assert(L >= 1 && L <= 32 && 32 % L == 0, "lanes per key row");
};

__device__ __forceinline__ uint4 ldg_stream(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}
// bf16 pair → two floats (exact: a bf16 is the top half of an fp32).
__device__ __forceinline__ float bf_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Attended keys of every KV head at pos (logical index over its ≤ 3 slot spans).
__device__ __forceinline__ int64_t head_keys(const DecodeParams& p, int g, int64_t* sb, int64_t* se, int* ns) {
    *ns = cache_spans(p.heads[g], p.sink, p.local, p.pos, sb, se);
    return spans_total(sb, se, *ns);
}

template <int D, int GP, typename TQ>
__global__ void __launch_bounds__(kDecThreads) decode_kernel(const DecodeParams p) {
    using S = DecodeShape<D, GP>;
    constexpr int DPL = S::DPL, NCH = S::NCH, L = S::L, KG = S::KG, N = S::N, NGRP = S::NGRP, KPI = S::KPI;
    __shared__ float s_o[NGRP][GP][D];
    __shared__ float s_m[NGRP][GP], s_l[NGRP][GP];
    __shared__ int s_last;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, li = lane % L;
    const int grp = warp * KG + lane / L;  // this lane group's rank in the CTA
    const int64_t c0 = int64_t(blockIdx.x) * p.chunk, c1 = c0 + p.chunk;  // flat keys of this CTA

    int64_t flat = 0;  // start of the pair in the flat key space
    for (int pr = 0; pr < p.n_kv * p.n_chunks && flat < c1; ++pr) {
        const int g = pr / p.n_chunks, hc = pr % p.n_chunks;
        int64_t sb[3], se[3];
        int ns = 0;
        const int64_t n = head_keys(p, g, sb, se, &ns);
        const int64_t f0 = flat;
        flat += n;
        if (flat <= c0) continue;
        const int32_t x0 = int32_t(max(c0, f0) - f0), x1 = int32_t(min(c1, flat) - f0);  // this CTA's keys of the pair
        // The spans as scalars (arrays indexed at run time would live in local memory): logical key
        // x < n0 is slot b0 + x, then b1 + (x − n0) below n0 + n1, then b2 + (x − n0 − n1).
        const int32_t b0 = int32_t(sb[0]), n0 = int32_t(se[0] - sb[0]);
        const int32_t b1 = ns > 1 ? int32_t(sb[1]) : 0, n1 = ns > 1 ? int32_t(se[1] - sb[1]) : 0;
        const int32_t b2 = ns > 2 ? int32_t(sb[2]) : 0;
        const int hq0 = g * p.G + hc * GP, gv = min(GP, p.G - hc * GP);  // first query head, heads in use
        const __nv_bfloat16* kh = p.k + p.heads[g].off + li * 8;
        const __nv_bfloat16* vh = p.v + p.heads[g].off + li * 8;

        float qf[GP][DPL];  // q · scale · log2(e) on this lane's dims: (li + L·c)·8 + e
#pragma unroll
        for (int h = 0; h < GP; ++h)
#pragma unroll
            for (int c = 0; c < NCH; ++c)
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    qf[h][c * 8 + e] = h < gv ? to_f32(static_cast<const TQ*>(p.q)[int64_t(hq0 + h) * D + (li + L * c) * 8 + e]) *
                                                    p.scale_log2
                                              : 0.0f;
        float m[GP], l[GP], o[GP][DPL];
#pragma unroll
        for (int h = 0; h < GP; ++h) {
            m[h] = -INFINITY;
            l[h] = 0.0f;
#pragma unroll
            for (int j = 0; j < DPL; ++j) o[h][j] = 0.0f;
        }

        for (int32_t base = x0; base < x1; base += KPI) {
            uint4 kr[N][NCH], vr[N][NCH];
            bool ok[N];
#pragma unroll
            for (int i = 0; i < N; ++i) {
                const int32_t x = base + i * NGRP + grp;
                ok[i] = x < x1;
                const int32_t slot = x < n0 ? b0 + x : x - n0 < n1 ? b1 + (x - n0) : b2 + (x - n0 - n1);
#pragma unroll
                for (int c = 0; c < NCH; ++c) {
                    kr[i][c] = ok[i] ? ldg_stream(kh + int64_t(slot) * D + L * 8 * c) : make_uint4(0, 0, 0, 0);
                    vr[i][c] = ok[i] ? ldg_stream(vh + int64_t(slot) * D + L * 8 * c) : make_uint4(0, 0, 0, 0);
                }
            }
            float sc[N][GP];
#pragma unroll
            for (int i = 0; i < N; ++i) {
#pragma unroll
                for (int h = 0; h < GP; ++h) sc[i][h] = 0.0f;
#pragma unroll
                for (int c = 0; c < NCH; ++c) {
                    const uint32_t w[4] = {kr[i][c].x, kr[i][c].y, kr[i][c].z, kr[i][c].w};
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
                    const uint32_t w[4] = {vr[i][c].x, vr[i][c].y, vr[i][c].z, vr[i][c].w};
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

        // Merge the lane groups' (m, l, o) through shared memory.
#pragma unroll
        for (int h = 0; h < GP; ++h) {
#pragma unroll
            for (int c = 0; c < NCH; ++c)
#pragma unroll
                for (int e = 0; e < 8; ++e) s_o[grp][h][(li + L * c) * 8 + e] = o[h][c * 8 + e];
            if (li == 0) {
                s_m[grp][h] = m[h];
                s_l[grp][h] = l[h];
            }
        }
        __syncthreads();
        const bool whole = x0 == 0 && x1 == n;  // the pair lies in this CTA alone
        // Partial slot: 0 for the pair this CTA starts in (or that starts exactly at c0), 1 for a
        // pair starting inside the CTA and running past its end. Every other pair is whole.
        float* part = p.part + (size_t(blockIdx.x) * 2 + (f0 > c0 ? 1 : 0)) * GP * (D + 2);
        for (int idx = tid; idx < GP * D; idx += kDecThreads) {
            const int h = idx / D, d = idx % D;
            float M = -INFINITY;
#pragma unroll
            for (int r = 0; r < NGRP; ++r) M = fmaxf(M, s_m[r][h]);
            float Ls = 0.0f, O = 0.0f;
#pragma unroll
            for (int r = 0; r < NGRP; ++r) {
                const float w = s_m[r][h] == -INFINITY ? 0.0f : exp2f(s_m[r][h] - M);
                Ls = fmaf(s_l[r][h], w, Ls);
                O = fmaf(s_o[r][h][d], w, O);
            }
            if (whole) {
                if (h < gv) static_cast<TQ*>(p.out)[int64_t(hq0 + h) * D + d] = from_f32<TQ>(O / Ls);
            } else {
                part[h * (D + 2) + 2 + d] = O;
                if (d == 0) {
                    part[h * (D + 2)] = M;
                    part[h * (D + 2) + 1] = Ls;
                }
            }
        }
        if (!whole) {
            // The last CTA to leave a piece of this pair merges all of them (threadFenceReduction).
            __threadfence();
            __syncthreads();
            const int first = int(f0 / p.chunk), pieces = int((flat - 1) / p.chunk) - first + 1;
            if (tid == 0) s_last = atomicAdd(p.count + pr, 1) == pieces - 1;
            __syncthreads();
            if (s_last) {
                __threadfence();
                for (int idx = tid; idx < gv * D; idx += kDecThreads) {
                    const int h = idx / D, d = idx % D;
                    auto piece = [&](int j) {
                        const int slot = j == 0 && f0 > int64_t(first) * p.chunk ? 1 : 0;
                        return p.part + (size_t(first + j) * 2 + slot) * GP * (D + 2) + h * (D + 2);
                    };
                    float M = -INFINITY;
                    for (int j = 0; j < pieces; ++j) M = fmaxf(M, __ldcg(piece(j)));
                    float Ls = 0.0f, O = 0.0f;
                    for (int j = 0; j < pieces; ++j) {
                        const float* pc = piece(j);
                        const float w = exp2f(__ldcg(pc) - M);  // every piece holds keys: m finite
                        Ls = fmaf(__ldcg(pc + 1), w, Ls);
                        O = fmaf(__ldcg(pc + 2 + d), w, O);
                    }
                    static_cast<TQ*>(p.out)[int64_t(hq0 + h) * D + d] = from_f32<TQ>(O / Ls);
                }
                if (tid == 0) p.count[pr] = 0;  // ready for the next token (stream-ordered)
            }
        }
        __syncthreads();  // shared memory free for the next pair
    }
}

template <int D, int GP, typename T>
void launch_decode(const DecodeParams& p, int grid, cudaStream_t s) {
    decode_kernel<D, GP, T><<<grid, kDecThreads, 0, s>>>(p);
    CUDA_LAUNCH_CHECK();
}

template <int D, int GP, typename T>
int resident_ctas() {
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel<D, GP, T>, kDecThreads, 0));
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

}  // namespace

void attn_decode(const void* q, const DeviceLayerCache& c, int64_t pos, void* out, DType t, int n_head, float scale,
                 cudaStream_t s) {
    ELASTIC_ASSERT(n_head % c.n_kv == 0 && pos >= 0 && pos < c.capacity);
    const int G = n_head / c.n_kv, D = c.head_dim;
    const int GP = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
    const int n_chunks = (G + GP - 1) / GP;
    int64_t n_total = 0;
    for (const CacheHead& h : c.h_heads) {
        int64_t b[3], e[3];
        n_total += spans_total(b, e, cache_spans(h, c.win.sink, c.win.local, pos, b, e));
    }
    n_total *= n_chunks;
    // One wave: as many equal pieces as CTAs fit on the device at once (asked once per cache and
    // kernel), but no piece under 256 keys, where a CTA's setup and merge would outweigh its stream.
    const int key = D * 64 + GP * 4 + int(t);
    if (c.prepared != key) {
        if (c.sms == 0) c.sms = device_sm_count();
        ELASTIC_TYPE_SWITCH(t, T, ELASTIC_DECODE_SWITCH(D, GP, c.resident = resident_ctas<kD, kGP, T>()));
        c.prepared = key;
    }
    const int64_t slots = int64_t(c.sms) * c.resident;
    const int64_t chunk = std::max<int64_t>(256, (n_total + slots - 1) / slots);
    const int grid = int((n_total + chunk - 1) / chunk);
    // Sized for the largest grid (one piece per slot), so that a longer context never reallocates
    // inside a captured decode step (backend-cuda.cu's graphs).
    const size_t need = size_t(std::max<int64_t>(grid, slots)) * 2 * size_t(GP) * size_t(D + 2);
    if (need > c.part_floats) {
        if (c.d_part) CUDA_CHECK(cudaFree(c.d_part));
        c.d_part = device_alloc<float>(need, "decode partial results");
        c.part_floats = need;
    }
    const size_t pairs = size_t(c.n_kv) * size_t(n_chunks);
    if (pairs > c.count_n) {  // counters start at 0 and every call leaves them at 0
        if (c.d_count) CUDA_CHECK(cudaFree(c.d_count));
        c.d_count = device_alloc<int>(pairs, "decode counters");
        CUDA_CHECK(cudaMemsetAsync(c.d_count, 0, pairs * sizeof(int), s));
        c.count_n = pairs;
    }
    // Pieces of the longest head (what decode_splits reports).
    int64_t n_max = 0;
    for (const CacheHead& h : c.h_heads) {
        int64_t b[3], e[3];
        n_max = std::max(n_max, spans_total(b, e, cache_spans(h, c.win.sink, c.win.local, pos, b, e)));
    }
    c.last_splits = int(std::min<int64_t>(grid, (n_max + chunk - 1) / chunk + 1));
    const DecodeParams p{q,        out,        c.k,         c.v,    c.d_heads, c.d_part, c.d_count, c.n_kv, G, n_chunks,
                         pos,      c.win.sink, c.win.local, chunk,  scale * 1.4426950408889634f};
    ELASTIC_TYPE_SWITCH(t, T, ELASTIC_DECODE_SWITCH(D, GP, (launch_decode<kD, kGP, T>(p, grid, s))));
}

}  // namespace elastic::cuda
