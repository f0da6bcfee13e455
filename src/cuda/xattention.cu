// XAttention block estimation on the GPU (DESIGN.md §1.2; definition in cpu/attention.h).
// The strided score A[r][c] = Σ_t q[S r + S-1-t] · k[S c + t] / (√d S) is a GEMM over the
// concatenated strided rows (length S·d), read straight from q/k (no strided copies). Two passes
// over the causal tiles of A, 64 × 64 per CTA, fp32 FMA (fp32 like the CPU, so the selection
// matches it up to float ties; bf16 tensor cores would move scores by ~1e-3 and flip blocks near
// the threshold):
//   pass 1: per strided row, the running max and sum of 2^A (base-2 softmax statistics);
//   pass 2: P = 2^(A − m) / l summed per (query block, key block) in shared memory, then added
//           into fp64 block scores of the KV head (summed over the group's query heads).
// Costs 2·T²·d/S FLOPs per query head (twice the estimate's own GEMM); a tensor-core version is the
// next step if this shows in profiles.
//
// Selection (xa_select_blocks' rule, bit for bit), two ways:
//   - xa_fill_plan: the scores go to the host, the lists are selected there (training, tests);
//   - xa_fill_device_plan (the forward): one CTA per query block sorts its candidate blocks in
//     shared memory (bitonic; descending score, ties by lower id: a total order, so the same
//     order as the host's std::sort), one thread then sums the total and walks the sorted scores in
//     the host's order (the same fp64 additions), and the kept blocks go to a bit mask; a one-CTA
//     scan turns the counts into the list offsets and one warp per query block writes its list,
//     ascending, straight into the device plan the prefill kernel reads. Nothing crosses to the
//     host but the attended-pair counts (for Ω_ESR), copied behind the work.
#include <algorithm>
#include <climits>
#include <cmath>
#include <numeric>
#include <vector>

#include <cub/block/block_scan.cuh>

#include "core/error.h"
#include "cuda/attention-common.cuh"
#include "cuda/attention-plan.cuh"
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

constexpr int kSelThreads = 512;
constexpr int kSelMaxCand = 16384;  // candidates one CTA sorts in shared memory (nb ≤ 16386)

struct XASelectParams {
    const double* score;        // [nb, nb] of one KV head
    uint32_t* bits;             // [nb, words] of that head
    int32_t* count;             // [nb] of that head
    unsigned long long* pairs;  // that head's attended pairs (added to)
    int nb, words, cap;         // cap: power of two ≥ the candidates of the last query block
    int64_t T, block;
    double threshold;
};

