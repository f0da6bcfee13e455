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
#include <vector>

#include "core/error.h"
#include "cuda/attention-common.cuh"
#include "cuda/attention.h"

namespace elastic::cuda {

using namespace detail;

struct DevicePlan {
    int n_seq = 0, n_kv = 0;
    int64_t xa_block = 0;
    bool has_xa = false;
    std::vector<int32_t> h_cu;          // [n_seq + 1]
    std::vector<HeadMeta> h_meta;       // [n_seq, n_kv]
    std::vector<int32_t> h_xa_off;      // per XA head: n_qblocks + 1 offsets into xa_blocks
    std::vector<int32_t> h_xa_blocks;   // key block ids
    int32_t* d_cu = nullptr;
    HeadMeta* d_meta = nullptr;
    int32_t* d_xa_off = nullptr;
    int32_t* d_xa_blocks = nullptr;
    int* d_counter = nullptr;
    // Work list for the last launch shape (built on first use, reused while the shape holds).
    mutable WorkItem* d_items = nullptr;
    mutable int n_items = 0;
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

}  // namespace elastic::cuda

void std::default_delete<elastic::cuda::DevicePlan>::operator()(elastic::cuda::DevicePlan* p) const { delete p; }

namespace elastic::cuda {

namespace {

template <typename T>
T* upload_vec(const std::vector<T>& h, cudaStream_t s) {
    T* d = nullptr;
    const size_t n = std::max<size_t>(1, h.size());
    CUDA_CHECK(cudaMalloc(&d, n * sizeof(T)));
    CUDA_CHECK(cudaMemsetAsync(d, 0, n * sizeof(T), s));
    if (!h.empty()) CUDA_CHECK(cudaMemcpyAsync(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, s));
    return d;
}

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

// ---------------------------------------------------------------- host side

// What both prefill kernels take from the window, the plan and the scale: the window clamped to
// int range (a window covering the whole sequence behaves like FA), the XA block (64 when no head
// is XA) and the softmax scale in base 2.
struct LaunchConsts {
    int sink, local, xa_block;
    float scale_log2;
};
LaunchConsts launch_consts(const StreamingWindow& win, const DevicePlan& plan, float scale) {
    return {int(std::min<int64_t>(win.sink, int64_t(1) << 30)), int(std::min<int64_t>(win.local, int64_t(1) << 30)),
            int(plan.has_xa ? plan.xa_block : 64), scale * 1.4426950408889634f};
}

// Tile shape. 128-row tiles (2 m16 fragments per warp) halve the shared-memory traffic of K/V per
// FLOP against 64 rows and need XA blocks of 128. ptxas sm_90, bf16: d 64 × 128 rows × 64 keys:
// 250 registers, no spill; d 128 × 128 × 64: 255 + 192 B spilled; d 128 × 128 × 32 keys (half
// the S accumulators, QKᵀ k-loop unrolled by 2): 254, no spill; d 128 × 64 × 64: 174.
int auto_block_m(int head_dim, const DevicePlan& plan) {
    const bool xa_ok = !plan.has_xa || plan.xa_block % 128 == 0;
    return xa_ok ? 128 : 64;
}
int auto_block_n(int head_dim, int bm) { return head_dim == 128 && bm == 128 ? 32 : 64; }

void build_items(const DevicePlan& plan, int n_head, int bm, int sink, int local, cudaStream_t s) {
    if (plan.d_items && plan.key_head == n_head && plan.key_bm == bm && plan.key_sink == sink && plan.key_local == local)
        return;
    const int group = n_head / plan.n_kv;
    std::vector<WorkItem> items;
    for (int b = 0; b < plan.n_seq; ++b) {
        const int L = plan.h_cu[size_t(b) + 1] - plan.h_cu[size_t(b)];
        for (int mt = 0; mt * bm < L; ++mt)
            for (int g = 0; g < plan.n_kv; ++g) {
                const HeadMeta hm = plan.h_meta[size_t(b) * size_t(plan.n_kv) + size_t(g)];
                const int m0 = mt * bm, m1 = std::min(m0 + bm, L);
                const TileRange tr = tile_range(hm.mode, m0, m1, 64, sink, local, int(plan.xa_block),
                                                plan.h_xa_off.data(), hm.xa_base);
                for (int hh = 0; hh < group; ++hh) items.push_back({b, g * group + hh, mt, tr.count});
            }
    }
    std::stable_sort(items.begin(), items.end(), [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
    if (plan.d_items) CUDA_CHECK(cudaFree(plan.d_items));
    plan.d_items = upload_vec(items, s);
    plan.n_items = int(items.size());
    plan.key_head = n_head;
    plan.key_bm = bm;
    plan.key_sink = sink;
    plan.key_local = local;
}

template <typename Tr>
void launch(const PrefillKernelParams& kp, cudaStream_t s) {
    auto kernel = hybrid_prefill_kernel<Tr>;
    static int blocks_per_sm = -1;  // per instantiation; the device does not change under us
    if (blocks_per_sm < 0) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tr::kSmem)));
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, Tr::kThreads, Tr::kSmem));
        ELASTIC_ASSERT(blocks_per_sm > 0);
    }
    if (kp.n_items == 0) return;
    const int grid = std::min(kp.n_items, device_sm_count() * blocks_per_sm);
    CUDA_CHECK(cudaMemsetAsync(kp.counter, 0, sizeof(int), s));
    kernel<<<grid, Tr::kThreads, Tr::kSmem, s>>>(kp);
    ELASTIC_ATTN_LAUNCH_CHECK();
}

