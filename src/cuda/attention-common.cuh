// Shared pieces of the attention kernels: error checks, the per-head metadata the prefill kernel
// reads, the key-tile enumeration of each mode (one function used by the host scheduler and the
// kernel, so costs and work always agree), and the PTX wrappers (cp.async, ldmatrix, mma.sync).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#ifndef CUDA_CHECK
#define CUDA_CHECK(expr)                                                                              \
    do {                                                                                              \
        cudaError_t err_ = (expr);                                                                    \
        if (err_ != cudaSuccess) {                                                                    \
            std::fprintf(stderr, "%s:%d: CUDA error %s: %s\n", __FILE__, __LINE__, cudaGetErrorName(err_), \
                         cudaGetErrorString(err_));                                                   \
            std::abort();                                                                             \
        }                                                                                             \
    } while (0)
#endif
#define ELASTIC_ATTN_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

namespace elastic::cuda::detail {

constexpr int kModeFA = 0, kModeSSA = 1, kModeXA = 2;  // = HeadMode values

// Per (sequence, KV head).
struct HeadMeta {
    int32_t mode;     // kModeFA / kModeSSA / kModeXA
    int32_t xa_base;  // XA: index into xa_offsets of this head's query block 0 (n_qblocks + 1 entries)
};

// Work item of the prefill kernel: one query tile of one query head of one sequence.
struct WorkItem {
    int32_t seq, head, tile, cost;  // cost = key tiles
};

// Key tiles (of kBlockN keys, counted from the sequence start) that query rows [m0, m1) of a
// head visit, as at most two ascending runs [0, a) ∪ [b, last] (FA, SSA) or the XA list. XA
// needs m0, m1 in one query block (block_m divides xa_block) and kBlockN dividing xa_block; the
// host checks that each list is ascending with its diagonal block last, so every listed block
// but the last is whole.
struct TileRange {
    int32_t count;    // tiles to visit
    int32_t a, b;     // FA / SSA: tile t is t (t < a) or b + t - a
    int32_t xa_off;   // XA: first list entry
    int32_t tpb;      // XA: key tiles per block
};

__host__ __device__ inline TileRange tile_range(int mode, int m0, int m1, int block_n, int sink, int local,
                                                int xa_block, const int32_t* xa_offsets, int xa_base) {
    TileRange r{0, 0, 0, 0, 1};
    const int last = (m1 - 1) / block_n;
    if (mode == kModeSSA) {
        const int sink_end = sink < m1 ? sink : m1;
        const int a = (sink_end + block_n - 1) / block_n;
        const int win_begin = m0 - local + 1 > 0 ? m0 - local + 1 : 0;
        const int b = win_begin / block_n;
        if (b <= a) {
            r.count = last + 1;
            r.a = last + 1;
            r.b = last + 1;
        } else {
            r.count = a + (last - b + 1);
            r.a = a;
            r.b = b;
        }
    } else if (mode == kModeXA) {
        const int qb = m0 / xa_block;
        const int e0 = xa_offsets[xa_base + qb], e1 = xa_offsets[xa_base + qb + 1];
        const int tpb = xa_block / block_n;
        const int ne = e1 - e0;
        // Entries before the diagonal are whole blocks; the diagonal block qb is clipped at last.
        int diag = last + 1 - qb * tpb;
        diag = diag < tpb ? diag : tpb;
        r.count = ne > 0 ? (ne - 1) * tpb + diag : 0;
        r.xa_off = e0;
        r.tpb = tpb;
    } else {
        r.count = last + 1;
        r.a = last + 1;
        r.b = last + 1;
    }
    return r;
}

__host__ __device__ inline int tile_at(const TileRange& r, int mode, int t, const int32_t* xa_blocks) {
    if (mode == kModeXA) return xa_blocks[r.xa_off + t / r.tpb] * r.tpb + t % r.tpb;
    return t < r.a ? t : r.b + (t - r.a);
}

// ---- PTX wrappers (sm_80+) ----

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; src_bytes 0 zero-fills the destination (out-of-range rows).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                                  const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}

template <typename T>
struct MmaOp;
template <>
struct MmaOp<__nv_bfloat16> {
    // d = a·b + d, m16n8k16, bf16 inputs, fp32 accumulators.
    __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};
template <>
struct MmaOp<__half> {
    __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};

inline int device_sm_count() {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
}

}  // namespace elastic::cuda::detail
