// CPU implementations of the backend ops (src/model/backend.h), one file per op family.
// Plain fp32; parallel with OpenMP; OpenBLAS (single-threaded per call) for dense tiles.
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace elastic::cpu {

void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out);
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
void matmul(const Weight& W, const float* x, float* y, int64_t T);
// Up to this many rows matmul is the decode path (one dot per weight row; quantised weights with
// the activation quantised to Q8, see formats/quants.h), above it the tiled GEMM of prefill.
constexpr int64_t kMatvecMaxT = 4;
void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq);
void swiglu(const float* gate, const float* up, float* out, int64_t n);
void add(float* y, const float* x, int64_t n);

// Naive reference used by tests (no tiling, no BLAS).
void matmul_naive(const Weight& W, const float* x, float* y, int64_t T);

}  // namespace elastic::cpu
