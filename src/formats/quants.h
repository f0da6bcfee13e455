// Dequantisation (and simple quantisation, for the writers and tests) of GGUF block types,
// plus the F16/BF16/F32 plain types. Layouts follow ggml's block structs exactly.
#pragma once
#include <cstdint>
#include <vector>

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

// ---------------------------------------------------------------------------------------------
// Integer dot products for batch-1 decode (as ggml's vec_dot with Q8 activations): the activation
// row is quantised once to int8 in blocks of 32 (scale amax/127, round to nearest), then each
// quantised weight row is multiplied in integers block by block (u8 x s8 -> i32: AVX-VNNI
// vpdpbusd, or AVX2 vpmaddubsw + vpmaddwd) and scaled once per block. The result differs from
// dot_row by the activation's rounding (at most d/2 per element): used for decode only, never for
// prefill, perplexity or the golden tests.
struct Q8Act {
    int64_t n = 0;
    std::vector<int8_t> q;     // [n]
    std::vector<float> d;      // [n / 32] block scales
    std::vector<int32_t> s16;  // [n / 16] sums of q over each 16 elements (offset terms)
    int32_t sum16(int64_t k) const { return s16[size_t(k)]; }
    int32_t sum32(int64_t b) const { return s16[size_t(2 * b)] + s16[size_t(2 * b + 1)]; }
};
void quantize_act_q8(const float* x, int64_t n, Q8Act& a);  // n a multiple of 32
bool q8_dot_supported(DType t);                               // Q8_0, Q4_0, Q4_1, Q4_K, Q6_K
float dot_row_q8(DType t, const void* row, const Q8Act& a);   // the selected kernels (cpu_kernels())
// dot_row_q8 of the kernel set selected now, to call per row without choosing again each time.
using Q8DotFn = float (*)(DType t, const void* row, const Q8Act& a);
Q8DotFn q8_dot_kernel();
// The specification: plain integer loops, the same block formulas.
float dot_row_q8_ref(DType t, const void* row, const Q8Act& a);

// CPU kernel set for decode's weight products, chosen once at first use: the best the processor
// supports (runtime CPUID check, whatever the build's -march: AVX-VNNI, else AVX2+FMA+F16C, else
// f32), or ELASTIC_CPU_KERNELS = vnni | avx2 | scalar | f32. f32: no activation quantisation, the
// fp32 dot_row (the portable fallback); scalar: the integer reference loops (slow; for checks).
// An unsupported choice is an Error naming what the processor lacks.
enum class CpuKernels : uint8_t { F32, Scalar, Avx2, AvxVnni };
CpuKernels cpu_kernels();
const char* cpu_kernels_name(CpuKernels k);
bool cpu_kernels_supported(CpuKernels k);
void set_cpu_kernels(CpuKernels k);  // tests and benchmarks; Error if unsupported

}  // namespace elastic
