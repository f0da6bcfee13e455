// The router of a layer on the device (DESIGN.md §1.1; src/attention/router.cpp is the reference):
// boundary pooling of the pre-RoPE keys in one kernel (fp64 sums, as router_pool), then the five
// Linear layers as fp32 cuBLAS GEMMs (no TF32) over the n_kv_head pooled rows, each followed by a
// bias (+ SiLU) kernel. Only the logits [n_kv_head, rh4.out] come back to the host, where
// Router::decision turns them into modes. No key row leaves the GPU.
#include "cuda/cuda-check.h"
#include "cuda/convert.cuh"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

// x[i] = mean of k[t * n + i] over t in [0, head_end) then [tail_begin, T) (both ranges, overlap
// twice). A block owns 32 columns; its 8 warps split the (≤ 2 × window) rows, so each thread issues
// a handful of coalesced loads instead of one long dependent chain, then sum in shared memory.
constexpr int kPoolCols = 32, kPoolGroups = 8;
template <typename TK>
__global__ void __launch_bounds__(kPoolCols * kPoolGroups)
    router_pool_kernel(const TK* __restrict__ k, int64_t T, int n, int64_t head_end, int64_t tail_begin,
                       float* __restrict__ x) {
    __shared__ double part[kPoolGroups][kPoolCols];
    const int c = threadIdx.x % kPoolCols, g = threadIdx.x / kPoolCols;
    const int i = int(blockIdx.x) * kPoolCols + c;
    const int64_t rows = head_end + (T - tail_begin);
    double acc = 0.0;
    if (i < n)
        for (int64_t r = g; r < rows; r += kPoolGroups) {
            const int64_t t = r < head_end ? r : tail_begin + (r - head_end);
            acc += to_f32(k[t * n + i]);
        }
    part[g][c] = acc;
    __syncthreads();
    if (g == 0 && i < n) {
        double s = 0.0;
        for (int j = 0; j < kPoolGroups; ++j) s += part[j][c];
        x[i] = float(s / double(rows));
    }
}

// y[r, o] += b[o], then SiLU when act.
__global__ void bias_act_kernel(float* y, const float* __restrict__ b, int rows, int out, bool act) {
    const int i = int(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * out) return;
    float v = y[i] + b[i % out];
    if (act) v = v / (1.0f + expf(-v));
    y[i] = v;
}

}  // namespace

size_t router_scratch_floats(const RouterLinearDev (&layers)[5], int n_kv_head, int head_dim) {
    size_t total = size_t(n_kv_head) * size_t(head_dim);
    for (const RouterLinearDev& L : layers) total += size_t(n_kv_head) * size_t(L.out);
    return total;
}

void router_logits(cublasHandle_t h, const RouterLinearDev (&layers)[5], const void* k, DType tk, int64_t T, int n_kv_head,
                   int head_dim, int window, float* buf, float* logits_host, cudaStream_t s) {
    const int n = n_kv_head * head_dim;
    const int64_t head_end = T < window ? T : window, tail_begin = T - window > 0 ? T - window : 0;
    const unsigned grid = unsigned((n + kPoolCols - 1) / kPoolCols);
    ELASTIC_TYPE_SWITCH(tk, TK, (router_pool_kernel<TK><<<grid, kPoolCols * kPoolGroups, 0, s>>>(
                                    static_cast<const TK*>(k), T, n, head_end, tail_begin, buf)));
    CUDA_LAUNCH_CHECK();
    const float* x = buf;
    float* y = buf + n;
    const bool act[5] = {true, false, true, true, false};  // fe0 SiLU, fe2, rh0 SiLU, rh2 SiLU, rh4
    const float one = 1.0f, zero = 0.0f;
    for (int l = 0; l < 5; ++l) {
        const RouterLinearDev& L = layers[l];
        // Column-major view: y^T[out, H] = (W as [in, out])^T @ x^T[in, H].
        CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, L.out, n_kv_head, L.in, &one, L.w, CUDA_R_32F, L.in, x,
                                  CUDA_R_32F, L.in, &zero, y, CUDA_R_32F, L.out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        const int m = n_kv_head * L.out;
        bias_act_kernel<<<unsigned((m + 127) / 128), 128, 0, s>>>(y, L.b, n_kv_head, L.out, act[l]);
        CUDA_LAUNCH_CHECK();
        x = y;
        y += m;
    }
    CUDA_CHECK(cudaMemcpyAsync(logits_host, x, size_t(n_kv_head) * size_t(layers[4].out) * sizeof(float),
                               cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace elastic::cuda
