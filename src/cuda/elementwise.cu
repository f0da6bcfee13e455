// Row-wise and element-wise ops on the device: RMSNorm, RoPE, SwiGLU, residual add. fp32 arithmetic
// (RMSNorm and RoPE read and write fp32 or the 16-bit attention type) with IEEE division and accurate expf/sincosf (no fast-math), so results sit within fp32 rounding of
// src/cpu/elementwise.cpp. These are memory-bound; each thread does a few elements.
#include <type_traits>

#include "core/error.h"
#include "cuda/attention-tiles.h"
#include "cuda/cuda-check.h"
#include "cuda/convert.cuh"
#include "cuda/ops.h"
#include "cuda/pdl.cuh"

namespace elastic::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per row, blockDim (32, 8): for short rows (q/k norms over head_dim).
template <typename TX, typename TY>
__global__ void rms_norm_warp_kernel(const TX* x, const float* w, TY* y, int64_t rows, int dim, float eps) {
    const int64_t r = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
    if (r >= rows) return;
    const TX* xr = x + r * dim;
    TY* yr = y + r * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += 32) ss += to_f32(xr[i]) * to_f32(xr[i]);
    ss = warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss / float(dim) + eps);
    for (int i = threadIdx.x; i < dim; i += 32) yr[i] = from_f32<TY>(to_f32(xr[i]) * inv * w[i]);
}

// One block of kThreads per row: for model-width rows.
template <typename TX, typename TY>
__global__ void rms_norm_block_kernel(const TX* x, const float* w, TY* y, int dim, float eps) {
    __shared__ float part[kThreads / 32];
    const TX* xr = x + int64_t(blockIdx.x) * dim;
    TY* yr = y + int64_t(blockIdx.x) * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += kThreads) ss += to_f32(xr[i]) * to_f32(xr[i]);
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    ss = 0.0f;
    for (int k = 0; k < kThreads / 32; ++k) ss += part[k];
    const float inv = 1.0f / sqrtf(ss / float(dim) + eps);
    for (int i = threadIdx.x; i < dim; i += kThreads) yr[i] = from_f32<TY>(to_f32(xr[i]) * inv * w[i]);
}

// One thread per (token, frequency), looping over heads: the angle is computed once per pair, and
// neighbouring threads touch neighbouring elements of a head.
template <typename T>
__global__ void rope_kernel(T* x, int64_t T_, int n_heads, int head_dim, const int32_t* pos, int32_t pos0,
                            const float* inv_freq) {
    const int half = head_dim / 2;
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= T_ * half) return;
    const int64_t t = idx / half;
    const int i = int(idx % half);
    const int32_t p = pos ? pos[t] : pos0 + int32_t(t);
    const float ang = float(p) * inv_freq[i];  // the fp32 product, as HF
    float s, c;
    sincosf(ang, &s, &c);
    for (int h = 0; h < n_heads; ++h) {
        T* v = x + (t * n_heads + h) * head_dim;
        const float a = to_f32(v[i]), b = to_f32(v[i + half]);
        v[i] = from_f32<T>(a * c - b * s);
        v[i + half] = from_f32<T>(b * c + a * s);
    }
}

