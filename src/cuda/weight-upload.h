// Moving a stored matrix (any type of src/formats/quants.h) to the device as bf16 [rows, cols].
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "model/weights.h"

namespace elastic::cuda {

// Returns a cudaMalloc'd bf16 copy of W (the caller frees it). Synchronises stream s before returning.
__nv_bfloat16* upload_weight_bf16(const Weight& W, cudaStream_t s);

// A cheap identity check of W's bytes: the stored address, shape and type, plus a hash of a few
// sampled words. Caches keyed by address use it to notice a freed matrix whose address was reused.
uint64_t weight_fingerprint(const Weight& W);

}  // namespace elastic::cuda
