// Router training on the GPU (src/train/train-step.cpp through the Backend): the backward passes of
// the frozen backbone's ops, the chunked cross-entropy and the hybrid attention with log-sum-exp
// and its FlashAttention-2-style backward, all fp32. The CPU functions of src/train/backward.h are
// the specification; tests/test-cuda-train.cpp holds these to them on the same inputs.
//
// Attention: one thread block per (query head, 64-row query tile) in the forward and the dq pass,
// per (KV head, 64-key tile) in the dk/dv pass; each row (or key) is owned by head_dim/32 adjacent
// threads, 32 dimensions each, whose partial dot products meet through warp shuffles. The key tiles
// a query tile visits are those of the prefill kernel (cuda/attention-tiles.h: tile_range,
// tile_at, tile_visible), so the masks are plan_allows() exactly. Every output element has one
// writer in each pass: no atomics, and the result does not depend on scheduling.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "cuda/attention-plan.cuh"
#include "cuda/attention-tiles.h"
#include "cuda/cuda-check.h"
#include "cuda/ops.h"
#include "cuda/train.h"

namespace elastic::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kBM = 64;  // query rows per tile
constexpr int kBN = 64;  // keys per tile
constexpr int kMaxKvHeads = 64;

unsigned blocks_for(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return unsigned(std::min<int64_t>(b, 1 << 20));
}

// ---- row ops ----

// One warp per row: dx = r·w·dy − x·r³·Σ(w·dy·x)/dim, r = 1/sqrt(mean(x²) + eps).
__global__ void rms_norm_backward_kernel(const float* x, const float* w, const float* dy, float* dx, int64_t rows,
                                         int dim, float eps, bool accumulate) {
    const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xr = x + row * dim;
    const float* g = dy + row * dim;
    float* o = dx + row * dim;
    double ss = 0, dot = 0;
    for (int i = lane; i < dim; i += 32) {
        ss += double(xr[i]) * xr[i];
        dot += double(w[i]) * g[i] * xr[i];
    }
    for (int off = 16; off > 0; off /= 2) {
        ss += __shfl_xor_sync(0xffffffffu, ss, off);
        dot += __shfl_xor_sync(0xffffffffu, dot, off);
    }
    const double r = 1.0 / sqrt(ss / double(dim) + eps);
    const float a = float(r), b = float(r * r * r * dot / double(dim));
    for (int i = lane; i < dim; i += 32) {
        const float v = a * w[i] * g[i] - b * xr[i];
        o[i] = accumulate ? o[i] + v : v;
    }
}

__global__ void swiglu_backward_kernel(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                       int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
        dup[i] = dout[i] * g * sg;
        dgate[i] = dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

// ---- cross-entropy ----

__global__ void gather_rows_kernel(const float* src, const int32_t* idx, float* dst, int64_t cols) {
    const float* s = src + int64_t(idx[blockIdx.x]) * cols;
    float* d = dst + int64_t(blockIdx.x) * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) d[c] = s[c];
}
__global__ void scatter_rows_kernel(const float* src, const int32_t* idx, float* dst, int64_t cols) {
    const float* s = src + int64_t(blockIdx.x) * cols;
    float* d = dst + int64_t(idx[blockIdx.x]) * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) d[c] = s[c];
}

__device__ double block_sum(double v, double* part) {
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    __syncthreads();
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    double s = 0;
    for (int k = 0; k < int(blockDim.x / 32); ++k) s += part[k];
    return s;
}
__device__ float block_max(float v, float* part) {
    for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    __syncthreads();
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int k = 0; k < int(blockDim.x / 32); ++k) m = fmaxf(m, part[k]);
    return m;
}