template <typename T>
void dispatch(const PrefillKernelParams& kp, int head_dim, int bm, int bn, cudaStream_t s) {
    if (head_dim == 64) {
        if (bm == 128) launch<PrefillTraits<T, 64, 128>>(kp, s);
        else launch<PrefillTraits<T, 64, 64>>(kp, s);
    } else if (bm == 128) {
        if (bn == 32) launch<PrefillTraits<T, 128, 128, 32>>(kp, s);
        else launch<PrefillTraits<T, 128, 128>>(kp, s);
    } else {
        launch<PrefillTraits<T, 128, 64>>(kp, s);
    }
}

__device__ __forceinline__ void convert(float x, __nv_bfloat16& y) { y = __float2bfloat16_rn(x); }
__device__ __forceinline__ void convert(float x, __half& y) { y = __float2half_rn(x); }
__device__ __forceinline__ void convert(__nv_bfloat16 x, float& y) { y = __bfloat162float(x); }
__device__ __forceinline__ void convert(__half x, float& y) { y = __half2float(x); }
template <typename A, typename B>
__global__ void convert_kernel(const A* __restrict__ x, B* __restrict__ y, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        convert(x[i], y[i]);
}
int elementwise_grid(int64_t n) { return int(std::min<int64_t>((n + 255) / 256, 65535)); }

}  // namespace

