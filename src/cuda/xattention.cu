// XAttention block estimation on the GPU (DESIGN.md §1.2; definition in cpu/attention.h).
// The strided score A[r][c] = Σ_t q[S r + S-1-t] · k[S c + t] / (√d S) is a GEMM over the
// concatenated strided rows (length S·d), read straight from q/k (no strided copies). Two passes
// over the causal tiles of A, 64 × 64 per CTA, fp32 FMA (fp32 like the CPU, so the selection
// matches it up to float ties; bf16 tensor cores would move scores by ~1e-3 and flip blocks near
// the threshold):
//   pass 1: per strided row, the running max and sum of 2^A (base-2 softmax statistics);
//   pass 2: P = 2^(A − m) / l summed per (query block, key block) in shared memory, then added
//           into fp64 block scores of the KV head (summed over the group's query heads).
// Selection runs on the host with cpu::xa_estimate's rule. Costs 2·T²·d/S FLOPs per query head
// (twice the estimate's own GEMM); a tensor-core version is the next step if this shows in profiles.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "cuda/attention-common.cuh"
#include "cuda/attention.h"
#include "cuda/convert.cuh"

namespace elastic::cuda {

using namespace detail;

namespace {

constexpr int kXT = 64;        // strided rows / columns per tile
constexpr int kXK = 16;        // GEMM depth per smem step
constexpr int kXThreads = 256;
constexpr int kXPad = kXT + 4;  // smem row stride (floats), keeps float4 alignment
constexpr int kXMaxB = kXT + 1; // block-sum cells per tile side (rb ≥ 1)

struct XAKernelParams {
    const void* q;  // [T, n_head, d] of the kernel's type TI
    const void* k;  // [T, n_kv, d]
    float* m;        // [group, R] row max (base 2)
    float* l;        // [group, R] row sum
    double* score;   // [nb, nb]
    int64_t T, R, nb;
    int n_head, n_kv, d, g, group, S, rb;
    float alpha;     // log2 e / (√d · S)
};

template <int PASS, typename TI>
__global__ void __launch_bounds__(kXThreads) xa_scores_kernel(const XAKernelParams p) {
    const TI* q = static_cast<const TI*>(p.q);
    const TI* k = static_cast<const TI*>(p.k);
    __shared__ __align__(16) float As[kXK][kXPad];  // [w][row]
    __shared__ __align__(16) float Bs[kXK][kXPad];  // [w][col]
    __shared__ float bs[PASS == 1 ? kXMaxB * kXMaxB : 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int hh = blockIdx.y, h = p.g * p.group + hh;
    const int64_t r0 = int64_t(blockIdx.x) * kXT;
    const int64_t W = int64_t(p.S) * p.d;
    const int64_t ldq = int64_t(p.n_head) * p.d, ldk = int64_t(p.n_kv) * p.d;

    float rm[4], rl[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t r = r0 + ty * 4 + i;
        if (PASS == 0) {
            rm[i] = -INFINITY;
            rl[i] = 0.0f;
        } else {
            rm[i] = r < p.R ? p.m[hh * p.R + r] : 0.0f;
            rl[i] = r < p.R ? p.l[hh * p.R + r] : 1.0f;
        }
    }

    const int64_t r_last = min(p.R - 1, r0 + kXT - 1);
    for (int64_t c0 = 0; c0 <= r_last; c0 += kXT) {
        float acc[4][4] = {};
        for (int64_t w0 = 0; w0 < W; w0 += kXK) {
            const int t = int(w0 / p.d), x0 = int(w0 % p.d);  // kXK divides d: one t per step
#pragma unroll
            for (int i = 0; i < kXT * kXK / kXThreads; ++i) {
                const int e = tid + i * kXThreads, row = e / kXK, kk = e % kXK;
                const int64_t qpos = int64_t(p.S) * (r0 + row) + p.S - 1 - t;
                const int64_t kpos = int64_t(p.S) * (c0 + row) + t;
                As[kk][row] = qpos < p.T ? to_f32(q[qpos * ldq + int64_t(h) * p.d + x0 + kk]) : 0.0f;
                Bs[kk][row] = kpos < p.T ? to_f32(k[kpos * ldk + int64_t(p.g) * p.d + x0 + kk]) : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < kXK; ++kk) {
                const float4 a = *reinterpret_cast<const float4*>(&As[kk][ty * 4]);
                const float4 b = *reinterpret_cast<const float4*>(&Bs[kk][tx * 4]);
                const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
            __syncthreads();
        }
        // Causal: column c ≤ row r (r < R); everything else is outside the softmax.
        float a[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int64_t r = r0 + ty * 4 + i, c = c0 + tx * 4 + j;
                a[i][j] = (r < p.R && c <= r) ? acc[i][j] * p.alpha : -INFINITY;
            }
        if (PASS == 0) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float mx = fmaxf(fmaxf(a[i][0], a[i][1]), fmaxf(a[i][2], a[i][3]));
#pragma unroll
                for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                const float m_new = fmaxf(rm[i], mx);
                const float ms = m_new == -INFINITY ? 0.0f : m_new;  // rows past R: all -inf, no NaN
                float sum = 0.0f;
#pragma unroll
                for (int j = 0; j < 4; ++j) sum += exp2f(a[i][j] - ms);
#pragma unroll
                for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
                rl[i] = rl[i] * exp2f(rm[i] - ms) + sum;
                rm[i] = m_new;
            }
        } else {
            for (int x = tid; x < kXMaxB * kXMaxB; x += kXThreads) bs[x] = 0.0f;
            __syncthreads();
            const int64_t qb0 = r0 / p.rb, kb0 = c0 / p.rb;
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (a[i][j] != -INFINITY) {
                        const int64_t r = r0 + ty * 4 + i, c = c0 + tx * 4 + j;
                        const float pr = exp2f(a[i][j] - rm[i]) / rl[i];
                        atomicAdd(&bs[(r / p.rb - qb0) * kXMaxB + (c / p.rb - kb0)], pr);
                    }
            __syncthreads();
            for (int x = tid; x < kXMaxB * kXMaxB; x += kXThreads) {
                const int64_t qb = qb0 + x / kXMaxB, kb = kb0 + x % kXMaxB;
                if (bs[x] != 0.0f && qb < p.nb && kb < p.nb) atomicAdd(&p.score[qb * p.nb + kb], double(bs[x]));
            }
            __syncthreads();
        }
    }
    if (PASS == 0 && tx == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int64_t r = r0 + ty * 4 + i;
            if (r < p.R) {
                p.m[hh * p.R + r] = rm[i];
                p.l[hh * p.R + r] = rl[i];
            }
        }
    }
}

}  // namespace