// One block per row of logits [n, V]: loss[row] = logsumexp − logit[y]; the row becomes
// (softmax − onehot(y)) · inv_n.
__global__ void cross_entropy_kernel(float* logits, const int32_t* y, int64_t V, double inv_n, double* loss) {
    __shared__ double dpart[kThreads / 32];
    __shared__ float fpart[kThreads / 32];
    float* row = logits + int64_t(blockIdx.x) * V;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, fpart);
    double sum = 0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += exp(double(row[j] - mx));
    sum = block_sum(sum, dpart);
    const int32_t t = y[blockIdx.x];
    __syncthreads();
    const float target_logit = row[t];
    __syncthreads();
    if (threadIdx.x == 0) loss[blockIdx.x] = double(mx) + log(sum) - double(target_logit);
    const float a = float(inv_n / sum);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) row[j] = a * expf(row[j] - mx);
    __syncthreads();
    if (threadIdx.x == 0) row[t] -= float(inv_n);
}

// ---- mixing of the two attention paths ----

__global__ void mix_heads_kernel(const float* a, const float* b, MixWeights w, float* out, int64_t n, int n_head,
                                 int group, int head_dim) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int g = int((i / head_dim) % n_head) / group;
        out[i] = w.w[g] * a[i] + (1.0f - w.w[g]) * b[i];
    }
}

// blockIdx.y = KV head g: block x's share of Σ over rows and the group's heads of dout·(a − b), into
// part[g · gridDim.x + x] (summed on the host in order: deterministic, unlike atomics).
__global__ void mix_heads_dw_kernel(const float* dout, const float* a, const float* b, int64_t T, int n_head, int group,
                                    int head_dim, double* dw) {
    __shared__ double part[kThreads / 32];
    const int g = blockIdx.y;
    const int64_t per_row = int64_t(group) * head_dim, n = T * per_row;
    double acc = 0;
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
        const int64_t i = e / per_row, r = e % per_row;
        const int64_t idx = i * int64_t(n_head) * head_dim + int64_t(g) * per_row + r;
        acc += double(dout[idx]) * (double(a[idx]) - double(b[idx]));
    }
    acc = block_sum(acc, part);
    if (threadIdx.x == 0) dw[int64_t(g) * gridDim.x + blockIdx.x] = acc;
}

// ---- attention ----

struct AttnArgs {
    const float *q, *k, *v;  // q [T, Hq, d]; k, v [T, Hkv, d]
    int T, n_head, n_kv_head, head_dim, group;
    float scale;
    int sink, local, xa_block;
    const detail::HeadMeta* meta;  // [n_kv_head]
    const int32_t* xa_off;
    const int32_t* xa_blocks;
    float coef[kMaxKvHeads];  // backward: per KV head gradient weight
};

// Sum over the TPR adjacent lanes that own one row.
template <int TPR>
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
    for (int off = 1; off < TPR; off *= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ float dot32(const float (&a)[32], const float* b) {
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < 32; e += 4) {
        const float4 x = *reinterpret_cast<const float4*>(b + e);
        s += a[e] * x.x + a[e + 1] * x.y + a[e + 2] * x.z + a[e + 3] * x.w;
    }
    return s;
}
__device__ __forceinline__ void axpy32(float c, const float* x, float (&y)[32]) {
#pragma unroll
    for (int e = 0; e < 32; e += 4) {
        const float4 v = *reinterpret_cast<const float4*>(x + e);
        y[e] += c * v.x;
        y[e + 1] += c * v.y;
        y[e + 2] += c * v.z;
        y[e + 3] += c * v.w;
    }
}

// rows [r0, r0 + kBN) of a [T, heads, d] tensor's head `head` into smem [kBN, d] (zeros past T).
__device__ void load_rows(float* dst, const float* src, int r0, int T, int heads, int head, int d) {
    const int n4 = kBN * d / 4;
    for (int x = threadIdx.x; x < n4; x += blockDim.x) {
        const int r = (x * 4) / d, c = (x * 4) % d;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r0 + r < T) v = *reinterpret_cast<const float4*>(src + (int64_t(r0 + r) * heads + head) * d + c);
        *reinterpret_cast<float4*>(dst + r * d + c) = v;
    }
}

__device__ detail::TileRange range_of(const AttnArgs& p, const detail::HeadMeta& hm, int m0) {
    const int m1 = min(p.T, m0 + kBM);
    return detail::tile_range(hm.mode, m0, m1, kBN, p.sink, p.local, p.xa_block, p.xa_off, hm.xa_base);
}

