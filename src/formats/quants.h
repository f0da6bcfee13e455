// Dequantisation (and simple quantisation, for the writers and tests) of GGUF block types,
// plus the F16/BF16/F32 plain types. Layouts follow ggml's block structs exactly.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace elastic {

// dst[0..n) = values of n elements stored at src in type t. n must be a multiple of the block size.
void dequantize(DType t, const void* src, float* dst, int64_t n);

// dst receives dtype_nbytes(t, n) bytes. Supported for F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
// Round-to-nearest reference quantisers (not importance-weighted): for tests and `elastic convert`.
void quantize(DType t, const float* src, void* dst, int64_t n);

// sum_i row[i] * x[i] for one stored row of n elements (n a multiple of the block size).
// Vectorised where it pays; always equal (to fp32 rounding) to dequantize + dot.
float dot_row(DType t, const void* row, const float* x, int64_t n);

// The plain scalar version of dot_row (the specification the vectorised one is tested against).
float dot_row_ref(DType t, const void* row, const float* x, int64_t n);

}  // namespace elastic
