// Row-wise and element-wise ops: RMSNorm, SwiGLU, residual add, RoPE.
#include <cmath>

#include "cpu/ops.h"

namespace elastic::cpu {

namespace {
// Below this many elements an op runs on the calling thread: at decode (one row) waking the other
// threads of a parallel region costs more than the work (a region per op, ~15 per layer).
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows * dim >= kParallelMin && rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        float ss = 0.0f;
        for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
        const float inv = 1.0f / std::sqrt(ss / float(dim) + eps);
        for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
    }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i];
        out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
}

void add(float* y, const float* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) {
    const int half = head_dim / 2;
#pragma omp parallel for schedule(static) if (T * n_heads * head_dim >= kParallelMin && T > 1)
    for (int64_t t = 0; t < T; ++t) {
        for (int i = 0; i < half; ++i) {
            // As HF: the fp32 product position * inv_freq, then cos and sin of it.
            const float ang = float(pos[t]) * inv_freq[i];
            const float c = std::cos(ang), s = std::sin(ang);
            for (int h = 0; h < n_heads; ++h) {
                float* v = x + (t * n_heads + h) * head_dim;
                const float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

}  // namespace elastic::cpu