std::unique_ptr<DevicePlan> upload_batch_plan(const std::vector<LayerPlan>& plans, const std::vector<int64_t>& seqlens,
                                              int64_t xa_block, cudaStream_t s) {
    ELASTIC_ASSERT(!plans.empty() && plans.size() == seqlens.size());
    auto dp = std::unique_ptr<DevicePlan>(new DevicePlan);
    dp->n_seq = int(plans.size());
    dp->n_kv = int(plans[0].mode.size());
    dp->xa_block = xa_block;
    ELASTIC_ASSERT(dp->n_kv > 0);
    dp->h_cu.push_back(0);
    for (size_t b = 0; b < plans.size(); ++b) {
        const LayerPlan& lp = plans[b];
        const int64_t L = seqlens[b];
        ELASTIC_ASSERT(L >= 0 && int64_t(dp->h_cu.back()) + L < (int64_t(1) << 31));
        ELASTIC_ASSERT(int(lp.mode.size()) == dp->n_kv);
        dp->h_cu.push_back(int32_t(dp->h_cu.back() + L));
        for (int g = 0; g < dp->n_kv; ++g) {
            HeadMeta hm{int32_t(lp.mode[size_t(g)]), 0};
            if (lp.mode[size_t(g)] == HeadMode::XA) {
                ELASTIC_ASSERT_MSG(xa_block > 0 && xa_block % 64 == 0, "XA block must be a multiple of 64 on CUDA");
                ELASTIC_ASSERT(lp.xa.size() == size_t(dp->n_kv));
                const BlockList& bl = lp.xa[size_t(g)];
                const int64_t nqb = (L + xa_block - 1) / xa_block;
                ELASTIC_ASSERT(bl.n_query_blocks() == nqb);
                dp->has_xa = true;
                hm.xa_base = int32_t(dp->h_xa_off.size());
                const int64_t base = int64_t(dp->h_xa_blocks.size());
                for (int64_t qb = 0; qb < nqb; ++qb) {
                    const int64_t e0 = bl.offsets[size_t(qb)], e1 = bl.offsets[size_t(qb) + 1];
                    // The kernel relies on: ascending, all ≤ qb, diagonal last (so every other block is whole).
                    ELASTIC_ASSERT_MSG(e1 > e0 && bl.blocks[size_t(e1 - 1)] == qb, "XA list must end with its diagonal block");
                    for (int64_t x = e0; x < e1; ++x) {
                        ELASTIC_ASSERT(bl.blocks[size_t(x)] >= 0);
                        if (x > e0) ELASTIC_ASSERT_MSG(bl.blocks[size_t(x)] > bl.blocks[size_t(x - 1)], "XA list not ascending");
                    }
                    dp->h_xa_off.push_back(int32_t(base + e0 - bl.offsets[0]));
                }
                dp->h_xa_off.push_back(int32_t(base + bl.offsets[size_t(nqb)] - bl.offsets[0]));
                dp->h_xa_blocks.insert(dp->h_xa_blocks.end(), bl.blocks.begin() + std::ptrdiff_t(bl.offsets[0]),
                                       bl.blocks.begin() + std::ptrdiff_t(bl.offsets[size_t(nqb)]));
                ELASTIC_ASSERT(dp->h_xa_blocks.size() < (size_t(1) << 31));
            }
            dp->h_meta.push_back(hm);
        }
    }
    dp->d_cu = upload_vec(dp->h_cu, s);
    dp->d_meta = upload_vec(dp->h_meta, s);
    dp->d_xa_off = upload_vec(dp->h_xa_off, s);
    dp->d_xa_blocks = upload_vec(dp->h_xa_blocks, s);
    CUDA_CHECK(cudaMalloc(&dp->d_counter, sizeof(int)));
    return dp;
}

std::unique_ptr<DevicePlan> upload_plan(const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s) {
    return upload_batch_plan(std::vector<LayerPlan>{plan}, std::vector<int64_t>{T}, xa_block, s);
}

const int32_t* plan_cu_seqlens(const DevicePlan& plan) { return plan.d_cu; }
int plan_n_seq(const DevicePlan& plan) { return plan.n_seq; }

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
    int bm = p.force_block_m ? p.force_block_m : auto_block_m(p.head_dim, plan);
    ELASTIC_ASSERT(bm == 64 || bm == 128);
    if (plan.has_xa) ELASTIC_ASSERT_MSG(plan.xa_block % bm == 0, "query tile must lie in one XA block");
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
    ELASTIC_ASSERT_MSG(p.dtype != DType::F32, "the tensor-core kernel takes bf16 or fp16 (fp32: hybrid_prefill_f32io)");
    // Key tiles: 64, or 32 for 128-row tiles at d 128 (half the S registers: no spills).
    const int bn = p.force_block_n ? p.force_block_n : auto_block_n(p.head_dim, bm);
    ELASTIC_ASSERT_MSG(bn == 64 || (bn == 32 && bm == 128 && p.head_dim == 128), "32-key tiles: d 128 with 128-row tiles only");
    if (p.dtype == DType::BF16) dispatch<__nv_bfloat16>(kp, p.head_dim, bm, bn, s);
    else dispatch<__half>(kp, p.head_dim, bm, bn, s);
}

