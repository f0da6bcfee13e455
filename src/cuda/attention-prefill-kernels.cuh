// The two fused hybrid prefill kernels (internal to attention-prefill.cu): the tensor-core kernel
// on mma.sync (bf16 / fp16) and the fp32 kernel on the CUDA cores. See attention-prefill.cu for
// the design.
#pragma once
#include "cuda/attention-common.cuh"
#include "cuda/attention-tiles.h"

namespace elastic::cuda::detail {

// ---------------------------------------------------------------- kernel

template <typename T_, int D, int BM, int BN = 64>
struct PrefillTraits {
    using T = T_;
    static constexpr int kHeadDim = D;
    static constexpr int kBlockM = BM;
    static constexpr int kBlockN = BN;
    static constexpr int kWarps = 4;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kMI = BM / (16 * kWarps);  // m16 fragments per warp
    static constexpr int kRowsPerWarp = 16 * kMI;
    static constexpr int kStride = D + 8;           // smem row stride in elements (+16 B: no ldmatrix conflicts)
    static constexpr int kNF = kBlockN / 8;         // n8 fragments of S per m16 fragment
    static constexpr int kDF = D / 8;               // n8 fragments of O
    static constexpr int kTileQ = BM * kStride;     // elements
    static constexpr int kTileKV = kBlockN * kStride;
    static constexpr size_t kSmem = size_t(kTileQ + 4 * kTileKV) * sizeof(T);  // Q + 2 stages × (K, V)
    static_assert(BM % 64 == 0 && kMI >= 1, "4 warps × 16 rows × kMI");
    static_assert(BN == 32 || BN == 64, "key tiles of 32 or 64");
    static_assert(D % 16 == 0 && (D / 8) % 2 == 0, "head_dim multiple of 16");
};

struct PrefillKernelParams {
    const void* q;
    const void* k;
    const void* v;
    void* out;
    int64_t q_row, q_head, k_row, k_head, v_row, v_head, o_row, o_head;  // elements
    const int32_t* cu_seqlens;  // [n_seq + 1]
    const HeadMeta* meta;       // [n_seq, n_kv_head]
    const int32_t* xa_offsets;
    const int32_t* xa_blocks;
    const WorkItem* items;
    int n_items;
    int* counter;  // zeroed before the launch
    int n_kv_head, group;
    int sink, local, xa_block;
    float scale_log2;  // softmax scale · log2 e
};

// rows [r0, r0 + ROWS) of a [L, *] slab (row stride in elements) → smem [ROWS][kStride];
// rows ≥ L are zero-filled.
template <typename Tr, int ROWS>
__device__ __forceinline__ void load_rows(typename Tr::T* s, const typename Tr::T* g, int64_t row_stride, int r0,
                                          int L, int tid) {
    constexpr int kChunks = Tr::kHeadDim / 8;  // 16-byte chunks per row
    static_assert((ROWS * kChunks) % Tr::kThreads == 0, "whole passes");
#pragma unroll
    for (int c = tid; c < ROWS * kChunks; c += Tr::kThreads) {
        const int r = c / kChunks, cc = c % kChunks;
        const bool ok = r0 + r < L;
        const typename Tr::T* src = ok ? g + int64_t(r0 + r) * row_stride + cc * 8 : g;
        cp_async16(s + r * Tr::kStride + cc * 8, src, ok ? 16 : 0);
    }
}

template <typename Tr>
__global__ void __launch_bounds__(Tr::kThreads) hybrid_prefill_kernel(const PrefillKernelParams p) {
    using T = typename Tr::T;
    using Mma = MmaOp<T>;
    constexpr int BM = Tr::kBlockM, BN = Tr::kBlockN, D = Tr::kHeadDim, S = Tr::kStride;
    constexpr int MI = Tr::kMI, NF = Tr::kNF, DF = Tr::kDF;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* sQ = reinterpret_cast<T*>(smem_raw);  // [BM][S]
    T* sK = sQ + Tr::kTileQ;                 // [2][BN][S]
    T* sV = sK + 2 * Tr::kTileKV;            // [2][BN][S]
    __shared__ int s_item;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wrow = warp * Tr::kRowsPerWarp;  // first tile row of this warp

    for (;;) {
        if (tid == 0) s_item = atomicAdd(p.counter, 1);
        __syncthreads();
        const int item = s_item;
        if (item >= p.n_items) break;
        const WorkItem w = p.items[item];
        const int seq0 = p.cu_seqlens[w.seq];
        const int L = p.cu_seqlens[w.seq + 1] - seq0;
        const int g = w.head / p.group;
        const HeadMeta hm = p.meta[w.seq * p.n_kv_head + g];
        const int mode = hm.mode;
        const int m0 = w.tile * BM, m1 = min(m0 + BM, L);
        const TileRange tr = tile_range(mode, m0, m1, BN, p.sink, p.local, p.xa_block, p.xa_offsets, hm.xa_base);

        const T* qg = static_cast<const T*>(p.q) + int64_t(seq0) * p.q_row + int64_t(w.head) * p.q_head;
        const T* kg = static_cast<const T*>(p.k) + int64_t(seq0) * p.k_row + int64_t(g) * p.k_head;
        const T* vg = static_cast<const T*>(p.v) + int64_t(seq0) * p.v_row + int64_t(g) * p.v_head;
        T* og = static_cast<T*>(p.out) + int64_t(seq0) * p.o_row + int64_t(w.head) * p.o_head;

        load_rows<Tr, BM>(sQ, qg, p.q_row, m0, L, tid);
        if (tr.count > 0) {
            const int n0 = tile_at(tr, mode, 0, p.xa_blocks) * BN;
            load_rows<Tr, BN>(sK, kg, p.k_row, n0, L, tid);
            load_rows<Tr, BN>(sV, vg, p.v_row, n0, L, tid);
        }
        cp_async_commit();

        float o[MI][DF][4];
        float row_m[MI][2], row_l[MI][2];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
            for (int df = 0; df < DF; ++df)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[mi][df][e] = 0.0f;
            row_m[mi][0] = row_m[mi][1] = -INFINITY;
            row_l[mi][0] = row_l[mi][1] = 0.0f;
        }

        for (int t = 0; t < tr.count; ++t) {
            const int stage = t & 1;
            const int n0 = tile_at(tr, mode, t, p.xa_blocks) * BN;
            if (t + 1 < tr.count) {  // prefetch the next tile into the other stage (freed by the barrier
                                     // that ended iteration t - 1)
                const int n1 = tile_at(tr, mode, t + 1, p.xa_blocks) * BN;
                load_rows<Tr, BN>(sK + (stage ^ 1) * Tr::kTileKV, kg, p.k_row, n1, L, tid);
                load_rows<Tr, BN>(sV + (stage ^ 1) * Tr::kTileKV, vg, p.v_row, n1, L, tid);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            const T* sk = sK + stage * Tr::kTileKV;
            const T* sv = sV + stage * Tr::kTileKV;

            // S = Q Kᵀ: s[mi][nf] is the 16×8 block (rows wrow + 16 mi, keys n0 + 8 nf).
            float s[MI][NF][4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int nf = 0; nf < NF; ++nf)
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[mi][nf][e] = 0.0f;
#pragma unroll(Tr::kMI > 1 ? 2 : 16)  // MI 2: keeps d 128 × 128 rows in 255 registers
            for (int ks = 0; ks < D / 16; ++ks) {
                uint32_t a[MI][4];
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
                    ldmatrix_x4(a[mi][0], a[mi][1], a[mi][2], a[mi][3], sQ + frag_a_offset(lane, wrow + mi * 16, ks * 16, S));
#pragma unroll
                for (int nf2 = 0; nf2 < NF / 2; ++nf2) {
                    uint32_t b0, b1, b2, b3;
                    ldmatrix_x4(b0, b1, b2, b3, sk + frag_bk_offset(lane, nf2 * 16, ks * 16, S));
#pragma unroll
                    for (int mi = 0; mi < MI; ++mi) {
                        Mma::run(s[mi][2 * nf2], a[mi], b0, b1);
                        Mma::run(s[mi][2 * nf2 + 1], a[mi], b2, b3);
                    }
                }
            }

            // Token-exact mask, only where some (row, key) of the tile may be invisible.
            if (tile_needs_mask(mode, m0, BM, n0, BN, L, p.sink, p.local)) {
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                    for (int nf = 0; nf < NF; ++nf)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int i = m0 + wrow + mi * 16 + frag_c_row(lane, e);
                            const int j = n0 + nf * 8 + frag_c_col(lane, e);
                            if (!tile_visible(mode, i, j, L, p.sink, p.local)) s[mi][nf][e] = -INFINITY;
                        }
            }

            // Online softmax: row hr of fragment mi is tile row wrow + 16 mi + lane/4 + 8 hr; its
            // 64 scores live in the 4 lanes of a quad.
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    float mx = row_m[mi][hr];
#pragma unroll
                    for (int nf = 0; nf < NF; ++nf) mx = fmaxf(mx, fmaxf(s[mi][nf][2 * hr], s[mi][nf][2 * hr + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    const float ms = mx == -INFINITY ? 0.0f : mx * p.scale_log2;  // no (-inf) - (-inf)
                    const float alpha = exp2f(row_m[mi][hr] * p.scale_log2 - ms);
                    row_m[mi][hr] = mx;
                    float sum = 0.0f;
#pragma unroll
                    for (int nf = 0; nf < NF; ++nf)
#pragma unroll
                        for (int e = 2 * hr; e < 2 * hr + 2; ++e) {
                            const float pe = exp2f(fmaf(s[mi][nf][e], p.scale_log2, -ms));
                            s[mi][nf][e] = pe;
                            sum += pe;
                        }
                    row_l[mi][hr] = row_l[mi][hr] * alpha + sum;  // per-lane partial, reduced at the end
#pragma unroll
                    for (int df = 0; df < DF; ++df) {
                        o[mi][df][2 * hr] *= alpha;
                        o[mi][df][2 * hr + 1] *= alpha;
                    }
                }

            // O += P V: P (bf16/fp16) straight from the S accumulators, V by ldmatrix.trans.
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                uint32_t a[MI][4];
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
                    frag_a_from_c(s[mi][2 * kk], s[mi][2 * kk + 1], a[mi], [](float x, float y) { return Mma::pack(x, y); });
#pragma unroll
                for (int df2 = 0; df2 < DF / 2; ++df2) {
                    uint32_t b0, b1, b2, b3;
                    ldmatrix_x4_trans(b0, b1, b2, b3, sv + frag_bv_offset(lane, kk * 16, df2 * 16, S));
#pragma unroll
                    for (int mi = 0; mi < MI; ++mi) {
                        Mma::run(o[mi][2 * df2], a[mi], b0, b1);
                        Mma::run(o[mi][2 * df2 + 1], a[mi], b2, b3);
                    }
                }
            }
            __syncthreads();  // every warp is done with this stage before it is refilled
        }

        // Epilogue: O / l → bf16/fp16 staged in sQ (each warp writes only its own rows), then
        // 16-byte coalesced stores of the rows inside the sequence.
        cp_async_wait<0>();
        __syncthreads();  // (count = 0: Q copies of every thread have landed before sQ is reused)
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
            float inv[2];
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                float l = row_l[mi][hr];
                l += __shfl_xor_sync(0xffffffffu, l, 1);
                l += __shfl_xor_sync(0xffffffffu, l, 2);
                inv[hr] = l > 0.0f ? 1.0f / l : 0.0f;
            }
            const int r = wrow + mi * 16 + frag_c_row(lane, 0);  // and r + 8 for elements 2, 3
#pragma unroll
            for (int df = 0; df < DF; ++df) {
                const int c = df * 8 + frag_c_col(lane, 0);
                *reinterpret_cast<uint32_t*>(sQ + r * S + c) = Mma::pack(o[mi][df][0] * inv[0], o[mi][df][1] * inv[0]);
                *reinterpret_cast<uint32_t*>(sQ + (r + 8) * S + c) =
                    Mma::pack(o[mi][df][2] * inv[1], o[mi][df][3] * inv[1]);
            }
        }
        __syncthreads();
        constexpr int kChunks = D / 8;
#pragma unroll
        for (int c = tid; c < BM * kChunks; c += Tr::kThreads) {
            const int r = c / kChunks, cc = c % kChunks;
            if (m0 + r < m1)
                *reinterpret_cast<uint4*>(og + int64_t(m0 + r) * p.o_row + cc * 8) =
                    *reinterpret_cast<const uint4*>(sQ + r * S + cc * 8);
        }
        __syncthreads();  // sQ and s_item are free for the next item
    }
}


