// The elastic attention kernels' C++ API (DESIGN.md §1.2, §1.5, §1.6), the contract between the
// CUDA backend (src/cuda/backend-cuda.cu, which only calls these) and the kernels
// (src/cuda/attention*.cu). Buffers are device fp32 in the layouts of src/model/backend.h;
// plans and windows are host structures. Everything runs on the stream given.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "attention/plan.h"

namespace elastic::cuda {

struct DevicePlan;  // opaque, built from a LayerPlan
std::unique_ptr<DevicePlan> upload_plan(const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s);
void hybrid_prefill_f32io(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head, int n_kv_head,
                          int head_dim, const DevicePlan& plan, const StreamingWindow& win, int64_t xa_block, float scale,
                          cudaStream_t s);
void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                  LayerPlan& plan, cudaStream_t s);
struct DeviceLayerCache;  // opaque
std::unique_ptr<DeviceLayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                  int n_kv_head, int head_dim);
size_t cache_bytes(const DeviceLayerCache&);
void cache_store_prefill(DeviceLayerCache& c, const float* k, const float* v, int64_t T, cudaStream_t s);
void cache_append(DeviceLayerCache& c, const float* k_tok, const float* v_tok, int64_t pos, cudaStream_t s);
void attn_decode(const float* q, const DeviceLayerCache& c, int64_t pos, float* out, int n_head, float scale, cudaStream_t s);

}  // namespace elastic::cuda

// A unique_ptr to an opaque type can only be destroyed where its deleter is defined, and the
// backend destroys plans and caches. So the deleters are declared here and defined next to the
// types, in the kernels' translation unit:
//   void std::default_delete<elastic::cuda::DevicePlan>::operator()(elastic::cuda::DevicePlan* p) const { delete p; }
//   (likewise for DeviceLayerCache). Not needed if the types are ever completed in this header.
namespace std {
template <>
struct default_delete<elastic::cuda::DevicePlan> {
    void operator()(elastic::cuda::DevicePlan* p) const;
};
template <>
struct default_delete<elastic::cuda::DeviceLayerCache> {
    void operator()(elastic::cuda::DeviceLayerCache* p) const;
};
}  // namespace std