// Forward: out and lse of query tile blockIdx.x of query head blockIdx.y.
template <int TPR>
__global__ void __launch_bounds__(kBM* TPR) attn_forward_kernel(AttnArgs p, float* out, float* lse) {
    extern __shared__ float4 smem4[];
    float* Ks = reinterpret_cast<float*>(smem4);
    const int d = 32 * TPR;
    float* Vs = Ks + kBN * d;
    const int h = blockIdx.y, g = h / p.group, m0 = blockIdx.x * kBM;
    const int row = threadIdx.x / TPR, part = threadIdx.x % TPR, i = m0 + row;
    const bool valid = i < p.T;
    const detail::HeadMeta hm = p.meta[g];
    float qv[32], acc[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) {
        qv[e] = valid ? p.q[(int64_t(i) * p.n_head + h) * d + part * 32 + e] : 0.0f;
        acc[e] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const detail::TileRange tr = range_of(p, hm, m0);
    for (int t = 0; t < tr.count; ++t) {
        const int n0 = detail::tile_at(tr, hm.mode, t, p.xa_blocks) * kBN;
        __syncthreads();
        load_rows(Ks, p.k, n0, p.T, p.n_kv_head, g, d);
        load_rows(Vs, p.v, n0, p.T, p.n_kv_head, g, d);
        __syncthreads();
        for (int jj = 0; jj < kBN; ++jj) {
            const int j = n0 + jj;
            const float s = row_sum<TPR>(dot32(qv, Ks + jj * d + part * 32)) * p.scale;
            if (!valid || !detail::tile_visible(hm.mode, i, j, p.T, p.sink, p.local)) continue;
            if (s > m) {
                const float a = expf(m - s);
                l *= a;
#pragma unroll
                for (int e = 0; e < 32; ++e) acc[e] *= a;
                m = s;
            }
            const float pj = expf(s - m);
            l += pj;
            axpy32(pj, Vs + jj * d + part * 32, acc);
        }
    }
    if (!valid) return;
    const float inv = 1.0f / l;  // l > 0: the diagonal is visible in every mode
#pragma unroll
    for (int e = 0; e < 32; ++e) out[(int64_t(i) * p.n_head + h) * d + part * 32 + e] = acc[e] * inv;
    if (part == 0) lse[int64_t(i) * p.n_head + h] = m + logf(l);
}

// delta[i, h] = Σ dout·o (one warp per row).
__global__ void attn_delta_kernel(const float* dout, const float* o, float* delta, int64_t rows, int d) {
    const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (r >= rows) return;
    float s = 0.0f;
    for (int e = lane; e < d; e += 32) s += dout[r * d + e] * o[r * d + e];
    for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) delta[r] = s;
}

// Whether query tile [m0, m0 + kBM) of a head visits key tile kt.
__device__ bool visits(const AttnArgs& p, const detail::HeadMeta& hm, int m0, int kt) {
    const detail::TileRange tr = range_of(p, hm, m0);
    if (hm.mode != detail::kModeXA) {
        const int last = (min(p.T, m0 + kBM) - 1) / kBN;
        return kt < tr.a || (kt >= tr.b && kt <= last);
    }
    for (int t = 0; t < tr.count; t += tr.tpb) {  // one list entry per key block
        const int first = detail::tile_at(tr, hm.mode, t, p.xa_blocks);
        if (kt >= first && kt < first + tr.tpb) return kt < first + min(tr.tpb, tr.count - t);
    }
    return false;
}

