// The device KV cache of one layer (internal to src/cuda: kv-cache.cu fills it, attention-decode.cu
// reads it). Slot layout per head: CacheHead in attention-tiles.h.
#pragma once
#include <cuda_bf16.h>

#include <vector>

#include "cuda/attention-tiles.h"
#include "cuda/attention.h"

namespace elastic::cuda {

struct DeviceLayerCache {
    int n_kv = 0, head_dim = 0;
    int64_t capacity = 0;
    StreamingWindow win;
    std::vector<detail::CacheHead> h_heads;
    detail::CacheHead* d_heads = nullptr;
    __nv_bfloat16* k = nullptr;  // all heads' slots, head after head: [slots_g, head_dim]
    __nv_bfloat16* v = nullptr;
    size_t elems = 0;
    // Decode's scratch (attention-decode.cu): partial results of pairs cut across CTAs, the grid
    // barrier's counter (zeroed once; every call leaves its low bits at 0).
    mutable float* d_part = nullptr;
    mutable size_t part_floats = 0;
    mutable int* d_count = nullptr;
    mutable size_t count_n = 0;
    mutable int last_splits = 0;
    mutable int sms = 0;       // multiprocessors of the cache's device (asked once)
    mutable int resident = 0;  // CTAs of the decode kernel `prepared` that fit on one SM
    mutable int prepared = 0;  // the decode kernel whose occupancy was asked (0: none)
    ~DeviceLayerCache() {
        cudaFree(d_heads);
        cudaFree(k);
        cudaFree(v);
        cudaFree(d_part);
        cudaFree(d_count);
    }
};

}  // namespace elastic::cuda
