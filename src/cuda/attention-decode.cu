// Split-KV decode attention over the per-head lean KV cache on the GPU (DESIGN.md §1.6; the cache
// is kv-cache.cu; same layout and spans as cpu::LayerKVCache (FA/XA heads: every position; SSA heads: sink slots, then a ring
// of `local` slots, position j ≥ sink in slot sink + (j − sink) % local), stored in bf16: decode
// reads the whole cache once per token, so half the bytes is half the time.
//
// Decode (flash-decoding): grid (split, KV head); a CTA takes one piece of the head's attended
// slots (logical key index over its ≤ 3 spans, so an SSA head reads only sink + window) for all G
// query heads of the group at once (GQA-packed: K/V read once per group). Tiles of 64 keys arrive
// by cp.async, double-buffered; scores G × 64 (fp32 FMA over 16-byte K reads), online softmax in
// base 2 per head, O += P V with each thread owning 2 dims of a few heads. Pieces leave
// (max, sum, unnormalised o); a combine kernel merges them per query head.
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

constexpr int kMaxG = 16;      // query heads per KV head supported by the decode kernel
constexpr int kDecKT = 64;     // keys per tile
constexpr int kDecThreads = 128;

struct DecodeParams {
    const void* q;  // [n_head, D] of type TQ
    const __nv_bfloat16* k;
    const __nv_bfloat16* v;
    const CacheHead* heads;
    float* part;  // [n_kv][max_splits][G][D + 2]: m (base 2), l, o[D] unnormalised
    int G, max_splits;
    int64_t pos, sink, local, chunk;
    float scale_log2;
};

template <int D>
struct DecodeSmem {
    static constexpr int kStride = D + 8;
    static constexpr size_t kKV = size_t(2) * kDecKT * kStride;  // elements per buffer (2 stages)
    static constexpr size_t kBytes = 2 * kKV * sizeof(__nv_bfloat16) +
                                     sizeof(float) * (size_t(kMaxG) * D + size_t(kMaxG) * kDecKT + 3 * kMaxG);
};