std::vector<double> xa_block_scores(const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head,
                                    int head_dim, int g, const XAParams& p, cudaStream_t s) {
    ELASTIC_ASSERT(T > 0 && n_kv_head > 0 && n_head % n_kv_head == 0 && g >= 0 && g < n_kv_head);
    ELASTIC_ASSERT(p.stride > 0 && p.block > 0 && p.block % p.stride == 0);
    ELASTIC_ASSERT_MSG(head_dim % kXK == 0, "head_dim must be a multiple of 16");
    const int group = n_head / n_kv_head;
    const int64_t R = (T + p.stride - 1) / p.stride, nb = (T + p.block - 1) / p.block;
    XAKernelParams kp{};
    kp.q = q;
    kp.k = k;
    kp.T = T;
    kp.R = R;
    kp.nb = nb;
    kp.n_head = n_head;
    kp.n_kv = n_kv_head;
    kp.d = head_dim;
    kp.g = g;
    kp.group = group;
    kp.S = int(p.stride);
    kp.rb = int(p.block / p.stride);
    kp.alpha = float(1.4426950408889634 / (std::sqrt(double(head_dim)) * double(p.stride)));
    CUDA_CHECK(cudaMallocAsync(&kp.m, size_t(group * R) * sizeof(float), s));
    CUDA_CHECK(cudaMallocAsync(&kp.l, size_t(group * R) * sizeof(float), s));
    CUDA_CHECK(cudaMallocAsync(&kp.score, size_t(nb * nb) * sizeof(double), s));
    CUDA_CHECK(cudaMemsetAsync(kp.score, 0, size_t(nb * nb) * sizeof(double), s));
    const dim3 grid(unsigned((R + kXT - 1) / kXT), unsigned(group));
    ELASTIC_TYPE_SWITCH(t, TI, {
        xa_scores_kernel<0, TI><<<grid, kXThreads, 0, s>>>(kp);
        CUDA_LAUNCH_CHECK();
        xa_scores_kernel<1, TI><<<grid, kXThreads, 0, s>>>(kp);
        CUDA_LAUNCH_CHECK();
    });
    std::vector<double> h(size_t(nb * nb));
    CUDA_CHECK(cudaMemcpyAsync(h.data(), kp.score, h.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaFreeAsync(kp.m, s));
    CUDA_CHECK(cudaFreeAsync(kp.l, s));
    CUDA_CHECK(cudaFreeAsync(kp.score, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return h;
}

void xa_fill_plan(const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head, int head_dim,
                  const XAParams& p, LayerPlan& plan, cudaStream_t s) {
    ELASTIC_ASSERT(plan.mode.size() == size_t(n_kv_head));
    ELASTIC_ASSERT(p.threshold > 0.0 && p.threshold <= 1.0);
    plan.xa.resize(size_t(n_kv_head));
    const int64_t nb = (T + p.block - 1) / p.block;
    std::vector<int32_t> order;
    for (int g = 0; g < n_kv_head; ++g) {
        if (plan.mode[size_t(g)] != HeadMode::XA) continue;
        const std::vector<double> sc = xa_block_scores(q, k, t, T, n_head, n_kv_head, head_dim, g, p, s);
        BlockList bl;
        bl.offsets.push_back(0);
        for (int64_t qb = 0; qb < nb; ++qb) {
            xa_select_blocks(sc.data() + qb * nb, qb, p.threshold, bl.blocks, order);
            bl.offsets.push_back(int64_t(bl.blocks.size()));
        }
        plan.xa[size_t(g)] = std::move(bl);
    }
}

}  // namespace elastic::cuda
