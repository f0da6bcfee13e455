// Batch-1 products y[T, rows] = x[T, cols] @ W[rows, cols]^T for decode (T ≤ 4), 16-bit weights,
// fp32 accumulation: our kernel beside cuBLAS (matmul.cu chooses, see GemvTuning in ops.h).
// Decode is memory-bound: every weight byte is read once per token, so the kernel's only job is to
// keep the H200's ~4 TB/s busy:
//   - a CTA of 256 threads owns kRows = 4 rows; its 8 warps split the columns, every lane loads
//     16 bytes (8 weights) of each row per step with ld.global.nc (L1 bypassed, 512 contiguous bytes
//     per warp instruction) and two steps' loads are issued before any is used: 128 bytes per lane,
//     32 KB per CTA in flight, so even the 1024-row k/v projections (256 CTAs, two per SM) keep
//     ~64 KB per SM outstanding against the ~25 KB Little's law asks at 15 B/clk/SM;
//   - x (a few KB, shared by every CTA) goes through L1 with ordinary cached loads; an fp32 x is
//     rounded to the weight type as it is read, which is what matmul's conversion kernel + GEMM do,
//     without the extra launch;
//   - lanes reduce by shuffles, warps through shared memory, thread r·T + t writes y[t, row r];
//   - fused forms for the decode layer (ops.h: gemv_norm, gemv_norm_swiglu, gemv_add): up to three
//     matrices over one x in one launch (q, k, v), the RMSNorm of x in front (each CTA recomputes
//     1 / rms(x) under its first weight loads), SwiGLU of a gate and an up row pair, or a residual
//     add in the epilogue (with the q/k norms + RoPE + cache append kernel and the attention, six
//     launches per layer instead of fifteen), same bits;
//   - programmatic dependent launch on sm_90 (pdl_* below).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda/convert.cuh"
#include "cuda/cuda-check.h"
#include "cuda/ops.h"
#include "cuda/pdl.cuh"

namespace elastic::cuda {

// Programmatic launch of the GEMVs is opt-in, ELASTIC_PDL=1 (sm_90 or newer); the decode step's
// small kernels only with ELASTIC_DECODE_SMALL_PDL=1 as well (pdl.cuh says why).
bool small_pdl_enabled() {
    static const bool on = [] {
        const char* e = std::getenv("ELASTIC_DECODE_SMALL_PDL");
        return e && std::strcmp(e, "1") == 0 && pdl_enabled();
    }();
    return on;
}

bool pdl_enabled() {
    static const bool on = [] {
        const char* e = std::getenv("ELASTIC_PDL");
        if (!e || std::strcmp(e, "1") != 0) return false;
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            return false;
        }
        return major >= 9;
    }();
    return on;
}