template <int D, typename TQ>
__global__ void __launch_bounds__(kDecThreads) decode_kernel(const DecodeParams p) {
    constexpr int KT = kDecKT, S = D + 8, HP = kDecThreads / (D / 2), NACC = kMaxG / HP;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [2][KT][S]
    __nv_bfloat16* sv = sk + DecodeSmem<D>::kKV;                      // [2][KT][S]
    float* sq = reinterpret_cast<float*>(sv + DecodeSmem<D>::kKV);    // [G][D], pre-scaled
    float* sp = sq + kMaxG * D;                                       // [G][KT] scores, then P
    float* salpha = sp + kMaxG * KT;                                  // [G]
    float* sm = salpha + kMaxG;                                       // [G] running max (base 2)
    float* sl = sm + kMaxG;                                           // [G] running sum

    const int g = blockIdx.y, split = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int G = p.G;
    const CacheHead h = p.heads[g];
    int64_t sb[3], se[3];
    const int ns = cache_spans(h, p.sink, p.local, p.pos, sb, se);
    const int64_t n = spans_total(sb, se, ns);
    const int64_t k0 = int64_t(split) * p.chunk;
    if (k0 >= n) return;  // the combine kernel skips this piece
    const int64_t k1 = min(n, k0 + p.chunk);
    const __nv_bfloat16* kh = p.k + h.off;
    const __nv_bfloat16* vh = p.v + h.off;

    for (int i = tid; i < G * D; i += kDecThreads) sq[i] = to_f32(static_cast<const TQ*>(p.q)[int64_t(g) * G * D + i]) * p.scale_log2;
    if (tid < G) {
        sm[tid] = -INFINITY;
        sl[tid] = 0.0f;
    }

    auto load = [&](int stage, int64_t x0) {  // logical keys [x0, x0 + KT), zero past k1
        constexpr int kChunks = D / 8;
        for (int c = tid; c < KT * kChunks; c += kDecThreads) {
            const int r = c / kChunks, cc = c % kChunks;
            int64_t x = x0 + r;
            const bool ok = x < k1;
            int64_t slot = 0;
            if (ok)
                for (int s = 0; s < ns; ++s) {
                    const int64_t len = se[s] - sb[s];
                    if (x < len) {
                        slot = sb[s] + x;
                        break;
                    }
                    x -= len;
                }
            const size_t dst = size_t(stage) * KT * S + size_t(r) * S + cc * 8;
            cp_async16(sk + dst, kh + slot * D + cc * 8, ok ? 16 : 0);
            cp_async16(sv + dst, vh + slot * D + cc * 8, ok ? 16 : 0);
        }
        cp_async_commit();
    };

    const int dp = tid % (D / 2), r0 = tid / (D / 2);  // PV: dims 2dp, 2dp+1 of heads r0 + HP·a
    float acc[NACC][2];
#pragma unroll
    for (int a = 0; a < NACC; ++a) acc[a][0] = acc[a][1] = 0.0f;

    const int ntiles = int((k1 - k0 + KT - 1) / KT);
    load(0, k0);
    for (int t = 0; t < ntiles; ++t) {
        const int stage = t & 1;
        if (t + 1 < ntiles) {
            load(stage ^ 1, k0 + int64_t(t + 1) * KT);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const __nv_bfloat16* skt = sk + size_t(stage) * KT * S;
        const __nv_bfloat16* svt = sv + size_t(stage) * KT * S;
        const int64_t xt = k0 + int64_t(t) * KT;

        // Scores (base 2): pair (r, c) → head r, key c; a warp covers 32 keys of one head.
        for (int pi = tid; pi < G * KT; pi += kDecThreads) {
            const int r = pi / KT, c = pi % KT;
            float a = -INFINITY;
            if (xt + c < k1) {
                a = 0.0f;
                const float* qr = sq + r * D;
#pragma unroll
                for (int d8 = 0; d8 < D / 8; ++d8) {
                    const uint4 kv = *reinterpret_cast<const uint4*>(skt + c * S + d8 * 8);
                    const __nv_bfloat162* k2 = reinterpret_cast<const __nv_bfloat162*>(&kv);
#pragma unroll
                    for (int u = 0; u < 4; ++u) {
                        const float2 kf = __bfloat1622float2(k2[u]);
                        a = fmaf(qr[d8 * 8 + 2 * u], kf.x, a);
                        a = fmaf(qr[d8 * 8 + 2 * u + 1], kf.y, a);
                    }
                }
            }
            sp[r * KT + c] = a;
        }
        __syncthreads();

        // Online softmax, one warp per head (key c = lane, lane + 32). Key xt < k1 is valid, so
        // the tile max is finite.
        for (int r = warp; r < G; r += kDecThreads / 32) {
            const float v0 = sp[r * KT + lane], v1 = sp[r * KT + lane + 32];
            float mx = fmaxf(v0, v1);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float m_old = sm[r], m_new = fmaxf(m_old, mx);
            const float p0 = exp2f(v0 - m_new), p1 = exp2f(v1 - m_new);
            sp[r * KT + lane] = p0;
            sp[r * KT + lane + 32] = p1;
            float sum = p0 + p1;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            __syncwarp();
            if (lane == 0) {
                const float alpha = exp2f(m_old - m_new);  // m_old = -inf → 0
                salpha[r] = alpha;
                sl[r] = sl[r] * alpha + sum;
                sm[r] = m_new;
            }
        }
        __syncthreads();

#pragma unroll
        for (int a = 0; a < NACC; ++a) {
            const int r = r0 + HP * a;
            if (r < G) {
                const float al = salpha[r];
                float o0 = acc[a][0] * al, o1 = acc[a][1] * al;
                const float* pr = sp + r * KT;
#pragma unroll 8
                for (int c = 0; c < KT; ++c) {
                    const float2 vf =
                        __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(svt + c * S + 2 * dp));
                    o0 = fmaf(pr[c], vf.x, o0);
                    o1 = fmaf(pr[c], vf.y, o1);
                }
                acc[a][0] = o0;
                acc[a][1] = o1;
            }
        }
        __syncthreads();  // sp and this stage are free
    }

    float* base = p.part + (size_t(g) * p.max_splits + split) * size_t(G) * (D + 2);
#pragma unroll
    for (int a = 0; a < NACC; ++a) {
        const int r = r0 + HP * a;
        if (r < G) {
            base[size_t(r) * (D + 2) + 2 + 2 * dp] = acc[a][0];
            base[size_t(r) * (D + 2) + 2 + 2 * dp + 1] = acc[a][1];
        }
    }
    if (tid < G) {
        base[size_t(tid) * (D + 2)] = sm[tid];
        base[size_t(tid) * (D + 2) + 1] = sl[tid];
    }
}

