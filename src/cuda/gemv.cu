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
//   - lanes reduce by shuffles, warps through shared memory, thread r·T + t writes y[t, row r].
#include <cstdint>

#include "cuda/convert.cuh"
#include "cuda/cuda-check.h"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

constexpr int kRows = 4;
constexpr int kGemvThreads = 256;
constexpr int kSteps = 2;  // column steps whose loads are in flight together

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

template <int T, typename TW, typename TX, typename TY>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const TW* __restrict__ W, const TX* __restrict__ x,
                                                            TY* __restrict__ y, int64_t rows, int64_t cols) {
    __shared__ float s_acc[kGemvThreads / 32][kRows][T];
    const int64_t r0 = int64_t(blockIdx.x) * kRows;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int64_t nchunk = cols / 8;  // 16-byte pieces per row
    float acc[kRows][T] = {};
    const TW* wrow[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) wrow[r] = W + min(r0 + r, rows - 1) * cols;  // past the end: row rows-1, not written

    for (int64_t j0 = tid; j0 < nchunk; j0 += int64_t(kGemvThreads) * kSteps) {
        uint4 w[kSteps][kRows];
#pragma unroll
        for (int u = 0; u < kSteps; ++u) {
            const int64_t j = j0 + int64_t(u) * kGemvThreads;
#pragma unroll
            for (int r = 0; r < kRows; ++r) w[u][r] = j < nchunk ? ldg_stream(wrow[r] + j * 8) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kSteps; ++u) {
            const int64_t j = j0 + int64_t(u) * kGemvThreads;
            if (j >= nchunk) break;
#pragma unroll
            for (int t = 0; t < T; ++t) {
                float xf[8];
                load_x8<TW>(x + int64_t(t) * cols, j * 8, xf);
#pragma unroll
                for (int r = 0; r < kRows; ++r) {
                    float wf[8];
                    unpack8(w[u][r], TW(), wf);
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[r][t] = fmaf(wf[e], xf[e], acc[r][t]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int t = 0; t < T; ++t) {
            float a = acc[r][t];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
            if (lane == 0) s_acc[warp][r][t] = a;
        }
    __syncthreads();
    if (tid < kRows * T) {
        const int r = tid / T, t = tid % T;
        float a = 0.0f;
#pragma unroll
        for (int w8 = 0; w8 < kGemvThreads / 32; ++w8) a += s_acc[w8][r][t];
        if (r0 + r < rows) y[int64_t(t) * rows + r0 + r] = from_f32<TY>(a);
    }
}

template <int T, typename TW, typename TX, typename TY>
void launch(const void* W, const void* x, void* y, int64_t rows, int64_t cols, cudaStream_t s) {
    const int64_t grid = (rows + kRows - 1) / kRows;
    gemv_kernel<T, TW, TX, TY><<<unsigned(grid), kGemvThreads, 0, s>>>(static_cast<const TW*>(W), static_cast<const TX*>(x),
                                                                       static_cast<TY*>(y), rows, cols);
    CUDA_LAUNCH_CHECK();
}

template <typename TW, typename TX, typename TY>
void launch_t(int64_t T, const void* W, const void* x, void* y, int64_t rows, int64_t cols, cudaStream_t s) {
    switch (T) {
    case 1: launch<1, TW, TX, TY>(W, x, y, rows, cols, s); break;
    case 2: launch<2, TW, TX, TY>(W, x, y, rows, cols, s); break;
    case 3: launch<3, TW, TX, TY>(W, x, y, rows, cols, s); break;
    default: launch<4, TW, TX, TY>(W, x, y, rows, cols, s); break;
    }
}

template <typename TW>
void launch_w(DType tx, DType ty, int64_t T, const void* W, const void* x, void* y, int64_t rows, int64_t cols,
              cudaStream_t s) {
    if (tx == DType::F32) {
        if (ty == DType::F32) launch_t<TW, float, float>(T, W, x, y, rows, cols, s);
        else launch_t<TW, float, TW>(T, W, x, y, rows, cols, s);
    } else {
        if (ty == DType::F32) launch_t<TW, TW, float>(T, W, x, y, rows, cols, s);
        else launch_t<TW, TW, TW>(T, W, x, y, rows, cols, s);
    }
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
    if (tw == DType::BF16) launch_w<__nv_bfloat16>(tx, ty, T, W, x, y, rows, cols, s);
    else launch_w<__half>(tx, ty, T, W, x, y, rows, cols, s);
}

}  // namespace elastic::cuda