// dk, dv of key tile blockIdx.x of KV head blockIdx.y, summed over the group's query heads.
template <int TPR>
__global__ void __launch_bounds__(kBN* TPR) attn_backward_dkdv_kernel(AttnArgs p, const float* dout, const float* lse,
                                                                      const float* delta, float* dk, float* dv) {
    const int g = blockIdx.y;
    const float c = p.coef[g];
    if (c == 0.0f) return;
    extern __shared__ float4 smem4[];
    const int d = 32 * TPR;
    float* Qs = reinterpret_cast<float*>(smem4);
    float* Ds = Qs + kBM * d;
    __shared__ float lse_s[kBM], delta_s[kBM];
    const int n0 = blockIdx.x * kBN, kt = blockIdx.x;
    const int key = threadIdx.x / TPR, part = threadIdx.x % TPR, j = n0 + key;
    const bool valid = j < p.T;
    const detail::HeadMeta hm = p.meta[g];
    float kv[32], vv[32], dkv[32], dvv[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) {
        const int64_t at = (int64_t(j) * p.n_kv_head + g) * d + part * 32 + e;
        kv[e] = valid ? p.k[at] : 0.0f;
        vv[e] = valid ? p.v[at] : 0.0f;
        dkv[e] = dvv[e] = 0.0f;
    }
    const int nt = (p.T + kBM - 1) / kBM;
    for (int h = g * p.group; h < (g + 1) * p.group; ++h)
        for (int qt = (n0 / kBM); qt < nt; ++qt) {
            const int m0 = qt * kBM;
            if (!visits(p, hm, m0, kt)) continue;
            __syncthreads();
            load_rows(Qs, p.q, m0, p.T, p.n_head, h, d);
            load_rows(Ds, dout, m0, p.T, p.n_head, h, d);
            for (int r = threadIdx.x; r < kBM; r += blockDim.x) {
                const bool in = m0 + r < p.T;
                lse_s[r] = in ? lse[int64_t(m0 + r) * p.n_head + h] : 0.0f;
                delta_s[r] = in ? delta[int64_t(m0 + r) * p.n_head + h] : 0.0f;
            }
            __syncthreads();
            for (int r = 0; r < kBM; ++r) {
                const int i = m0 + r;
                const float* qi = Qs + r * d + part * 32;
                const float* doi = Ds + r * d + part * 32;
                const float s = row_sum<TPR>(dot32(kv, qi)) * p.scale;
                const float dp = row_sum<TPR>(dot32(vv, doi));
                if (!valid || i >= p.T || !detail::tile_visible(hm.mode, i, j, p.T, p.sink, p.local)) continue;
                const float pr = expf(s - lse_s[r]);
                const float ds = pr * (dp - delta_s[r]);
                axpy32(pr, doi, dvv);
                axpy32(ds, qi, dkv);
            }
        }
    if (!valid) return;
#pragma unroll
    for (int e = 0; e < 32; ++e) {
        const int64_t at = (int64_t(j) * p.n_kv_head + g) * d + part * 32 + e;
        dk[at] += c * p.scale * dkv[e];
        dv[at] += c * dvv[e];
    }
}

// dq of query tile blockIdx.x of query head blockIdx.y.
template <int TPR>
__global__ void __launch_bounds__(kBM* TPR) attn_backward_dq_kernel(AttnArgs p, const float* dout, const float* lse,
                                                                    const float* delta, float* dq) {
    const int h = blockIdx.y, g = h / p.group;
    const float c = p.coef[g];
    if (c == 0.0f) return;
    extern __shared__ float4 smem4[];
    const int d = 32 * TPR;
    float* Ks = reinterpret_cast<float*>(smem4);
    float* Vs = Ks + kBN * d;
    const int m0 = blockIdx.x * kBM;
    const int row = threadIdx.x / TPR, part = threadIdx.x % TPR, i = m0 + row;
    const bool valid = i < p.T;
    const detail::HeadMeta hm = p.meta[g];
    float qv[32], dov[32], dqv[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) {
        const int64_t at = (int64_t(i) * p.n_head + h) * d + part * 32 + e;
        qv[e] = valid ? p.q[at] : 0.0f;
        dov[e] = valid ? dout[at] : 0.0f;
        dqv[e] = 0.0f;
    }
    const float lse_i = valid ? lse[int64_t(i) * p.n_head + h] : 0.0f;
    const float delta_i = valid ? delta[int64_t(i) * p.n_head + h] : 0.0f;
    const detail::TileRange tr = range_of(p, hm, m0);
    for (int t = 0; t < tr.count; ++t) {
        const int n0 = detail::tile_at(tr, hm.mode, t, p.xa_blocks) * kBN;
        __syncthreads();
        load_rows(Ks, p.k, n0, p.T, p.n_kv_head, g, d);
        load_rows(Vs, p.v, n0, p.T, p.n_kv_head, g, d);
        __syncthreads();
        for (int jj = 0; jj < kBN; ++jj) {
            const int j = n0 + jj;
            const float s = row_sum<TPR>(dot32(qv, Ks + jj * d + part * 32)) * p.scale;
            const float dp = row_sum<TPR>(dot32(dov, Vs + jj * d + part * 32));
            if (!valid || !detail::tile_visible(hm.mode, i, j, p.T, p.sink, p.local)) continue;
            const float ds = expf(s - lse_i) * (dp - delta_i);
            axpy32(ds, Ks + jj * d + part * 32, dqv);
        }
    }
    if (!valid) return;
#pragma unroll
    for (int e = 0; e < 32; ++e) dq[(int64_t(i) * p.n_head + h) * d + part * 32 + e] += c * p.scale * dqv[e];
}

