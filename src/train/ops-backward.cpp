// Backward of the frozen backbone's row-wise and linear ops (RMSNorm, RoPE, SwiGLU, matmul) and the
// chunked LM-head cross-entropy: what carries the LM loss's gradient from the logits back to each
// layer's attention output (DESIGN.md §1.4). Weights of any stored type are dequantised panel by
// panel into thread-local fp32 buffers for single-threaded sgemm, as cpu::matmul does.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "formats/quants.h"
#include "train/backward.h"

namespace elastic::train {

namespace {

// matmul_dx tasks: (256 tokens) x (256 columns of W), summing over W's rows in panels of 256: each
// panel is dequantised once per task (rows*cols per 256 tokens against 2*256*rows*cols flops).
// 256 columns is a whole number of blocks of every quantised type (32 or 256 elements).
constexpr int64_t kTokenChunk = 256;
constexpr int64_t kColBlock = 256;
constexpr int64_t kPanelRows = 256;

// y [T, W.rows] = x [T, W.cols] @ W^T, panels of kPanelRows weight rows over the whole T.
void matmul_rows(const Weight& W, const float* x, float* y, int64_t T) {
    const int64_t rows = W.rows, cols = W.cols, n_panels = (rows + kPanelRows - 1) / kPanelRows;
#pragma omp parallel
    {
        std::vector<float> panel;
        if (W.type != DType::F32) panel.resize(size_t(kPanelRows * cols));
#pragma omp for schedule(dynamic)
        for (int64_t p = 0; p < n_panels; ++p) {
            const int64_t r0 = p * kPanelRows, nr = std::min(kPanelRows, rows - r0);
            const float* wp = reinterpret_cast<const float*>(W.row(r0));
            if (W.type != DType::F32) {
                for (int64_t r = 0; r < nr; ++r) dequantize(W.type, W.row(r0 + r), panel.data() + r * cols, cols);
                wp = panel.data();
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(nr), int(cols), 1.0f, x, int(cols), wp,
                        int(cols), 0.0f, y + r0, int(rows));
        }
    }
}

}  // namespace

void rms_norm_backward(const float* x, const float* w, const float* dy, float* dx, int64_t rows, int64_t dim, float eps,
                       bool accumulate) {
    // dx_j = r w_j dy_j - x_j r^3 / dim * sum_i w_i dy_i x_i,   r = 1 / sqrt(mean(x^2) + eps)
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < rows; ++t) {
        const float* xr = x + t * dim;
        const float* g = dy + t * dim;
        float* o = dx + t * dim;
        double ss = 0, dot = 0;
        for (int64_t i = 0; i < dim; ++i) {
            ss += double(xr[i]) * xr[i];
            dot += double(w[i]) * g[i] * xr[i];
        }
        const double r = 1.0 / std::sqrt(ss / double(dim) + eps);
        const float a = float(r), b = float(r * r * r * dot / double(dim));
        for (int64_t i = 0; i < dim; ++i) {
            const float v = a * w[i] * g[i] - b * xr[i];
            o[i] = accumulate ? o[i] + v : v;
        }
    }
}

void rope_backward(float* dx, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) {
    const int half = head_dim / 2;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
        for (int i = 0; i < half; ++i) {
            const float ang = float(pos[t]) * inv_freq[i];  // the forward's fp32 angle
            const float c = std::cos(ang), s = std::sin(ang);
            for (int h = 0; h < n_heads; ++h) {
                float* v = dx + (t * n_heads + h) * head_dim;
                const float a = v[i], b = v[i + half];
                v[i] = a * c + b * s;
                v[i + half] = b * c - a * s;
            }
        }
    }
}

void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i], sg = 1.0f / (1.0f + std::exp(-g));
        dup[i] = dout[i] * g * sg;
        dgate[i] = dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