// One CTA per query block qb: blocks 0 and qb, then the candidates 1..qb-1 by descending score
// (ties: lower id) while the kept mass is below threshold · total (xa_select_blocks).
__global__ void __launch_bounds__(kSelThreads) xa_select_kernel(const XASelectParams p) {
    extern __shared__ __align__(16) unsigned char smem[];
    double* key = reinterpret_cast<double*>(smem);       // [cap]
    int32_t* id = reinterpret_cast<int32_t*>(key + p.cap);  // [cap]
    uint32_t* mask = reinterpret_cast<uint32_t*>(id + p.cap);  // [words]
    __shared__ int taken_s;
    const int qb = blockIdx.x, tid = threadIdx.x;
    const double* s = p.score + int64_t(qb) * p.nb;
    const int nc = qb > 1 ? qb - 1 : 0;
    int P = 1;
    while (P < nc) P <<= 1;
    for (int i = tid; i < P; i += blockDim.x) {
        key[i] = i < nc ? s[i + 1] : -INFINITY;
        id[i] = i < nc ? i + 1 : INT_MAX;
    }
    const int words = (qb >> 5) + 1;
    for (int w = tid; w < words; w += blockDim.x) mask[w] = 0u;
    __syncthreads();
    // Bitonic sort into "before" order: a before b when its score is larger, or equal with the lower id.
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = tid; i < P; i += blockDim.x) {
                const int l = i ^ j;
                if (l <= i) continue;
                const double ki = key[i], kl = key[l];
                const int ii = id[i], il = id[l];
                const bool l_first = kl > ki || (kl == ki && il < ii);
                const bool i_first = ki > kl || (ki == kl && ii < il);
                if ((i & k) == 0 ? l_first : i_first) {
                    key[i] = kl;
                    key[l] = ki;
                    id[i] = il;
                    id[l] = ii;
                }
            }
            __syncthreads();
        }
    if (tid == 0) {
        double total = 0.0;  // std::accumulate's order
        for (int x = 0; x <= qb; ++x) total += s[x];
        double mass = s[0];
        if (qb > 0) mass += s[qb];
        int taken = 0;
        while (taken < nc && !(mass >= p.threshold * total)) mass += key[taken++];
        taken_s = taken;
    }
    __syncthreads();
    const int taken = taken_s;
    for (int x = tid; x < taken; x += blockDim.x) atomicOr(&mask[id[x] >> 5], 1u << (id[x] & 31));
    if (tid == 0) {
        atomicOr(&mask[0], 1u);
        atomicOr(&mask[qb >> 5], 1u << (qb & 31));
    }
    __syncthreads();
    for (int w = tid; w < words; w += blockDim.x) p.bits[int64_t(qb) * p.words + w] = mask[w];
    if (tid == 0) {
        const int cnt = taken + 1 + (qb > 0 ? 1 : 0);
        p.count[qb] = cnt;
        const int64_t r0 = int64_t(qb) * p.block, r1 = min(p.T, r0 + p.block), rows = r1 - r0;
        atomicAdd(p.pairs, (unsigned long long)(int64_t(cnt - 1) * rows * p.block + rows * (rows + 1) / 2));
    }
}

// Offsets of the lists: head j's query block qb starts at off[j (nb + 1) + qb], its end at the next
// entry (all heads' lists back to back, head-major). One CTA.
constexpr int kScanThreads = 1024;
__global__ void __launch_bounds__(kScanThreads) xa_offsets_kernel(const int32_t* count, int heads, int nb, int32_t* off) {
    using Scan = cub::BlockScan<int, kScanThreads>;
    __shared__ typename Scan::TempStorage tmp;
    int carry = 0;
    const int rows = heads * nb;
    for (int base = 0; base < rows; base += kScanThreads) {
        const int r = base + int(threadIdx.x);
        const int c = r < rows ? count[r] : 0;
        int excl = 0, agg = 0;
        Scan(tmp).ExclusiveSum(c, excl, agg);
        if (r < rows) {
            const int j = r / nb, qb = r % nb;
            off[j * (nb + 1) + qb] = carry + excl;
            if (qb == nb - 1) off[j * (nb + 1) + nb] = carry + excl + c;
        }
        carry += agg;
        __syncthreads();  // tmp is reused
    }
}

// One warp per (query block, head): the kept ids, ascending, at the list's offset.
__global__ void xa_lists_kernel(const uint32_t* bits, const int32_t* off, int nb, int words, int32_t* blocks) {
    const int qb = blockIdx.x, j = blockIdx.y, lane = threadIdx.x;
    const uint32_t* m = bits + (int64_t(j) * nb + qb) * words;
    int pos = off[j * (nb + 1) + qb];
    const int nw = (qb >> 5) + 1;
    for (int w0 = 0; w0 < nw; w0 += 32) {
        const int w = w0 + lane;
        uint32_t word = w < nw ? m[w] : 0u;
        const int c = __popc(word);
        int incl = c;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += y;
        }
        int at = pos + incl - c;
        while (word) {
            blocks[at++] = w * 32 + (__ffs(int(word)) - 1);
            word &= word - 1u;
        }
        pos += __shfl_sync(0xffffffffu, incl, 31);
    }
}

}  // namespace