void hybrid_prefill_f32io(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                          int n_kv_head, int head_dim, const DevicePlan& plan, const StreamingWindow& win,
                          int64_t xa_block, float scale, DType dtype, cudaStream_t s) {
    ELASTIC_ASSERT(plan.n_seq == 1 && plan.h_cu[1] == T);
    if (plan.has_xa) ELASTIC_ASSERT(plan.xa_block == xa_block);
    if (T == 0) return;
    ELASTIC_ASSERT(head_dim == 64 || head_dim == 128);
    ELASTIC_ASSERT(n_kv_head == plan.n_kv && n_head % n_kv_head == 0);
    if (dtype == DType::F32) {
        F32KernelParams kp{};
        kp.q = q;
        kp.k = k;
        kp.v = v;
        kp.out = out;
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
        ELASTIC_ATTN_LAUNCH_CHECK();
        return;
    }
    // 16-bit: convert, run the tensor-core kernel, convert back.
    const int64_t nq = T * n_head * head_dim, nk = T * n_kv_head * head_dim;
    uint16_t *qb = nullptr, *kb = nullptr, *vb = nullptr, *ob = nullptr;
    CUDA_CHECK(cudaMallocAsync(&qb, size_t(nq) * 2, s));
    CUDA_CHECK(cudaMallocAsync(&kb, size_t(nk) * 2, s));
    CUDA_CHECK(cudaMallocAsync(&vb, size_t(nk) * 2, s));
    CUDA_CHECK(cudaMallocAsync(&ob, size_t(nq) * 2, s));
    if (dtype == DType::BF16) {
        convert_kernel<<<elementwise_grid(nq), 256, 0, s>>>(q, reinterpret_cast<__nv_bfloat16*>(qb), nq);
        convert_kernel<<<elementwise_grid(nk), 256, 0, s>>>(k, reinterpret_cast<__nv_bfloat16*>(kb), nk);
        convert_kernel<<<elementwise_grid(nk), 256, 0, s>>>(v, reinterpret_cast<__nv_bfloat16*>(vb), nk);
    } else {
        convert_kernel<<<elementwise_grid(nq), 256, 0, s>>>(q, reinterpret_cast<__half*>(qb), nq);
        convert_kernel<<<elementwise_grid(nk), 256, 0, s>>>(k, reinterpret_cast<__half*>(kb), nk);
        convert_kernel<<<elementwise_grid(nk), 256, 0, s>>>(v, reinterpret_cast<__half*>(vb), nk);
    }
    ELASTIC_ATTN_LAUNCH_CHECK();
    HybridParams p;
    p.dtype = dtype;
    p.q = qb;
    p.k = kb;
    p.v = vb;
    p.out = ob;
    p.n_head = n_head;
    p.n_kv_head = n_kv_head;
    p.head_dim = head_dim;
    p.scale = scale;
    p.win = win;
    p.plan = &plan;
    hybrid_prefill(p, s);
    if (dtype == DType::BF16) convert_kernel<<<elementwise_grid(nq), 256, 0, s>>>(reinterpret_cast<__nv_bfloat16*>(ob), out, nq);
    else convert_kernel<<<elementwise_grid(nq), 256, 0, s>>>(reinterpret_cast<__half*>(ob), out, nq);
    ELASTIC_ATTN_LAUNCH_CHECK();
    CUDA_CHECK(cudaFreeAsync(qb, s));
    CUDA_CHECK(cudaFreeAsync(kb, s));
    CUDA_CHECK(cudaFreeAsync(vb, s));
    CUDA_CHECK(cudaFreeAsync(ob, s));
}

}  // namespace elastic::cuda
