// Sampling on the device: the k largest logits (k <= Backend::kMaxCandidates) as (value, index),
// so that only k pairs leave the GPU per token instead of the vocabulary (Sampler finishes the
// draw on the host from them: temperature, top-p, its generator).
// Each (value, index) is one 64-bit key: the float's bits mapped to an unsigned order, then
// ~index, so the largest key is the largest value and, among equal values, the lowest index
// (std::max_element's choice). Pass 1: each block keeps its chunk's keys in shared memory and
// takes the k largest by k block-wide max reductions, clearing each winner; pass 2: one block does
// the same over the blocks' candidates.
//
// Top-p without top-k (sorted_candidates): the scaled logits sorted whole by cub's radix sort
// (stable, so equal values keep the lower index first, as the host's comparator does; ~4 passes
// over 1.2 MB for a 151k vocabulary), the normaliser summed in fp64 by one block (a fixed order:
// the same bits every call), and only the leading entries copied back: the host cuts the nucleus
// from them and draws (Sampler::sample_sorted) exactly as from the full logits.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda/cuda-check.h"
#include "cuda/ops.h"

namespace elastic::cuda {

namespace {

constexpr int kTopThreads = 256;
constexpr int kTopChunk = 2048;  // keys per block in pass 1 (16 KiB of shared memory)

__device__ __forceinline__ uint64_t make_key(float v, uint32_t i) {
    uint32_t u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (uint64_t(u) << 32) | uint64_t(~i);
}

__device__ uint64_t block_max(uint64_t x, uint64_t* red) {
    for (int off = 16; off > 0; off >>= 1) {
        const uint64_t y = __shfl_xor_sync(0xffffffffu, x, off);
        x = y > x ? y : x;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // red is free (the previous round's readers are done)
    if (lane == 0) red[warp] = x;
    __syncthreads();
    x = 0;
    for (int w = 0; w < kTopThreads / 32; ++w) x = red[w] > x ? red[w] : x;
    return x;
}

// keys[0, n) of this block → the k largest into out[0, k) (fewer valid ones are 0).
__device__ void top_k_of(uint64_t* keys, int n, int k, uint64_t* out, uint64_t* red) {
    for (int r = 0; r < k; ++r) {
        uint64_t best = 0;
        for (int i = threadIdx.x; i < n; i += kTopThreads) best = keys[i] > best ? keys[i] : best;
        best = block_max(best, red);
        if (threadIdx.x == 0) out[r] = best;
        for (int i = threadIdx.x; i < n; i += kTopThreads)
            if (keys[i] == best) keys[i] = 0;  // keys are unique (the index is in them)
        __syncthreads();
    }
}

__global__ void __launch_bounds__(kTopThreads) top_pass1(const float* __restrict__ x, int32_t n, int k, uint64_t* cand) {
    __shared__ uint64_t keys[kTopChunk];
    __shared__ uint64_t red[kTopThreads / 32];
    const int64_t b0 = int64_t(blockIdx.x) * kTopChunk;
    const int64_t left = int64_t(n) - b0;
    const int m = left < kTopChunk ? int(left) : kTopChunk;
    for (int i = threadIdx.x; i < m; i += kTopThreads) keys[i] = make_key(x[b0 + i], uint32_t(b0 + i));
    __syncthreads();
    top_k_of(keys, m, k, cand + int64_t(blockIdx.x) * k, red);
}

__global__ void __launch_bounds__(kTopThreads) top_pass2(uint64_t* cand, int n, int k, uint64_t* out) {
    __shared__ uint64_t red[kTopThreads / 32];
    top_k_of(cand, n, k, out, red);  // in place in global memory: one block, small n
}

__global__ void scale_kernel(const float* __restrict__ x, int32_t n, float temperature, float* __restrict__ s,
                             int32_t* __restrict__ idx) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float v = x[i] / temperature;  // IEEE division (no fast math), as the host's
        s[i] = v == 0.0f ? 0.0f : v;  // −0 as +0: the radix sort orders bits, the host compares values
        idx[i] = int32_t(i);
    }
}

constexpr int kSumThreads = 1024;

// out = Σ exp(double(s_i − s_0)) over sorted s[0, n) (s_0 the largest), one block, fixed order.
__global__ void __launch_bounds__(kSumThreads) normaliser_kernel(const float* __restrict__ s, int32_t n, double* out) {
    __shared__ double red[kSumThreads / 32];
    const float s0 = s[0];
    double acc = 0;
    for (int32_t i = threadIdx.x; i < n; i += kSumThreads) acc += exp(double(s[i] - s0));
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int w = 0; w < kSumThreads / 32; ++w) t += red[w];
        *out = t;
    }
}

