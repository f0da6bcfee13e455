// Moving a stored matrix (any type of src/formats/quants.h) to the device as bf16, fp16 or fp32 [rows, cols].
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/ops.h"
#include "model/weights.h"

namespace elastic::cuda {

// Returns a cudaMalloc'd copy of W in type t (F32, BF16 or F16; the caller frees it). Synchronises
// stream s before returning.
void* upload_weight(const Weight& W, DType t, cudaStream_t s);

}  // namespace elastic::cuda