void matmul_dx(const Weight& W, const float* dy, float* dx, int64_t T, bool accumulate) {
    const int64_t rows = W.rows, cols = W.cols;
    const int64_t n_chunks = (T + kTokenChunk - 1) / kTokenChunk, n_cblocks = (cols + kColBlock - 1) / kColBlock;
    ELASTIC_ASSERT(kColBlock % dtype_block_size(W.type) == 0);
#pragma omp parallel
    {
        std::vector<float> panel;
        if (W.type != DType::F32) panel.resize(size_t(kPanelRows * kColBlock));
#pragma omp for schedule(dynamic) collapse(2)
        for (int64_t cb = 0; cb < n_cblocks; ++cb)
            for (int64_t tc = 0; tc < n_chunks; ++tc) {
                const int64_t c0 = cb * kColBlock, nc = std::min(kColBlock, cols - c0);
                const int64_t t0 = tc * kTokenChunk, nt = std::min(kTokenChunk, T - t0);
                for (int64_t r0 = 0; r0 < rows; r0 += kPanelRows) {
                    const int64_t nr = std::min(kPanelRows, rows - r0);
                    const float* wp;
                    int64_t ldw;
                    if (W.type == DType::F32) {
                        wp = reinterpret_cast<const float*>(W.row(r0)) + c0;
                        ldw = cols;
                    } else {
                        const size_t off = dtype_nbytes(W.type, c0);
                        for (int64_t r = 0; r < nr; ++r)
                            dequantize(W.type, W.row(r0 + r) + off, panel.data() + r * nc, nc);
                        wp = panel.data();
                        ldw = nc;
                    }
                    const float beta = (r0 == 0 && !accumulate) ? 0.0f : 1.0f;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(nt), int(nc), int(nr), 1.0f,
                                dy + t0 * rows + r0, int(rows), wp, int(ldw), beta, dx + t0 * cols + c0, int(cols));
                }
            }
    }
}

CrossEntropy cross_entropy_chunked(const Weight& W, const float* h, const int32_t* targets, int64_t T, float* dh,
                                   int64_t chunk_rows) {
    ELASTIC_ASSERT(chunk_rows >= 1);
    const int64_t D = W.cols, V = W.rows;
    std::fill(dh, dh + T * D, 0.0f);
    std::vector<int64_t> counted;  // rows with a target
    for (int64_t t = 0; t < T; ++t)
        if (targets[t] >= 0) {
            ELASTIC_ASSERT(targets[t] < V);
            counted.push_back(t);
        }
    CrossEntropy ce;
    ce.count = int64_t(counted.size());
    if (ce.count == 0) return ce;

    const int64_t C = std::min(chunk_rows, ce.count);
    std::vector<float> hc(size_t(C * D)), dhc(size_t(C * D)), logits(size_t(C * V));  // [C, D], [C, D], [C, V]
    const double inv_n = 1.0 / double(ce.count);
    // Per-row losses summed in row order afterwards: the total does not depend on the threads
    // (an OpenMP reduction's order does), so a run and its resumed halves agree bit for bit.
    std::vector<double> row_loss(static_cast<size_t>(ce.count));
    for (int64_t c0 = 0; c0 < ce.count; c0 += C) {
        const int64_t n = std::min(C, ce.count - c0);
        for (int64_t r = 0; r < n; ++r) std::copy_n(h + counted[size_t(c0 + r)] * D, D, hc.data() + r * D);
        matmul_rows(W, hc.data(), logits.data(), n);
        // logits -> dlogits = (softmax - onehot) / count, in place
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n; ++r) {
            float* row = logits.data() + r * V;
            const int32_t y = targets[counted[size_t(c0 + r)]];
            float mx = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j < V; ++j) mx = std::max(mx, row[j]);
            double sum = 0;
            for (int64_t j = 0; j < V; ++j) sum += std::exp(double(row[j] - mx));
            row_loss[size_t(c0 + r)] = double(mx) + std::log(sum) - double(row[y]);
            const float a = float(inv_n / sum);
            for (int64_t j = 0; j < V; ++j) row[j] = a * std::exp(row[j] - mx);
            row[y] -= float(inv_n);
        }
        matmul_dx(W, logits.data(), dhc.data(), n);
        for (int64_t r = 0; r < n; ++r) std::copy_n(dhc.data() + r * D, D, dh + counted[size_t(c0 + r)] * D);
    }
    double loss = 0;
    for (double x : row_loss) loss += x;
    ce.loss = loss * inv_n;
    return ce;
}

}  // namespace elastic::train
