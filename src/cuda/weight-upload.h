// Moving a stored matrix (any type of src/formats/quants.h) to the device as bf16, fp16 or fp32 [rows, cols].
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/ops.h"
#include "model/weights.h"

namespace elastic::cuda {

// Returns a cudaMalloc'd copy of W in type t (the caller frees it). Synchronises stream s before returning.
void* upload_weight(const Weight& W, WeightType t, cudaStream_t s);

// A cheap identity check of W's bytes: the stored address, shape and type, plus a hash of a few
// sampled words. Caches keyed by address use it to notice a freed matrix whose address was reused.
uint64_t weight_fingerprint(const Weight& W);

}  // namespace elastic::cuda
