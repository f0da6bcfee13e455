// The Hopper (sm_90a) prefill kernel (attention-prefill-sm90.cu): compiled only for sm_90a and only
// where the CUTLASS/CuTe headers are present (ELASTIC_HAVE_SM90; scripts/get-cutlass.sh fetches
// them). attention-prefill.cu picks it for bf16/fp16 on an sm_90 device unless told otherwise.
#pragma once
#include <cuda_runtime_api.h>

#include "core/dtype.h"

namespace elastic::cuda {
struct DevicePlan;
namespace detail {
struct PrefillKernelParams;
}

namespace sm90 {

// The kernel's variants (attention-prefill-sm90.cuh): Overlap, the default (softmax of a tile under
// the P V of the one before); Deep (one Q buffer, one more K/V stage); Simple (no overlap). The
// environment's ELASTIC_SM90_VARIANT=overlap|deep|simple picks one, for comparisons.
enum class Variant { Overlap, Deep, Simple };

// Whether the Hopper kernel takes this launch: bf16/fp16, head_dim 64 or 128, XA blocks (if any)
// multiples of its 128-key tiles, and the current device an sm_90 one.
bool supported(DType t, int head_dim, const DevicePlan& plan);
// The launch; the work list in kp must be built for 128-row tiles. total_rows: rows of the packed
// q/k/v tensors (the plan's cu_seqlens end).
void hybrid_prefill(const detail::PrefillKernelParams& kp, DType t, int head_dim, int total_rows, int n_head,
                    const DevicePlan& plan, cudaStream_t s);

}  // namespace sm90
}  // namespace elastic::cuda