namespace {

// The two score passes of KV head g into score [nb, nb] (zeroed here) with ml [2, group, R] as
// scratch; queued on s.
void launch_scores(const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head, int head_dim, int g,
                   const XAParams& p, float* ml, double* score, cudaStream_t s) {
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
    kp.m = ml;
    kp.l = ml + group * R;
    kp.score = score;
    CUDA_CHECK(cudaMemsetAsync(kp.score, 0, size_t(nb * nb) * sizeof(double), s));
    const dim3 grid(unsigned((R + kXT - 1) / kXT), unsigned(group));
    ELASTIC_TYPE_SWITCH(t, TI, {
        xa_scores_kernel<0, TI><<<grid, kXThreads, 0, s>>>(kp);
        CUDA_LAUNCH_CHECK();
        xa_scores_kernel<1, TI><<<grid, kXThreads, 0, s>>>(kp);
        CUDA_LAUNCH_CHECK();
    });
}

int select_cap(int64_t nb) {
    int cap = 1;
    while (cap < nb - 2) cap <<= 1;
    return cap;
}

// Selection of the j-th XA head from its scores (device [nb, nb]) into dp's masks and counts.
void launch_select(DevicePlan& dp, int j, const double* score, int64_t T, int64_t block, double threshold,
                   cudaStream_t s) {
    const int nb = int(dp.xa_nb), words = (nb + 31) / 32, cap = select_cap(nb);
    XASelectParams sp{};
    sp.score = score;
    sp.bits = dp.d_xa_bits + int64_t(j) * nb * words;
    sp.count = dp.d_xa_count + int64_t(j) * nb;
    sp.pairs = dp.d_xa_pairs + j;
    sp.nb = nb;
    sp.words = words;
    sp.cap = cap;
    sp.T = T;
    sp.block = block;
    sp.threshold = threshold;
    const size_t smem = size_t(cap) * (sizeof(double) + sizeof(int32_t)) + size_t(words) * sizeof(uint32_t);
    if (smem > 48 * 1024)  // past the default limit (set on every such launch: the device may differ)
        CUDA_CHECK(cudaFuncSetAttribute(xa_select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    xa_select_kernel<<<unsigned(nb), kSelThreads, smem, s>>>(sp);
    CUDA_LAUNCH_CHECK();
}

// Room for the selection of `heads` XA heads of nb query blocks, and the lists' offsets and ids.
void reserve_selection(DevicePlan& dp, int heads, int64_t nb) {
    const int64_t words = (nb + 31) / 32;
    ensure_capacity(dp.d_xa_bits, dp.cap_xa_bits, size_t(heads * nb * words), "XAttention selection");
    ensure_capacity(dp.d_xa_count, dp.cap_xa_count, size_t(heads * nb), "XAttention selection");
    ensure_capacity(dp.d_xa_pairs, dp.cap_xa_pairs, size_t(heads), "XAttention selection");
    if (!dp.h_xa_pairs || dp.cap_xa_pairs > dp.cap_xa_pairs_host) {
        CUDA_CHECK(cudaFreeHost(dp.h_xa_pairs));
        dp.h_xa_pairs = nullptr;
        CUDA_CHECK(cudaMallocHost(&dp.h_xa_pairs, dp.cap_xa_pairs * sizeof(unsigned long long)));
        dp.cap_xa_pairs_host = dp.cap_xa_pairs;
    }
    ensure_capacity(dp.d_xa_off, dp.cap_xa_off, size_t(heads * (nb + 1)), "XAttention lists");
    // At most every causal block: nb (nb + 1) / 2 per head.
    ensure_capacity(dp.d_xa_blocks, dp.cap_xa_blocks, size_t(heads * (nb * (nb + 1) / 2)), "XAttention lists");
}

// Offsets and lists of dp's xa_heads heads from their masks and counts; the pair counts copied to
// the pinned buffer behind them.
void launch_lists(DevicePlan& dp, cudaStream_t s) {
    const int nb = int(dp.xa_nb), words = (nb + 31) / 32;
    xa_offsets_kernel<<<1, kScanThreads, 0, s>>>(dp.d_xa_count, dp.xa_heads, nb, dp.d_xa_off);
    CUDA_LAUNCH_CHECK();
    xa_lists_kernel<<<dim3(unsigned(nb), unsigned(dp.xa_heads)), 32, 0, s>>>(dp.d_xa_bits, dp.d_xa_off, nb, words,
                                                                                dp.d_xa_blocks);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaMemcpyAsync(dp.h_xa_pairs, dp.d_xa_pairs, size_t(dp.xa_heads) * sizeof(unsigned long long),
                               cudaMemcpyDeviceToHost, s));
}

}  // namespace

std::vector<double> xa_block_scores(const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head,
                                    int head_dim, int g, const XAParams& p, cudaStream_t s) {
    ELASTIC_ASSERT(T > 0 && n_kv_head > 0 && n_head % n_kv_head == 0);
    ELASTIC_ASSERT(p.stride > 0 && p.block > 0);
    const int group = n_head / n_kv_head;
    const int64_t R = (T + p.stride - 1) / p.stride, nb = (T + p.block - 1) / p.block;
    float* ml = nullptr;
    double* score = nullptr;
    CUDA_CHECK(cudaMallocAsync(&ml, size_t(2 * group * R) * sizeof(float), s));
    CUDA_CHECK(cudaMallocAsync(&score, size_t(nb * nb) * sizeof(double), s));
    launch_scores(q, k, t, T, n_head, n_kv_head, head_dim, g, p, ml, score, s);
    std::vector<double> h(size_t(nb * nb));
    CUDA_CHECK(cudaMemcpyAsync(h.data(), score, h.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaFreeAsync(ml, s));
    CUDA_CHECK(cudaFreeAsync(score, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return h;
}

bool xa_device_select_supported(int64_t T, const XAParams& p, int xa_heads) {
    if (p.block <= 0 || p.block % 64 != 0 || T <= 0 || xa_heads <= 0) return false;
    const int64_t nb = (T + p.block - 1) / p.block;
    // The candidates of a query block fit one CTA's sort; every list id fits the int32 offsets.
    return nb - 2 <= kSelMaxCand && int64_t(xa_heads) * (nb * (nb + 1) / 2) < (int64_t(1) << 31);
}

void xa_fill_device_plan(DevicePlan& dp, const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head,
                         int head_dim, const XAParams& p, const LayerPlan& plan, cudaStream_t s) {
    ELASTIC_ASSERT(plan.mode.size() == size_t(n_kv_head));
    ELASTIC_ASSERT(p.threshold > 0.0 && p.threshold <= 1.0);
    const int xa_heads = int(std::count(plan.mode.begin(), plan.mode.end(), HeadMode::XA));
    ELASTIC_ASSERT_MSG(xa_device_select_supported(T, p, xa_heads), "XAttention selection on the device: sequence too long");
    fill_plan_device_xa(dp, plan, T, p.block, s);
    if (!dp.xa_device) return;
    const int group = n_head / n_kv_head;
    const int64_t R = (T + p.stride - 1) / p.stride, nb = dp.xa_nb;
    reserve_selection(dp, dp.xa_heads, nb);
    ensure_capacity(dp.d_xa_ml, dp.cap_xa_ml, size_t(2 * group * R), "XAttention estimation");
    ensure_capacity(dp.d_xa_score, dp.cap_xa_score, size_t(nb * nb), "XAttention estimation");
    CUDA_CHECK(cudaMemsetAsync(dp.d_xa_pairs, 0, size_t(dp.xa_heads) * sizeof(unsigned long long), s));
    int j = 0;
    for (int g = 0; g < n_kv_head; ++g) {
        if (plan.mode[size_t(g)] != HeadMode::XA) continue;
        launch_scores(q, k, t, T, n_head, n_kv_head, head_dim, g, p, dp.d_xa_ml, dp.d_xa_score, s);
        launch_select(dp, j++, dp.d_xa_score, T, p.block, p.threshold, s);
    }
    launch_lists(dp, s);
}

std::vector<int64_t> device_xa_pairs(const DevicePlan& dp, const LayerPlan& plan, cudaStream_t s) {
    std::vector<int64_t> pairs(plan.mode.size(), 0);
    if (!dp.xa_device) return pairs;
    CUDA_CHECK(cudaStreamSynchronize(s));
    int j = 0;
    for (size_t g = 0; g < plan.mode.size(); ++g)
        if (plan.mode[g] == HeadMode::XA) pairs[g] = int64_t(dp.h_xa_pairs[j++]);
    return pairs;
}

void download_device_xa(const DevicePlan& dp, LayerPlan& plan, cudaStream_t s) {
    bool same = dp.xa_device && dp.n_kv == int(plan.mode.size());
    for (size_t g = 0; same && g < plan.mode.size(); ++g) same = dp.h_meta[g].mode == int32_t(plan.mode[g]);
    if (!same) fail("the XA lists on the device are another plan's (only the last xa_prefill_plan's can be copied)");
    const int64_t nb = dp.xa_nb;
    std::vector<int32_t> off(size_t(dp.xa_heads * (nb + 1)));
    CUDA_CHECK(cudaMemcpyAsync(off.data(), dp.d_xa_off, off.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<int32_t> blocks(size_t(off.empty() ? 0 : off.back()));
    if (!blocks.empty())
        CUDA_CHECK(cudaMemcpyAsync(blocks.data(), dp.d_xa_blocks, blocks.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    plan.xa.assign(plan.mode.size(), BlockList{});
    int j = 0;
    for (size_t g = 0; g < plan.mode.size(); ++g) {
        if (plan.mode[g] != HeadMode::XA) continue;
        const int32_t* o = off.data() + size_t(j++) * size_t(nb + 1);
        BlockList& bl = plan.xa[g];
        for (int64_t qb = 0; qb <= nb; ++qb) bl.offsets.push_back(int64_t(o[qb] - o[0]));
        bl.blocks.assign(blocks.begin() + o[0], blocks.begin() + o[nb]);
    }
    plan.xa_on_device = false;
}

void xa_select_on_device(const std::vector<std::vector<double>>& scores, int64_t T, int64_t block, double threshold,
                         std::vector<BlockList>& lists, std::vector<int64_t>& pairs, cudaStream_t s) {
    const int heads = int(scores.size());
    ELASTIC_ASSERT(heads > 0 && T > 0 && block > 0);
    LayerPlan plan;
    plan.mode.assign(size_t(heads), HeadMode::XA);
    DevicePlan dp;
    fill_plan_device_xa(dp, plan, T, block, s);
    const int64_t nb = dp.xa_nb;
    reserve_selection(dp, heads, nb);
    ensure_capacity(dp.d_xa_score, dp.cap_xa_score, size_t(heads * nb * nb), "XAttention selection");
    CUDA_CHECK(cudaMemsetAsync(dp.d_xa_pairs, 0, size_t(heads) * sizeof(unsigned long long), s));
    for (int j = 0; j < heads; ++j) {
        ELASTIC_ASSERT(scores[size_t(j)].size() == size_t(nb * nb));
        double* sc = dp.d_xa_score + int64_t(j) * nb * nb;
        CUDA_CHECK(cudaMemcpyAsync(sc, scores[size_t(j)].data(), size_t(nb * nb) * sizeof(double), cudaMemcpyHostToDevice, s));
        launch_select(dp, j, sc, T, block, threshold, s);
    }
    launch_lists(dp, s);
    pairs = device_xa_pairs(dp, plan, s);
    download_device_xa(dp, plan, s);
    lists = std::move(plan.xa);
}

void xa_fill_plan(const void* q, const void* k, DType t, int64_t T, int n_head, int n_kv_head, int head_dim,
                  const XAParams& p, LayerPlan& plan, cudaStream_t s) {
    ELASTIC_ASSERT(plan.mode.size() == size_t(n_kv_head));
    ELASTIC_ASSERT(p.threshold > 0.0 && p.threshold <= 1.0);
    plan.xa.resize(size_t(n_kv_head));
    plan.xa_on_device = false;
    plan.xa_pairs.clear();
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