AttnArgs make_args(const AttnShape& s, const DevicePlan& dp, const float* q, const float* k, const float* v,
                   const float* coef) {
    if (s.head_dim != 32 && s.head_dim != 64 && s.head_dim != 128)
        fail("CUDA router training takes head_dim 32, 64 or 128; this model has %d (use --backend cpu)", s.head_dim);
    if (s.n_kv_head > kMaxKvHeads) fail("CUDA router training takes at most %d KV heads", kMaxKvHeads);
    if (s.T > (int64_t(1) << 30)) fail("CUDA router training: sequence too long");
    AttnArgs p{};
    p.q = q;
    p.k = k;
    p.v = v;
    p.T = int(s.T);
    p.n_head = s.n_head;
    p.n_kv_head = s.n_kv_head;
    p.head_dim = s.head_dim;
    p.group = s.n_head / s.n_kv_head;
    p.scale = s.scale;
    // A window reaching past the sequence behaves as no limit; clamped to int range.
    p.sink = int(std::min<int64_t>(s.win.sink, s.T));
    p.local = int(std::min<int64_t>(s.win.local, s.T + 1));
    p.xa_block = int(dp.has_xa ? dp.xa_block : kBN);
    p.meta = dp.d_meta;
    p.xa_off = dp.d_xa_off;
    p.xa_blocks = dp.d_xa_blocks;
    for (int g = 0; g < s.n_kv_head; ++g) p.coef[g] = coef ? coef[g] : 1.0f;
    return p;
}

template <typename Kernel>
void set_smem(Kernel k, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int TPR>
void forward_launch(const AttnArgs& p, float* out, float* lse, cudaStream_t s) {
    const size_t smem = size_t(2) * kBN * 32 * TPR * sizeof(float);
    set_smem(attn_forward_kernel<TPR>, smem);
    const dim3 grid(unsigned((p.T + kBM - 1) / kBM), unsigned(p.n_head));
    attn_forward_kernel<TPR><<<grid, kBM * TPR, smem, s>>>(p, out, lse);
    CUDA_LAUNCH_CHECK();
}

template <int TPR>
void backward_launch(const AttnArgs& p, const float* dout, const float* lse, const float* delta, float* dq, float* dk,
                     float* dv, cudaStream_t s) {
    const size_t smem = size_t(2) * kBN * 32 * TPR * sizeof(float);
    set_smem(attn_backward_dkdv_kernel<TPR>, smem);
    set_smem(attn_backward_dq_kernel<TPR>, smem);
    const unsigned tiles = unsigned((p.T + kBM - 1) / kBM);
    attn_backward_dkdv_kernel<TPR><<<dim3(tiles, unsigned(p.n_kv_head)), kBN * TPR, smem, s>>>(p, dout, lse, delta, dk, dv);
    CUDA_LAUNCH_CHECK();
    attn_backward_dq_kernel<TPR><<<dim3(tiles, unsigned(p.n_head)), kBM * TPR, smem, s>>>(p, dout, lse, delta, dq);
    CUDA_LAUNCH_CHECK();
}

}  // namespace

