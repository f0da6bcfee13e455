// The CPU backend: host buffers, ops from src/cpu/*.cpp. OpenBLAS runs single-threaded inside our
// OpenMP tasks (set once here), so the two thread pools never oversubscribe the cores.
#include <cblas.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "cpu/ops.h"
#include "model/backend.h"

extern "C" void openblas_set_num_threads(int);

namespace elastic {

namespace {
class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int threads) {
        openblas_set_num_threads(1);
        if (threads > 0) omp_set_num_threads(threads);
    }
    const char* name() const override { return "cpu"; }
    float* alloc(size_t n) override {
        void* p = std::aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
        if (!p) throw std::bad_alloc();
        return static_cast<float*>(p);
    }
    void release(float* p) override { std::free(p); }
    void upload(float* dst, const float* host, size_t n) override { std::memcpy(dst, host, n * sizeof(float)); }
    void download(float* host, const float* src, size_t n) override { std::memcpy(host, src, n * sizeof(float)); }
    void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) override { cpu::embedding(E, ids, T, out); }
    void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) override {
        cpu::rms_norm(x, w, y, rows, dim, eps);
    }
    void matmul(const Weight& W, const float* x, float* y, int64_t T) override { cpu::matmul(W, x, y, T); }
    void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) override {
        cpu::rope(x, T, n_heads, head_dim, pos, inv_freq);
    }
    void swiglu(const float* gate, const float* up, float* out, int64_t n) override { cpu::swiglu(gate, up, out, n); }
    void add(float* y, const float* x, int64_t n) override { cpu::add(y, x, n); }
    void kv_store(float* cache, const float* x, int64_t T, int64_t pos0, int n_kv_head, int head_dim, int64_t cap) override {
        cpu::kv_store(cache, x, T, pos0, n_kv_head, head_dim, cap);
    }
    void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0, int n_head,
                   int n_kv_head, int head_dim, int64_t cap) override {
        cpu::attention(q, k, v, out, T, pos0, n_head, n_kv_head, head_dim, cap);
    }
};
}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace elastic
