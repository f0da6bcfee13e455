// Tile bookkeeping of the attention kernels in plain C++ (host and device): the per-head metadata
// the prefill kernel reads, the key tiles each mode visits for a query tile, the token-exact mask
// and when a tile needs it, and the KV-cache spans of decode. One definition serves the kernels,
// the host scheduler (costs = tiles visited) and tests/test-cuda-tiles.cpp, which checks on the
// CPU, without a GPU, that the visited tiles plus the mask reproduce plan_allows() exactly.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define ELASTIC_HD __host__ __device__ inline
#else
#define ELASTIC_HD inline
#endif

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

ELASTIC_HD TileRange tile_range(int mode, int m0, int m1, int block_n, int sink, int local,
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

ELASTIC_HD int tile_at(const TileRange& r, int mode, int t, const int32_t* xa_blocks) {
    if (mode == kModeXA) return xa_blocks[r.xa_off + t / r.tpb] * r.tpb + t % r.tpb;
    return t < r.a ? t : r.b + (t - r.a);
}

// Whether query position i may see key j of a visited tile (XA: every key of a listed block,
// causally). L: sequence length.
ELASTIC_HD bool tile_visible(int mode, int i, int j, int L, int sink, int local) {
    return j <= i && j < L && (mode != kModeSSA || j < sink || i - j < local);
}

// Whether the tile of keys [n0, n0 + block_n) needs the mask for query rows [m0, m0 + block_m)
// (false: tile_visible holds for every pair of the tile; rows past L are never stored).
ELASTIC_HD bool tile_needs_mask(int mode, int m0, int block_m, int n0, int block_n, int L, int sink, int local) {
    return n0 + block_n - 1 > m0 || n0 + block_n > L ||
           (mode == kModeSSA && !(n0 + block_n <= sink || (m0 + block_m - 1) - n0 < local));
}

// ---- mma.sync m16n8k16 fragment addressing (prefill kernel; checked on the CPU against the PTX
// fragment layouts by tests/test-cuda-tiles.cpp) ----
// Element offset, in a shared tile of row stride `stride`, that `lane` hands to ldmatrix.x4 for
// the A fragment of rows [row0, row0 + 16) × k [k0, k0 + 16) (Q, row-major).
ELASTIC_HD int frag_a_offset(int lane, int row0, int k0, int stride) {
    return (row0 + (lane & 15)) * stride + k0 + (lane >> 4) * 8;
}
// ldmatrix.x4 on a [n][k] tile (K): B fragments {r0, r1} of keys [n0, n0 + 8) and {r2, r3} of
// keys [n0 + 8, n0 + 16), k [k0, k0 + 16).
ELASTIC_HD int frag_bk_offset(int lane, int n0, int k0, int stride) {
    return (n0 + (lane & 7) + ((lane >> 4) << 3)) * stride + k0 + ((lane >> 3) & 1) * 8;
}
// ldmatrix.x4.trans on a [k][n] tile (V): B fragments {r0, r1} of columns [n0, n0 + 8) and
// {r2, r3} of [n0 + 8, n0 + 16), k (keys) [k0, k0 + 16).
ELASTIC_HD int frag_bv_offset(int lane, int k0, int n0, int stride) {
    return (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + n0 + (lane >> 4) * 8;
}
// Row and column, inside its 16 × 8 block, of accumulator element e (0..3) of `lane`.
ELASTIC_HD int frag_c_row(int lane, int e) { return (lane >> 2) + (e >= 2 ? 8 : 0); }
ELASTIC_HD int frag_c_col(int lane, int e) { return (lane & 3) * 2 + (e & 1); }
// The A fragment (16 rows × 16 k) made of two accumulator blocks: lo = columns k 0..7, hi = 8..15
// (P of P·V straight from the S accumulators). pack(x, y) puts x in the low half.
template <typename U, typename Pack>
ELASTIC_HD void frag_a_from_c(const float (&lo)[4], const float (&hi)[4], U (&a)[4], Pack pack) {
    a[0] = pack(lo[0], lo[1]);
    a[1] = pack(lo[2], lo[3]);
    a[2] = pack(hi[0], hi[1]);
    a[3] = pack(hi[2], hi[3]);
}

// ---- decode: KV-cache layout of one head (cpu::LayerKVCache) ----
struct CacheHead {
    int64_t off;      // element offset of slot 0 in the K and V buffers
    int32_t mode;     // HeadMode
    int32_t n_sink;   // SSA: slots [0, n_sink) sink, [n_sink, n_sink + n_ring) ring
    int32_t n_ring;
    int32_t slots;
};

// Slot ranges [b, e) of the positions ≤ pos a head keeps (cpu::LayerKVCache::spans).
ELASTIC_HD int cache_spans(const CacheHead& h, int64_t sink, int64_t local, int64_t pos, int64_t* b, int64_t* e) {
    if (h.mode != kModeSSA) {
        b[0] = 0;
        e[0] = pos + 1;
        return 1;
    }
    int n = 0;
    const int64_t sink_end = sink < pos + 1 ? sink : pos + 1;
    if (sink_end > 0) {
        b[n] = 0;
        e[n] = sink_end;
        ++n;
    }
    const int64_t w0 = sink > pos - local + 1 ? sink : pos - local + 1;
    if (w0 <= pos) {
        const int64_t len = pos - w0 + 1, s0 = (w0 - sink) % local;
        if (s0 + len <= local) {
            b[n] = h.n_sink + s0;
            e[n] = h.n_sink + s0 + len;
            ++n;
        } else {
            b[n] = h.n_sink + s0;
            e[n] = h.n_sink + local;
            ++n;
            b[n] = h.n_sink;
            e[n] = h.n_sink + s0 + len - local;
            ++n;
        }
    }
    return n;
}

ELASTIC_HD int64_t spans_total(const int64_t* b, const int64_t* e, int n) {
    int64_t t = 0;
    for (int i = 0; i < n; ++i) t += e[i] - b[i];
    return t;
}

// Slot of a stored position (SSA: sink, then ring slot n_sink + (j − sink) % local).
ELASTIC_HD int64_t cache_slot(const CacheHead& h, int64_t sink, int64_t local, int64_t j) {
    return (h.mode != kModeSSA || j < sink) ? j : h.n_sink + (j - sink) % local;
}

}  // namespace elastic::cuda::detail