// ---------------------------------------------------------------- fp32 kernel
// The accurate path (GpuPrecision f32): the same fused launch over every head in its mode, fp32
// inputs and FMA on the CUDA cores, no rounding of q, k, v or P. A CTA of 4 warps owns 16 query
// rows of one query head (4 rows per warp, processed together); key tiles of 32 (the mode's tiles,
// tile_range) arrive in shared memory. Scores: lane j takes key j and all 4 rows of its warp,
// 16-byte loads of K (row stride d + 4: conflict-free for 16-byte accesses) and broadcast 16-byte
// loads of Q, so one K load serves 4 rows. Online softmax per row by warp shuffles; P goes to
// shared memory and is read back as broadcasts; lane l accumulates output dims l, l + 32, ...
constexpr int kF32Rows = 16, kF32Keys = 32, kF32Warps = 4;

struct F32KernelParams {
    const float* q;
    const float* k;
    const float* v;
    float* out;
    int L, n_head, n_kv_head, group;
    const HeadMeta* meta;
    const int32_t* xa_offsets;
    const int32_t* xa_blocks;
    int sink, local, xa_block;
    float scale_log2;
};

template <int D>
__global__ void __launch_bounds__(32 * kF32Warps) prefill_f32_kernel(const F32KernelParams p) {
    constexpr int R = kF32Rows / kF32Warps, NK = kF32Keys, DL = D / 32, KS = D + 4;
    __shared__ __align__(16) float sQ[kF32Rows][D];
    __shared__ __align__(16) float sK[NK][KS];
    __shared__ __align__(16) float sV[NK][D];
    __shared__ __align__(16) float sP[kF32Rows][NK];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int head = blockIdx.y, g = head / p.group;
    const HeadMeta hm = p.meta[g];
    const int m0 = blockIdx.x * kF32Rows, m1 = min(m0 + kF32Rows, p.L);
    const TileRange tr = tile_range(hm.mode, m0, m1, NK, p.sink, p.local, p.xa_block, p.xa_offsets, hm.xa_base);
    const int64_t qrow = int64_t(p.n_head) * D, krow = int64_t(p.n_kv_head) * D;
    for (int e = tid; e < kF32Rows * D; e += blockDim.x) {
        const int r = e / D, c = e % D;
        sQ[r][c] = m0 + r < p.L ? p.q[int64_t(m0 + r) * qrow + int64_t(head) * D + c] : 0.0f;
    }
    float o[R][DL], mrow[R], lrow[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        mrow[r] = -INFINITY;
        lrow[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < DL; ++c) o[r][c] = 0.0f;
    }
    const int row0 = warp * R;
    for (int t = 0; t < tr.count; ++t) {
        const int n0 = tile_at(tr, hm.mode, t, p.xa_blocks) * NK;
        __syncthreads();  // the previous tile is no longer read (and sQ is written, the first time)
        for (int e = tid; e < NK * D; e += blockDim.x) {
            const int j = e / D, c = e % D;
            const bool ok = n0 + j < p.L;
            const int64_t off = int64_t(n0 + j) * krow + int64_t(g) * D + c;
            sK[j][c] = ok ? p.k[off] : 0.0f;
            sV[j][c] = ok ? p.v[off] : 0.0f;
        }
        __syncthreads();
        float sc[R];
#pragma unroll
        for (int r = 0; r < R; ++r) sc[r] = 0.0f;
#pragma unroll 8
        for (int c = 0; c < D; c += 4) {
            const float4 kv = *reinterpret_cast<const float4*>(&sK[lane][c]);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float4 qv = *reinterpret_cast<const float4*>(&sQ[row0 + r][c]);
                sc[r] = fmaf(qv.x, kv.x, sc[r]);
                sc[r] = fmaf(qv.y, kv.y, sc[r]);
                sc[r] = fmaf(qv.z, kv.z, sc[r]);
                sc[r] = fmaf(qv.w, kv.w, sc[r]);
            }
        }
        const int j = n0 + lane;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int i = m0 + row0 + r;
            const float x = tile_visible(hm.mode, i, j, p.L, p.sink, p.local) ? sc[r] * p.scale_log2 : -INFINITY;
            float mx = x;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float mnew = fmaxf(mrow[r], mx);
            float pj = 0.0f, alpha = 1.0f;
            if (mnew != -INFINITY) {  // warp-uniform; else nothing visible yet in this row
                alpha = exp2f(mrow[r] - mnew);
                pj = exp2f(x - mnew);
            }
            float sum = pj;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            lrow[r] = lrow[r] * alpha + sum;
            mrow[r] = mnew;
#pragma unroll
            for (int c = 0; c < DL; ++c) o[r][c] *= alpha;
            sP[row0 + r][lane] = pj;
        }
        __syncwarp();
#pragma unroll 2
        for (int jj = 0; jj < NK; jj += 4) {
            float4 pr[R];
#pragma unroll
            for (int r = 0; r < R; ++r) pr[r] = *reinterpret_cast<const float4*>(&sP[row0 + r][jj]);
#pragma unroll
            for (int u = 0; u < 4; ++u)
#pragma unroll
                for (int c = 0; c < DL; ++c) {
                    const float vv = sV[jj + u][lane + 32 * c];
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        const float pu = u == 0 ? pr[r].x : u == 1 ? pr[r].y : u == 2 ? pr[r].z : pr[r].w;
                        o[r][c] = fmaf(pu, vv, o[r][c]);
                    }
                }
        }
        __syncwarp();  // sP is rewritten by the next tile
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int i = m0 + row0 + r;
        if (i >= p.L) continue;
        const float inv = lrow[r] > 0.0f ? 1.0f / lrow[r] : 0.0f;
#pragma unroll
        for (int c = 0; c < DL; ++c) p.out[int64_t(i) * qrow + int64_t(head) * D + lane + 32 * c] = o[r][c] * inv;
    }
}

}  // namespace elastic::cuda::detail
