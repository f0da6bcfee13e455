// y[T, rows] = x[T, cols] @ W^T for weights of any stored type.
// Decode (small T): one dot per weight row, rows split over threads, so each weight byte is read
//   once per token: the memory-bound path. Quantised weights use integer dot products with the
//   activation quantised once per call (dot_row_q8, formats/quants.h), unless the weight asks for
//   fp32 activations (the output projection) or ELASTIC_CPU_KERNELS=f32; then, and for other
//   types, the fused dequantise-and-dot in fp32 (dot_row).
// Prefill (large T): tasks of (64 weight rows x 256 tokens); each dequantises its panel of W into a
//   thread-local fp32 buffer and calls single-threaded sgemm. Dequantisation costs rows*cols per task
//   against 2*256*rows*cols flops of GEMM, under 1 %.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/ops.h"
#include "formats/quants.h"

namespace elastic::cpu {

namespace {
constexpr int64_t kPanelRows = 64;
constexpr int64_t kTokenChunk = 256;
}  // namespace

void matmul(const Weight& W, const float* x, float* y, int64_t T) {
    const int64_t rows = W.rows, cols = W.cols;
    if (T <= kMatvecMaxT && q8_dot_supported(W.type) && !W.f32_activations && cpu_kernels() != CpuKernels::F32) {
        thread_local std::vector<Q8Act> acts;  // reused: no allocation per token once warm
        if (acts.size() < size_t(T)) acts.resize(size_t(T));
        for (int64_t t = 0; t < T; ++t) quantize_act_q8(x + t * cols, cols, acts[size_t(t)]);
        const std::vector<Q8Act>& a = acts;
        const Q8DotFn dot = q8_dot_kernel();  // chosen once per product, not per row
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const uint8_t* wr = W.row(r);
            for (int64_t t = 0; t < T; ++t) y[t * rows + r] = dot(W.type, wr, a[size_t(t)]);
        }
        return;
    }
    if (T <= kMatvecMaxT) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const uint8_t* wr = W.row(r);
            for (int64_t t = 0; t < T; ++t) y[t * rows + r] = dot_row(W.type, wr, x + t * cols, cols);
        }
        return;
    }
    const int64_t n_panels = (rows + kPanelRows - 1) / kPanelRows;
    const int64_t n_chunks = (T + kTokenChunk - 1) / kTokenChunk;
#pragma omp parallel
    {
        std::vector<float> panel;
        if (W.type != DType::F32) panel.resize(size_t(kPanelRows * cols));
#pragma omp for schedule(dynamic) collapse(2)
        for (int64_t p = 0; p < n_panels; ++p) {
            for (int64_t c = 0; c < n_chunks; ++c) {
                const int64_t r0 = p * kPanelRows, nr = std::min(kPanelRows, rows - r0);
                const int64_t t0 = c * kTokenChunk, nt = std::min(kTokenChunk, T - t0);
                const float* wp;
                if (W.type == DType::F32) {
                    wp = reinterpret_cast<const float*>(W.row(r0));
                } else {
                    for (int64_t r = 0; r < nr; ++r) dequantize(W.type, W.row(r0 + r), panel.data() + r * cols, cols);
                    wp = panel.data();
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nt), int(nr), int(cols), 1.0f, x + t0 * cols,
                            int(cols), wp, int(cols), 0.0f, y + t0 * rows + r0, int(rows));
            }
        }
    }
}

void matmul_naive(const Weight& W, const float* x, float* y, int64_t T) {
    std::vector<float> row(static_cast<size_t>(W.cols));
    for (int64_t r = 0; r < W.rows; ++r) {
        dequantize(W.type, W.row(r), row.data(), W.cols);
        for (int64_t t = 0; t < T; ++t) {
            double s = 0;
            for (int64_t c = 0; c < W.cols; ++c) s += double(row[size_t(c)]) * x[t * W.cols + c];
            y[t * W.rows + r] = float(s);
        }
    }
}

void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) {
#pragma omp parallel for schedule(static) if (T > 4)
    for (int64_t t = 0; t < T; ++t) dequantize(E.type, E.row(ids[t]), out + t * E.cols, E.cols);
}

}  // namespace elastic::cpu