size_t align_up(size_t x) { return (x + 255) & ~size_t(255); }

}  // namespace

double sorted_candidates(const float* logits, int32_t n, float temperature, int m, std::pair<float, int32_t>* out_host,
                         cudaStream_t s) {
    ELASTIC_ASSERT(n >= 1 && m >= 1 && m <= n);
    size_t sort_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, sort_bytes, static_cast<const float*>(nullptr),
                                                         static_cast<float*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                         static_cast<int32_t*>(nullptr), n, 0, 32, s));
    const size_t nb = align_up(size_t(n) * 4);
    char* buf = nullptr;  // s_in, s_out, idx_in, idx_out [n] each, the sum, cub's scratch
    CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&buf), 4 * nb + 256 + sort_bytes, s));
    float* s_in = reinterpret_cast<float*>(buf);
    float* s_out = reinterpret_cast<float*>(buf + nb);
    int32_t* i_in = reinterpret_cast<int32_t*>(buf + 2 * nb);
    int32_t* i_out = reinterpret_cast<int32_t*>(buf + 3 * nb);
    double* d_sum = reinterpret_cast<double*>(buf + 4 * nb);
    void* tmp = buf + 4 * nb + 256;
    const unsigned blocks = unsigned(std::min<int64_t>((int64_t(n) + 255) / 256, 1024));
    scale_kernel<<<blocks, 256, 0, s>>>(logits, n, temperature, s_in, i_in);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(tmp, sort_bytes, s_in, s_out, i_in, i_out, n, 0, 32, s));
    normaliser_kernel<<<1, kSumThreads, 0, s>>>(s_out, n, d_sum);
    CUDA_LAUNCH_CHECK();
    std::vector<float> v(static_cast<size_t>(m));
    std::vector<int32_t> id(static_cast<size_t>(m));
    double sum = 0;
    CUDA_CHECK(cudaMemcpyAsync(v.data(), s_out, size_t(m) * 4, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaMemcpyAsync(id.data(), i_out, size_t(m) * 4, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaMemcpyAsync(&sum, d_sum, sizeof(double), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaFreeAsync(buf, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < m; ++i) out_host[i] = {v[size_t(i)], id[size_t(i)]};
    return sum;
}

void top_candidates(const float* logits, int32_t n, int k, std::pair<float, int32_t>* out_host, cudaStream_t s) {
    const int blocks = int((int64_t(n) + kTopChunk - 1) / kTopChunk);
    uint64_t* buf = nullptr;
    const size_t n1 = size_t(blocks) * size_t(k);
    CUDA_CHECK(cudaMallocAsync(&buf, (n1 + size_t(k)) * sizeof(uint64_t), s));
    top_pass1<<<unsigned(blocks), kTopThreads, 0, s>>>(logits, n, k, buf);
    CUDA_LAUNCH_CHECK();
    top_pass2<<<1, kTopThreads, 0, s>>>(buf, int(n1), k, buf + n1);
    CUDA_LAUNCH_CHECK();
    std::vector<uint64_t> keys(static_cast<size_t>(k));
    CUDA_CHECK(cudaMemcpyAsync(keys.data(), buf + n1, size_t(k) * sizeof(uint64_t), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaFreeAsync(buf, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    for (int r = 0; r < k; ++r) {
        uint32_t u = uint32_t(keys[size_t(r)] >> 32);
        u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
        float v;
        std::memcpy(&v, &u, 4);
        out_host[r] = {v, int32_t(~uint32_t(keys[size_t(r)]))};
    }
}

}  // namespace elastic::cuda