// One CTA per query head, one thread per dim.
template <typename TO>
__global__ void decode_combine_kernel(const float* __restrict__ part, const CacheHead* __restrict__ heads,
                                      TO* __restrict__ out, int G, int D, int max_splits, int64_t pos, int64_t sink,
                                      int64_t local, int64_t chunk) {
    const int hq = blockIdx.x, g = hq / G, r = hq % G, d = threadIdx.x;
    int64_t sb[3], se[3];
    const int ns = cache_spans(heads[g], sink, local, pos, sb, se);
    const int64_t n = spans_total(sb, se, ns);
    const int nsplit = int((n + chunk - 1) / chunk);
    const float* base = part + size_t(g) * max_splits * size_t(G) * (D + 2) + size_t(r) * (D + 2);
    const size_t step = size_t(G) * (D + 2);
    float M = -INFINITY;
    for (int s = 0; s < nsplit; ++s) M = fmaxf(M, base[s * step]);
    float L = 0.0f, o = 0.0f;
    for (int s = 0; s < nsplit; ++s) {
        const float w = exp2f(base[s * step] - M);
        L += base[s * step + 1] * w;
        o += base[s * step + 2 + d] * w;
    }
    out[size_t(hq) * D + d] = from_f32<TO>(o / L);
}

template <int D, typename T>
void launch_decode(const DecodeParams& p, dim3 grid, const DeviceLayerCache& c, void* out, int n_head, int64_t chunk,
                   cudaStream_t s) {
    // The shared-memory limit is a property of the kernel on this device: set once per cache and
    // element type (a cache lives on one device), not at every token.
    const int key = D * 4 + int(sizeof(T));
    if (c.prepared != key) {
        CUDA_CHECK(cudaFuncSetAttribute(decode_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(DecodeSmem<D>::kBytes)));
        c.prepared = key;
    }
    decode_kernel<D, T><<<grid, kDecThreads, DecodeSmem<D>::kBytes, s>>>(p);
    CUDA_LAUNCH_CHECK();
    decode_combine_kernel<T><<<n_head, D, 0, s>>>(c.d_part, c.d_heads, static_cast<T*>(out), p.G, D, p.max_splits, p.pos,
                                                  c.win.sink, c.win.local, chunk);
    CUDA_LAUNCH_CHECK();
}

}  // namespace

void attn_decode(const void* q, const DeviceLayerCache& c, int64_t pos, void* out, DType t, int n_head, float scale,
                 cudaStream_t s) {
    ELASTIC_ASSERT(n_head % c.n_kv == 0 && pos >= 0 && pos < c.capacity);
    const int G = n_head / c.n_kv, D = c.head_dim;
    ELASTIC_ASSERT_MSG(G <= kMaxG, "decode kernel supports up to 16 query heads per KV head");
    int64_t n_max = 1, n_total = 0;
    for (const CacheHead& h : c.h_heads) {
        int64_t b[3], e[3];
        const int64_t n = spans_total(b, e, cache_spans(h, c.win.sink, c.win.local, pos, b, e));
        n_max = std::max(n_max, n);
        n_total += n;
    }
    // Pieces sized from the keys of all heads together (about two CTAs per SM): with FA-SSA the
    // FA heads get many pieces and the short SSA heads few, instead of the FA heads setting the
    // piece length and leaving SMs idle. At least 4 tiles per piece so the merge stays cheap.
    if (c.sms == 0) c.sms = device_sm_count();
    const int sms = c.sms;
    int64_t chunk = (n_total + 2 * sms - 1) / (2 * sms);
    chunk = std::max<int64_t>(4 * kDecKT, (chunk + kDecKT - 1) / kDecKT * kDecKT);
    const int max_splits = int((n_max + chunk - 1) / chunk);
    const size_t need = size_t(c.n_kv) * size_t(max_splits) * size_t(G) * size_t(D + 2);
    if (need > c.part_floats) {
        if (c.d_part) CUDA_CHECK(cudaFree(c.d_part));
        c.d_part = device_alloc<float>(need, "decode partial results");
        c.part_floats = need;
    }
    c.last_splits = max_splits;
    DecodeParams p{q, c.k, c.v, c.d_heads, c.d_part, G, max_splits, pos, c.win.sink, c.win.local, chunk,
                   scale * 1.4426950408889634f};
    const dim3 grid(unsigned(max_splits), unsigned(c.n_kv));
    ELASTIC_TYPE_SWITCH(t, T, {
        if (D == 64) launch_decode<64, T>(p, grid, c, out, n_head, chunk, s);
        else launch_decode<128, T>(p, grid, c, out, n_head, chunk, s);
    });
}

}  // namespace elastic::cuda