void rms_norm_backward(const float* x, const float* w, const float* dy, float* dx, int64_t rows, int64_t dim, float eps,
                       bool accumulate, cudaStream_t s) {
    if (rows <= 0) return;
    const int per_block = kThreads / 32;
    rms_norm_backward_kernel<<<unsigned((rows + per_block - 1) / per_block), kThreads, 0, s>>>(x, w, dy, dx, rows,
                                                                                               int(dim), eps, accumulate);
    CUDA_LAUNCH_CHECK();
}

void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n,
                     cudaStream_t s) {
    if (n <= 0) return;
    swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(gate, up, dout, dgate, dup, n);
    CUDA_LAUNCH_CHECK();
}

void matmul_dx(cublasHandle_t h, const float* W, int64_t rows, int64_t cols, const float* dy, float* dx, int64_t T,
               bool accumulate, cudaStream_t) {
    if (T <= 0) return;
    // Column-major view: dx^T[cols, T] = (W as [cols, rows]) @ dy^T[rows, T].
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, int(cols), int(T), int(rows), &alpha, W, CUDA_R_32F, int(cols),
                              dy, CUDA_R_32F, int(rows), &beta, dx, CUDA_R_32F, int(cols), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

// Stream-ordered scratch from the device's pool (kept across synchronisations, see CudaBackend):
// no cudaMalloc / cudaFree, whose implicit synchronisation stalled the step ~90 times.
template <typename T>
T* stream_alloc(size_t count, cudaStream_t s, const char* what) {
    void* p = nullptr;
    const cudaError_t e = cudaMallocAsync(&p, std::max<size_t>(count, 1) * sizeof(T), s);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail("CUDA: cannot allocate %.1f MiB for %s: %s", double(count * sizeof(T)) / (1 << 20), what,
             cudaGetErrorString(e));
    }
    return static_cast<T*>(p);
}