// Decode rows' q and k in one launch: one warp per (token, head) row of head_dim D = 32 · E; lane
// l holds elements l + 32 e. The RMSNorm is rms_norm_warp_kernel's (same order of squares, same
// shuffles, same formula, rounded to T), the rotation rope_kernel's (pairs i, i + D/2 in one lane).
// kAppend: each k row, as rotated, also goes to its token's cache slot, and T · nk more warps copy
// the v rows there (cache_store_kernel's slot and rounding: bf16 of the T value).
template <typename T, int E, bool kAppend>
__global__ void qk_norm_rope_kernel(T* q, T* k, const float* qn, const float* kn, float eps, int64_t T_, int nq, int nk,
                                    const int32_t* pos, int32_t pos0, const float* inv_freq, const KvAppend app) {
    constexpr int D = 32 * E, half = D / 2;
    // Programmatic launch (pdl.cuh): started in the tail of the q/k/v product, it waits for it here;
    // the kernel after it may be scheduled at once (it waits for this grid in turn).
    pdl_launch_dependents();
    pdl_wait();
    const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    const int64_t n_rot = T_ * (nq + nk);
    if (row >= n_rot + (kAppend ? T_ * nk : 0)) return;
    const int lane = threadIdx.x % 32;
    const bool v_row = kAppend && row >= n_rot;  // a v row, copied to the cache
    const int64_t t = v_row ? (row - n_rot) / nk : row / (nq + nk);
    const int h = v_row ? nq + int((row - n_rot) % nk) : int(row % (nq + nk));  // q heads, then KV heads
    const int32_t p = pos ? pos[t] : pos0 + int32_t(t);
    int64_t off = 0;  // kAppend, KV head h − nq: its cache slot's first element
    if (kAppend && h >= nq) {
        const detail::CacheHead ch = static_cast<const detail::CacheHead*>(app.heads[t])[h - nq];
        off = ch.off + detail::cache_slot(ch, app.sink[t], app.local[t], p) * D;
    }
    if (v_row) {
        const T* src = static_cast<const T*>(app.v) + (t * nk + (h - nq)) * D;
#pragma unroll
        for (int e = 0; e < E; ++e) app.vc[t][off + lane + 32 * e] = __float2bfloat16_rn(to_f32(src[lane + 32 * e]));
        return;
    }
    T* v = h < nq ? q + (t * nq + h) * D : k + (t * nk + (h - nq)) * D;
    const float* w = h < nq ? qn : kn;
    float x[E];
#pragma unroll
    for (int e = 0; e < E; ++e) x[e] = to_f32(v[lane + 32 * e]);
    if (w) {
        float ss = 0.0f;
#pragma unroll
        for (int e = 0; e < E; ++e) ss += x[e] * x[e];
        ss = warp_sum(ss);
        const float inv = 1.0f / sqrtf(ss / float(D) + eps);
#pragma unroll
        for (int e = 0; e < E; ++e) x[e] = to_f32(from_f32<T>(x[e] * inv * w[lane + 32 * e]));
    }
#pragma unroll
    for (int e = 0; e < E / 2; ++e) {
        const int i = lane + 32 * e;
        const float ang = float(p) * inv_freq[i];
        float sn, cs;
        sincosf(ang, &sn, &cs);
        const float a = x[e], b = x[e + E / 2];
        const T lo = from_f32<T>(a * cs - b * sn), hi = from_f32<T>(b * cs + a * sn);
        v[i] = lo;
        v[i + half] = hi;
        if (kAppend && h >= nq) {
            app.kc[t][off + i] = __float2bfloat16_rn(to_f32(lo));
            app.kc[t][off + i + half] = __float2bfloat16_rn(to_f32(hi));
        }
    }
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] += x[i];
}

unsigned blocks_for(int64_t n) {  // grid-stride kernels: enough blocks to fill any GPU, no more
    const int64_t b = (n + kThreads - 1) / kThreads;
    return unsigned(b < (1 << 16) ? b : (1 << 16));
}

}  // namespace

namespace {
template <typename TX, typename TY>
void rms_norm_typed(const void* x, const float* w, void* y, int64_t rows, int64_t dim, float eps, cudaStream_t s) {
    const TX* xt = static_cast<const TX*>(x);
    TY* yt = static_cast<TY*>(y);
    if (dim <= 256) {
        const dim3 block(32, 8);
        rms_norm_warp_kernel<TX, TY><<<unsigned((rows + 7) / 8), block, 0, s>>>(xt, w, yt, rows, int(dim), eps);
    } else {
        rms_norm_block_kernel<TX, TY><<<unsigned(rows), kThreads, 0, s>>>(xt, w, yt, int(dim), eps);
    }
    CUDA_LAUNCH_CHECK();
}
}  // namespace

