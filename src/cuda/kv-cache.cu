// The per-head lean KV cache of one layer on the GPU (DESIGN.md §1.6): same layout and spans as
// cpu::LayerKVCache (FA/XA heads: every position; SSA heads: sink slots, then a ring of `local`
// slots, position j >= sink in slot sink + (j - sink) % local), stored in bf16: decode reads the
// whole cache once per token, so half the bytes is half the time.
#include <algorithm>

#include "core/error.h"
#include "cuda/convert.cuh"
#include "cuda/cuda-check.h"
#include "cuda/kv-cache.cuh"
#include "cuda/ops.h"
#include "cuda/pdl.cuh"

void std::default_delete<elastic::cuda::DeviceLayerCache>::operator()(elastic::cuda::DeviceLayerCache* p) const {
    delete p;
}

namespace elastic::cuda {

using namespace detail;

std::unique_ptr<DeviceLayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                  int n_kv_head, int head_dim, cudaStream_t s) {
    ELASTIC_ASSERT(plan.mode.size() == size_t(n_kv_head) && capacity > 0 && (head_dim == 64 || head_dim == 128));
    ELASTIC_ASSERT(win.sink >= 0 && win.local >= 1);
    auto c = std::unique_ptr<DeviceLayerCache>(new DeviceLayerCache);
    c->n_kv = n_kv_head;
    c->head_dim = head_dim;
    c->capacity = capacity;
    c->win = win;
    int64_t off = 0;
    for (int g = 0; g < n_kv_head; ++g) {
        CacheHead h{off, int32_t(plan.mode[size_t(g)]), 0, 0, 0};
        int64_t slots = capacity;
        if (plan.mode[size_t(g)] == HeadMode::SSA) {
            const int64_t n_sink = std::min(win.sink, capacity);
            const int64_t n_ring = std::min(win.local, capacity - n_sink);
            h.n_sink = int32_t(n_sink);
            h.n_ring = int32_t(n_ring);
            slots = n_sink + n_ring;
        }
        h.slots = int32_t(slots);
        c->h_heads.push_back(h);
        off += slots * head_dim;
    }
    c->elems = size_t(off);
    // Stream-ordered copies, not cudaMemcpy / cudaMemset: those go to the legacy stream, which
    // waits for all the work queued before (a prefill allocates a layer's cache while its
    // attention still runs). The head table is copied from pageable memory: staged before return.
    CUDA_CHECK(cudaMalloc(&c->d_heads, c->h_heads.size() * sizeof(CacheHead)));
    CUDA_CHECK(cudaMemcpyAsync(c->d_heads, c->h_heads.data(), c->h_heads.size() * sizeof(CacheHead),
                               cudaMemcpyHostToDevice, s));
    c->k = device_alloc<__nv_bfloat16>(c->elems, "the KV cache");
    c->v = device_alloc<__nv_bfloat16>(c->elems, "the KV cache");
    CUDA_CHECK(cudaMemsetAsync(c->k, 0, c->elems * sizeof(__nv_bfloat16), s));
    CUDA_CHECK(cudaMemsetAsync(c->v, 0, c->elems * sizeof(__nv_bfloat16), s));
    return c;
}

size_t cache_bytes(const DeviceLayerCache& c) { return 2 * c.elems * sizeof(__nv_bfloat16); }

int decode_splits(const DeviceLayerCache& c) { return c.last_splits; }

namespace {

template <typename TI>
__global__ void cache_store_kernel(const TI* __restrict__ k, const TI* __restrict__ v, __nv_bfloat16* kc,
                                   __nv_bfloat16* vc, const CacheHead* __restrict__ heads, int n_kv, int D, int64_t j0,
                                   const int32_t* __restrict__ d_j0, int64_t n, int64_t t_rule, int64_t sink,
                                   int64_t local) {
    // Programmatic launch (pdl.cuh): the next kernel (decode attention) may start its prologue now
    // (it waits for this grid before it reads the cache); this one waits for the rows it stores.
    pdl_launch_dependents();
    pdl_wait();
    const int64_t total = n * n_kv * D;
    if (d_j0) j0 = *d_j0;
    for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x) {
        const int d = int(idx % D);
        const int g = int((idx / D) % n_kv);
        const int64_t j = j0 + idx / (int64_t(D) * n_kv);
        const CacheHead h = heads[g];
        if (h.mode == kModeSSA && j >= sink && j < t_rule - local) continue;  // prefill: no later query sees it
        const int64_t slot = cache_slot(h, sink, local, j);
        kc[h.off + slot * D + d] = __float2bfloat16_rn(to_f32(k[idx]));
        vc[h.off + slot * D + d] = __float2bfloat16_rn(to_f32(v[idx]));
    }
}

template <typename TI>
void store(DeviceLayerCache& c, const TI* k, const TI* v, int64_t j0, const int32_t* d_j0, int64_t n, int64_t t_rule,
           cudaStream_t s) {
    const int64_t total = n * c.n_kv * c.head_dim;
    if (total == 0) return;
    const int grid = int(std::min<int64_t>((total + 255) / 256, 65535));
    launch_pdl_if(small_pdl_enabled(), cache_store_kernel<TI>, dim3(grid), dim3(256), 0, s, k, v, c.k, c.v,
               static_cast<const CacheHead*>(c.d_heads), c.n_kv, c.head_dim, j0, d_j0, n, t_rule, c.win.sink, c.win.local);
}

}  // namespace

void cache_store_prefill(DeviceLayerCache& c, const void* k, const void* v, DType t, int64_t T, cudaStream_t s) {
    ELASTIC_ASSERT(T >= 0 && T <= c.capacity);
    ELASTIC_TYPE_SWITCH(t, TI, store(c, static_cast<const TI*>(k), static_cast<const TI*>(v), 0, nullptr, T, T, s));
}

void cache_append(DeviceLayerCache& c, const void* k_tok, const void* v_tok, DType t, int64_t pos, cudaStream_t s,
                  const int32_t* d_pos) {
    ELASTIC_ASSERT(pos >= 0 && pos < c.capacity);
    ELASTIC_TYPE_SWITCH(t, TI, store(c, static_cast<const TI*>(k_tok), static_cast<const TI*>(v_tok), pos, d_pos, 1, 0, s));
}

void cache_append_target(KvAppend& app, int t, DeviceLayerCache& c, int64_t pos) {
    ELASTIC_ASSERT(t >= 0 && t < kGemvMaxT && pos >= 0 && pos < c.capacity);
    app.kc[t] = c.k;
    app.vc[t] = c.v;
    app.heads[t] = c.d_heads;
    app.sink[t] = c.win.sink;
    app.local[t] = c.win.local;
}

}  // namespace elastic::cuda