namespace {

constexpr int kRows = 4;
constexpr int kGemvThreads = 256;
constexpr int kSteps = 2;  // column steps whose loads are in flight together

enum class Epi { Store, Add, SwiGLU };  // y = W x; y += W x (fp32 y); y = silu(Wg x) · (Wu x)

// Programmatic dependent launch (sm_90, pdl.cuh): every GEMV lets the next kernel of the stream be
// scheduled as soon as its own CTAs are all running, and is itself launched that way; it issues its
// first weight loads (which depend on nothing) before waiting for the previous kernel's results, so
// the weight stream of one product starts in the tail of the last one.

__device__ __forceinline__ uint4 ldg_stream(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// 8 consecutive 16-bit values → fp32.
__device__ __forceinline__ void unpack8(const uint4& u, __nv_bfloat16, float (&f)[8]) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ void unpack8(const uint4& u, __half, float (&f)[8]) {
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 v = __half22float2(h[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

// x[8] at element offset i of a row: 16-bit x as stored, fp32 x rounded to TW first.
template <typename TW>
__device__ __forceinline__ void load_x8(const TW* x, int64_t i, float (&f)[8]) {
    unpack8(__ldg(reinterpret_cast<const uint4*>(x + i)), TW(), f);
}
template <typename TW>
__device__ __forceinline__ void load_x8(const float* x, int64_t i, float (&f)[8]) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(x + i)), b = __ldg(reinterpret_cast<const float4*>(x + i + 4));
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int e = 0; e < 8; ++e) f[e] = to_f32(from_f32<TW>(v[e]));
}

// What one launch computes (gemv, gemv_norm, gemv_norm_swiglu, gemv_add in ops.h): up to three
// products over the same x, or the gate/up pair of a SwiGLU, with an optional RMSNorm of x in front
// and an optional residual add.
struct FusedArgs {
    const void* W[3];
    void* y[3];
    int64_t rows[3];
    int64_t cta_end[3];  // CTAs of segments 0..s (kRows rows each)
    int nseg;
    const void* x;       // [T, cols]
    const float* norm;   // RMSNorm weights [cols] (Norm kernels)
    float eps;
    int64_t cols;
};

// CTA layout of every variant: 256 threads over kRows rows (Epi::SwiGLU: kRows gate rows and the
// same kRows up rows). Norm: the CTA first computes 1 / rms(x_t) with the reduction of
// elementwise.cu's rms_norm_block_kernel (same thread count, order and formula), so x / rms · w
// rounded to TW is bit for bit what rms_norm + gemv read; the first weight loads are issued before
// it, so the norm hides under their latency.
template <int T, typename TW, typename TX, typename TY, Epi E, bool Norm>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const __grid_constant__ FusedArgs a) {
    constexpr int R = E == Epi::SwiGLU ? 2 * kRows : kRows;
    __shared__ float s_acc[kGemvThreads / 32][R][T];
    __shared__ float s_part[kGemvThreads / 32][T];
    __shared__ float s_inv[T];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int64_t cols = a.cols;
    const int64_t nchunk = cols / 8;  // 16-byte pieces per row
    int seg = 0;
    while (seg + 1 < a.nseg && int64_t(blockIdx.x) >= a.cta_end[seg]) ++seg;
    const int64_t r0 = (int64_t(blockIdx.x) - (seg ? a.cta_end[seg - 1] : 0)) * kRows;
    const int64_t rows = a.rows[seg];
    const TX* x = static_cast<const TX*>(a.x);
    const TW* wrow[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int s = E == Epi::SwiGLU ? r / kRows : seg;
        const int64_t row = min(r0 + r % kRows, rows - 1);  // past the end: row rows-1, not written
        wrow[r] = static_cast<const TW*>(a.W[s]) + row * cols;
    }
    float acc[R][T] = {};
    uint4 w[kSteps][R];
    auto load_w = [&](int64_t j0) {
#pragma unroll
        for (int u = 0; u < kSteps; ++u) {
            const int64_t j = j0 + int64_t(u) * kGemvThreads;
#pragma unroll
            for (int r = 0; r < R; ++r) w[u][r] = j < nchunk ? ldg_stream(wrow[r] + j * 8) : make_uint4(0, 0, 0, 0);
        }
    };
    pdl_launch_dependents();
    int64_t j0 = tid;
    load_w(j0);
    pdl_wait();  // x (and y for Epi::Add) are the previous kernels' results
    if constexpr (Norm) {
#pragma unroll
        for (int t = 0; t < T; ++t) {
            float ss = 0.0f;
            for (int64_t i = tid; i < cols; i += kGemvThreads) {
                const float v = to_f32(x[int64_t(t) * cols + i]);
                ss += v * v;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
            if (lane == 0) s_part[warp][t] = ss;
        }
        __syncthreads();
        if (tid < T) {
            float ss = 0.0f;
            for (int k = 0; k < kGemvThreads / 32; ++k) ss += s_part[k][tid];
            s_inv[tid] = 1.0f / sqrtf(ss / float(cols) + a.eps);
        }
        __syncthreads();
    }
    while (true) {
#pragma unroll
        for (int u = 0; u < kSteps; ++u) {
            const int64_t j = j0 + int64_t(u) * kGemvThreads;
            if (j >= nchunk) break;
            float nw[8];
            if constexpr (Norm) {
                const float4 n0 = __ldg(reinterpret_cast<const float4*>(a.norm + j * 8));
                const float4 n1 = __ldg(reinterpret_cast<const float4*>(a.norm + j * 8 + 4));
                const float v[8] = {n0.x, n0.y, n0.z, n0.w, n1.x, n1.y, n1.z, n1.w};
#pragma unroll
                for (int e = 0; e < 8; ++e) nw[e] = v[e];
            }
#pragma unroll
            for (int t = 0; t < T; ++t) {
                float xf[8];
                if constexpr (Norm) {
                    const float* xr = reinterpret_cast<const float*>(x) + int64_t(t) * cols + j * 8;
                    const float4 p0 = __ldg(reinterpret_cast<const float4*>(xr)), p1 = __ldg(reinterpret_cast<const float4*>(xr + 4));
                    const float v[8] = {p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w};
                    const float inv = s_inv[t];
#pragma unroll
                    for (int e = 0; e < 8; ++e) xf[e] = to_f32(from_f32<TW>(v[e] * inv * nw[e]));
                } else {
                    load_x8<TW>(x + int64_t(t) * cols, j * 8, xf);
                }
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float wf[8];
                    unpack8(w[u][r], TW(), wf);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[r][t] = fmaf(wf[e], xf[e], acc[r][t]);
                }
            }
        }
        j0 += int64_t(kGemvThreads) * kSteps;
        if (j0 >= nchunk) break;
        load_w(j0);
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < T; ++t) {
            float v = acc[r][t];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) s_acc[warp][r][t] = v;
        }
    __syncthreads();
    if (tid < kRows * T) {
        const int r = tid / T, t = tid % T;
        auto total = [&](int rr) {
            float v = 0.0f;
#pragma unroll
            for (int w8 = 0; w8 < kGemvThreads / 32; ++w8) v += s_acc[w8][rr][t];
            return v;
        };
        if (r0 + r < rows) {
            const int64_t at = int64_t(t) * rows + r0 + r;
            const float v = total(r);
            if constexpr (E == Epi::Store) {
                static_cast<TY*>(a.y[seg])[at] = from_f32<TY>(v);
            } else if constexpr (E == Epi::Add) {
                static_cast<float*>(a.y[seg])[at] += v;
            } else {  // silu(gate) · up, as swiglu_kernel
                const float u = total(r + kRows);
                static_cast<float*>(a.y[0])[at] = v / (1.0f + expf(-v)) * u;
            }
        }
    }
}

