// Row-wise and element-wise ops on the device: RMSNorm, RoPE, SwiGLU, residual add. All fp32 with
// IEEE division and accurate expf/sincosf (no fast-math), so results sit within fp32 rounding of
// src/cpu/elementwise.cpp. These are memory-bound; each thread does a few elements.
#include "cuda/cuda-check.h"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per row, blockDim (32, 8): for short rows (q/k norms over head_dim).
__global__ void rms_norm_warp_kernel(const float* x, const float* w, float* y, int64_t rows, int dim, float eps) {
    const int64_t r = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
    if (r >= rows) return;
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += 32) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss / float(dim) + eps);
    for (int i = threadIdx.x; i < dim; i += 32) yr[i] = xr[i] * inv * w[i];
}

// One block of kThreads per row: for model-width rows.
__global__ void rms_norm_block_kernel(const float* x, const float* w, float* y, int dim, float eps) {
    __shared__ float part[kThreads / 32];
    const float* xr = x + int64_t(blockIdx.x) * dim;
    float* yr = y + int64_t(blockIdx.x) * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += kThreads) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    ss = 0.0f;
    for (int k = 0; k < kThreads / 32; ++k) ss += part[k];
    const float inv = 1.0f / sqrtf(ss / float(dim) + eps);
    for (int i = threadIdx.x; i < dim; i += kThreads) yr[i] = xr[i] * inv * w[i];
}

// One thread per (token, frequency), looping over heads: the angle is computed once per pair, and
// neighbouring threads touch neighbouring elements of a head.
__global__ void rope_kernel(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, int32_t pos0,
                            const float* inv_freq) {
    const int half = head_dim / 2;
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= T * half) return;
    const int64_t t = idx / half;
    const int i = int(idx % half);
    const int32_t p = pos ? pos[t] : pos0 + int32_t(t);
    const float ang = float(p) * inv_freq[i];  // the fp32 product, as HF
    float s, c;
    sincosf(ang, &s, &c);
    for (int h = 0; h < n_heads; ++h) {
        float* v = x + (t * n_heads + h) * head_dim;
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
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

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, cudaStream_t s) {
    if (rows <= 0) return;
    if (dim <= 256) {
        const dim3 block(32, 8);
        rms_norm_warp_kernel<<<unsigned((rows + 7) / 8), block, 0, s>>>(x, w, y, rows, int(dim), eps);
    } else {
        rms_norm_block_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, w, y, int(dim), eps);
    }
    CUDA_LAUNCH_CHECK();
}

void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, int32_t pos0, const float* inv_freq,
          cudaStream_t s) {
    const int64_t n = T * (head_dim / 2);
    if (n <= 0) return;
    rope_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, s>>>(x, T, n_heads, head_dim, pos, pos0, inv_freq);
    CUDA_LAUNCH_CHECK();
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
