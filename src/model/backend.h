// The op interface the model forward is written against (CONVENTIONS.md #3). A backend owns its
// buffers (`alloc` returns backend memory: host for CPU, device for CUDA) and runs each op on them.
// Shapes are in comments as [rows, cols]; every buffer is dense row-major float32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "model/weights.h"

namespace elastic {

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;

    virtual float* alloc(size_t n) = 0;                              // n floats, uninitialised
    virtual void release(float* p) = 0;
    virtual void upload(float* dst, const float* host, size_t n) = 0;
    virtual void download(float* host, const float* src, size_t n) = 0;

    // out[T, d] = rows ids[t] of E[vocab, d]
    virtual void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) = 0;
    // y[rows, dim] = x / rms(x) * w      (y may equal x)
    virtual void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) = 0;
    // y[T, W.rows] = x[T, W.cols] @ W^T
    virtual void matmul(const Weight& W, const float* x, float* y, int64_t T) = 0;
    // x[T, n_heads, head_dim] rotated in place (HF rotate_half convention) at positions pos[T]
    virtual void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) = 0;
    // out[n] = silu(gate[n]) * up[n]
    virtual void swiglu(const float* gate, const float* up, float* out, int64_t n) = 0;
    // y[n] += x[n]
    virtual void add(float* y, const float* x, int64_t n) = 0;
    // cache[h, pos0 + t, :] = x[t, h, :]   (cache [n_kv_head, cap, head_dim])
    virtual void kv_store(float* cache, const float* x, int64_t T, int64_t pos0, int n_kv_head, int head_dim, int64_t cap) = 0;
    // Causal GQA attention of T queries at positions pos0..pos0+T-1 over cache rows 0..pos0+t.
    // q, out [T, n_head, head_dim]; k, v [n_kv_head, cap, head_dim]
    virtual void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0,
                           int n_head, int n_kv_head, int head_dim, int64_t cap) = 0;
};

// CPU reference backend (fp32, OpenMP threads, OpenBLAS for dense products).
std::unique_ptr<Backend> make_cpu_backend(int threads);

}  // namespace elastic