template <int T, typename TW, typename TX, typename TY, Epi E, bool Norm>
void launch(const FusedArgs& a, cudaStream_t s) {
    launch_pdl(gemv_kernel<T, TW, TX, TY, E, Norm>, dim3(unsigned(a.cta_end[a.nseg - 1])), dim3(kGemvThreads), 0, s, a);
}

template <typename TW, typename TX, typename TY, Epi E, bool Norm>
void launch_t(int64_t T, const FusedArgs& a, cudaStream_t s) {
    switch (T) {
    case 1: launch<1, TW, TX, TY, E, Norm>(a, s); break;
    case 2: launch<2, TW, TX, TY, E, Norm>(a, s); break;
    case 3: launch<3, TW, TX, TY, E, Norm>(a, s); break;
    default: launch<4, TW, TX, TY, E, Norm>(a, s); break;
    }
}

FusedArgs args_of(const void* const* W, void* const* y, const int64_t* rows, int nseg, const void* x, int64_t cols) {
    FusedArgs a{};
    a.nseg = nseg;
    a.x = x;
    a.cols = cols;
    int64_t ctas = 0;
    for (int i = 0; i < nseg; ++i) {
        a.W[i] = W[i];
        a.y[i] = y[i];
        a.rows[i] = rows[i];
        ctas += (rows[i] + kRows - 1) / kRows;
        a.cta_end[i] = ctas;
    }
    return a;
}

}  // namespace