CrossEntropy cross_entropy(cublasHandle_t h, const float* W, int64_t V, int64_t D, const float* hid,
                           const int32_t* targets, int64_t T, float* dh, cudaStream_t s) {
    CUDA_CHECK(cudaMemsetAsync(dh, 0, size_t(T * D) * sizeof(float), s));
    std::vector<int32_t> rows, ys;
    for (int64_t t = 0; t < T; ++t)
        if (targets[t] >= 0) {
            ELASTIC_ASSERT(targets[t] < V);
            rows.push_back(int32_t(t));
            ys.push_back(targets[t]);
        }
    CrossEntropy ce;
    ce.count = int64_t(rows.size());
    if (ce.count == 0) return ce;
    const int64_t C = std::min<int64_t>(256, ce.count), n_all = ce.count;
    int32_t* d_rows = stream_alloc<int32_t>(size_t(2 * n_all), s, "cross-entropy rows");
    int32_t* d_ys = d_rows + n_all;
    float* hc = stream_alloc<float>(size_t(C * D), s, "cross-entropy rows");
    float* dhc = stream_alloc<float>(size_t(C * D), s, "cross-entropy rows");
    float* logits = stream_alloc<float>(size_t(C * V), s, "cross-entropy logits");
    double* loss = stream_alloc<double>(size_t(n_all), s, "cross-entropy losses");
    CUDA_CHECK(cudaMemcpyAsync(d_rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(d_ys, ys.data(), ys.size() * 4, cudaMemcpyHostToDevice, s));
    const double inv_n = 1.0 / double(n_all);
    for (int64_t c0 = 0; c0 < n_all; c0 += C) {
        const int64_t n = std::min(C, n_all - c0);
        gather_rows_kernel<<<unsigned(n), kThreads, 0, s>>>(hid, d_rows + c0, hc, D);
        CUDA_LAUNCH_CHECK();
        matmul(h, W, DType::F32, V, D, hc, DType::F32, nullptr, logits, DType::F32, n, s);
        cross_entropy_kernel<<<unsigned(n), kThreads, 0, s>>>(logits, d_ys + c0, V, inv_n, loss + c0);
        CUDA_LAUNCH_CHECK();
        matmul_dx(h, W, V, D, logits, dhc, n, false, s);
        scatter_rows_kernel<<<unsigned(n), kThreads, 0, s>>>(dhc, d_rows + c0, dh, D);
        CUDA_LAUNCH_CHECK();
    }
    std::vector<double> lh(static_cast<size_t>(n_all));
    CUDA_CHECK(cudaMemcpyAsync(lh.data(), loss, lh.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    double sum = 0;
    for (double x : lh) sum += x;
    ce.loss = sum * inv_n;
    for (void* p : {static_cast<void*>(d_rows), static_cast<void*>(hc), static_cast<void*>(dhc),
                    static_cast<void*>(logits), static_cast<void*>(loss)})
        CUDA_CHECK(cudaFreeAsync(p, s));
    return ce;
}

void mix_heads(const float* a, const float* b, const float* w, float* out, int64_t T, int n_head, int n_kv_head,
               int head_dim, cudaStream_t s) {
    if (n_kv_head > kMaxKvHeads) fail("CUDA router training takes at most %d KV heads", kMaxKvHeads);
    MixWeights mw{};
    for (int g = 0; g < n_kv_head; ++g) mw.w[g] = w[g];
    const int64_t n = T * n_head * head_dim;
    if (n <= 0) return;
    mix_heads_kernel<<<blocks_for(n), kThreads, 0, s>>>(a, b, mw, out, n, n_head, n_head / n_kv_head, head_dim);
    CUDA_LAUNCH_CHECK();
}

void mix_heads_dw(const float* dout, const float* a, const float* b, int64_t T, int n_head, int n_kv_head, int head_dim,
                  double* dw_host, cudaStream_t s) {
    const int group = n_head / n_kv_head;
    const int64_t per_head = T * group * head_dim;
    const unsigned bx = unsigned(std::min<int64_t>(std::max<int64_t>((per_head + kThreads - 1) / kThreads, 1), 256));
    std::vector<double> part(size_t(bx) * size_t(n_kv_head), 0.0);
    if (per_head > 0) {
        double* d = stream_alloc<double>(part.size(), s, "mixing gradients");
        mix_heads_dw_kernel<<<dim3(bx, unsigned(n_kv_head)), kThreads, 0, s>>>(dout, a, b, T, n_head, group, head_dim, d);
        CUDA_LAUNCH_CHECK();
        CUDA_CHECK(cudaMemcpyAsync(part.data(), d, part.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaFreeAsync(d, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
    }
    for (int g = 0; g < n_kv_head; ++g) {
        double acc = 0;
        for (unsigned x = 0; x < bx; ++x) acc += part[size_t(g) * bx + x];
        dw_host[g] = acc;
    }
}

void attn_forward_lse(const AttnShape& sh, const DevicePlan& dp, const float* q, const float* k, const float* v,
                      float* out, float* lse, cudaStream_t s) {
    if (sh.T <= 0) return;
    const AttnArgs p = make_args(sh, dp, q, k, v, nullptr);
    switch (sh.head_dim) {
    case 32: forward_launch<1>(p, out, lse, s); break;
    case 64: forward_launch<2>(p, out, lse, s); break;
    default: forward_launch<4>(p, out, lse, s); break;
    }
}

void attn_backward(const AttnShape& sh, const DevicePlan& dp, const float* q, const float* k, const float* v,
                   const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv,
                   const float* coef, cudaStream_t s) {
    if (sh.T <= 0) return;
    const AttnArgs p = make_args(sh, dp, q, k, v, coef);
    const int64_t rows = sh.T * sh.n_head;
    float* delta = stream_alloc<float>(size_t(rows), s, "attention backward");
    const int per_block = kThreads / 32;
    attn_delta_kernel<<<unsigned((rows + per_block - 1) / per_block), kThreads, 0, s>>>(dout, o, delta, rows, sh.head_dim);
    CUDA_LAUNCH_CHECK();
    switch (sh.head_dim) {
    case 32: backward_launch<1>(p, dout, lse, delta, dq, dk, dv, s); break;
    case 64: backward_launch<2>(p, dout, lse, delta, dq, dk, dv, s); break;
    default: backward_launch<4>(p, dout, lse, delta, dq, dk, dv, s); break;
    }
    CUDA_CHECK(cudaFreeAsync(delta, s));  // after the kernels, in stream order
}

}  // namespace elastic::cuda