void rms_norm(const void* x, DType tx, const float* w, void* y, DType ty, int64_t rows, int64_t dim, float eps,
              cudaStream_t s) {
    if (rows <= 0) return;
    ELASTIC_ASSERT_MSG(tx == ty || tx == DType::F32, "rms_norm: 16-bit input needs an output of the same type");
    if (tx == ty) ELASTIC_TYPE_SWITCH(tx, T, (rms_norm_typed<T, T>(x, w, y, rows, dim, eps, s)));
    else ELASTIC_TYPE_SWITCH(ty, T, (rms_norm_typed<float, T>(x, w, y, rows, dim, eps, s)));
}

void rope(void* x, DType t, int64_t T, int n_heads, int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq,
          cudaStream_t s) {
    const int64_t n = T * (head_dim / 2);
    if (n <= 0) return;
    const unsigned grid = unsigned((n + kThreads - 1) / kThreads);
    ELASTIC_TYPE_SWITCH(t, E, (rope_kernel<E><<<grid, kThreads, 0, s>>>(static_cast<E*>(x), T, n_heads, head_dim, pos, pos0,
                                                                          inv_freq)));
    CUDA_LAUNCH_CHECK();
}

namespace {
template <bool kAppend>
void qk_norm_rope_launch(void* q, void* k, DType t, const float* qn, const float* kn, float eps, int64_t T, int nq, int nk,
                         int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq, const KvAppend& app,
                         cudaStream_t s) {
    ELASTIC_ASSERT_MSG(head_dim == 64 || head_dim == 128, "qk_norm_rope: head_dim 64 or 128");
    const int64_t rows = T * (nq + nk) + (kAppend ? T * nk : 0);
    if (rows <= 0) return;
    const unsigned grid = unsigned((rows + kThreads / 32 - 1) / (kThreads / 32));
    auto go = [&](auto e) {
        constexpr int E = decltype(e)::value;
        ELASTIC_TYPE_SWITCH(t, X, (launch_pdl_if(small_pdl_enabled(), qk_norm_rope_kernel<X, E, kAppend>, dim3(grid),
                                                 dim3(kThreads), 0, s, static_cast<X*>(q), static_cast<X*>(k), qn, kn, eps,
                                                 T, nq, nk, pos, pos0, inv_freq, app)));
    };
    if (head_dim == 128) go(std::integral_constant<int, 4>());
    else go(std::integral_constant<int, 2>());
    CUDA_LAUNCH_CHECK();
}
}  // namespace

void qk_norm_rope(void* q, void* k, DType t, const float* qn, const float* kn, float eps, int64_t T, int nq, int nk,
                  int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq, cudaStream_t s) {
    qk_norm_rope_launch<false>(q, k, t, qn, kn, eps, T, nq, nk, head_dim, pos, pos0, inv_freq, KvAppend{}, s);
}

void qk_norm_rope_append(void* q, void* k, DType t, const float* qn, const float* kn, float eps, int64_t T, int nq,
                         int nk, int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq,
                         const KvAppend& app, cudaStream_t s) {
    ELASTIC_ASSERT_MSG(T <= kGemvMaxT && app.v, "qk_norm_rope_append: at most kGemvMaxT tokens, and their v");
    for (int64_t i = 0; i < T; ++i) ELASTIC_ASSERT(app.kc[i] && app.vc[i] && app.heads[i]);
    qk_norm_rope_launch<true>(q, k, t, qn, kn, eps, T, nq, nk, head_dim, pos, pos0, inv_freq, app, s);
}

void swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t s) {
    if (n <= 0) return;
    swiglu_kernel<<<blocks_for(n), kThreads, 0, s>>>(gate, up, out, n);
    CUDA_LAUNCH_CHECK();
}

void add(float* y, const float* x, int64_t n, cudaStream_t s) {
    if (n <= 0) return;
    add_kernel<<<blocks_for(n), kThreads, 0, s>>>(y, x, n);
    CUDA_LAUNCH_CHECK();
}

}  // namespace elastic::cuda