bool gemv_takes(DType tw, int64_t rows, int64_t cols, const void* W, DType tx, const void* x, DType ty, int64_t T) {
    const bool w16 = tw == DType::BF16 || tw == DType::F16;
    return w16 && T >= 1 && T <= kGemvMaxT && rows >= 1 && rows < (int64_t(1) << 31) * kRows && cols >= 8 && cols % 8 == 0 &&
           (tx == tw || tx == DType::F32) && (ty == tw || ty == DType::F32) && reinterpret_cast<uintptr_t>(W) % 16 == 0 &&
           reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

void gemv(const void* W, DType tw, int64_t rows, int64_t cols, const void* x, DType tx, void* y, DType ty, int64_t T,
          cudaStream_t s) {
    ELASTIC_ASSERT_MSG(gemv_takes(tw, rows, cols, W, tx, x, ty, T), "gemv: shape or types it does not take");
    const FusedArgs a = args_of(&W, &y, &rows, 1, x, cols);
    auto by_x = [&](auto w) {
        using TW = decltype(w);
        if (tx == DType::F32) {
            if (ty == DType::F32) launch_t<TW, float, float, Epi::Store, false>(T, a, s);
            else launch_t<TW, float, TW, Epi::Store, false>(T, a, s);
        } else {
            if (ty == DType::F32) launch_t<TW, TW, float, Epi::Store, false>(T, a, s);
            else launch_t<TW, TW, TW, Epi::Store, false>(T, a, s);
        }
    };
    if (tw == DType::BF16) by_x(__nv_bfloat16());
    else by_x(__half());
}

void gemv_norm(const void* const* W, DType tw, const int64_t* rows, void* const* y, DType ty, int nseg, const float* x,
               const float* norm, float eps, int64_t cols, int64_t T, cudaStream_t s) {
    ELASTIC_ASSERT_MSG(nseg >= 1 && nseg <= 3, "gemv_norm: 1 to 3 products");
    for (int i = 0; i < nseg; ++i)
        ELASTIC_ASSERT_MSG(gemv_takes(tw, rows[i], cols, W[i], DType::F32, x, ty, T), "gemv_norm: a product it does not take");
    FusedArgs a = args_of(W, y, rows, nseg, x, cols);
    a.norm = norm;
    a.eps = eps;
    auto go = [&](auto w) {
        using TW = decltype(w);
        if (ty == DType::F32) launch_t<TW, float, float, Epi::Store, true>(T, a, s);
        else launch_t<TW, float, TW, Epi::Store, true>(T, a, s);
    };
    if (tw == DType::BF16) go(__nv_bfloat16());
    else go(__half());
}

void gemv_norm_swiglu(const void* Wg, const void* Wu, DType tw, int64_t rows, float* out, const float* x, const float* norm,
                      float eps, int64_t cols, int64_t T, cudaStream_t s) {
    ELASTIC_ASSERT_MSG(gemv_takes(tw, rows, cols, Wg, DType::F32, x, DType::F32, T) &&
                           gemv_takes(tw, rows, cols, Wu, DType::F32, x, DType::F32, T),
                       "gemv_norm_swiglu: a product it does not take");
    const void* W[2] = {Wg, Wu};
    void* y[2] = {out, out};
    const int64_t r[2] = {rows, rows};
    FusedArgs a = args_of(W, y, r, 1, x, cols);  // one segment of CTAs, each over both matrices
    a.W[1] = Wu;
    a.norm = norm;
    a.eps = eps;
    if (tw == DType::BF16) launch_t<__nv_bfloat16, float, float, Epi::SwiGLU, true>(T, a, s);
    else launch_t<__half, float, float, Epi::SwiGLU, true>(T, a, s);
}

void gemv_add(const void* W, DType tw, int64_t rows, int64_t cols, const void* x, DType tx, float* y, int64_t T,
              cudaStream_t s) {
    ELASTIC_ASSERT_MSG(gemv_takes(tw, rows, cols, W, tx, x, DType::F32, T), "gemv_add: a product it does not take");
    void* yv = y;
    const FusedArgs a = args_of(&W, &yv, &rows, 1, x, cols);
    auto go = [&](auto w) {
        using TW = decltype(w);
        if (tx == DType::F32) launch_t<TW, float, float, Epi::Add, false>(T, a, s);
        else launch_t<TW, TW, float, Epi::Add, false>(T, a, s);
    };
    if (tw == DType::BF16) go(__nv_bfloat16());
    else go(__half());
}

}  // namespace elastic::cuda
