// The CUDA backend: device fp32 activation buffers, weights in the precision's type (bf16, fp16 or
// fp32; GpuPrecision in src/model/backend.h), one stream and one cuBLAS handle per backend (no
// globals: two backends may serve two sessions, even on two devices).
// Host-side inputs of the interface (token ids, positions, norm vectors, inv_freq, weights) are
// moved to the device here: weights and vectors once, cached by their host address; ids and
// positions per call, or as a kernel argument when they are one token or consecutive.
// The elastic attention ops are the kernels of src/cuda/attention.h.
#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "cuda/attention.h"
#include "cuda/cuda-check.h"
#include "cuda/ops.h"
#include "cuda/weight-upload.h"
#include "model/backend.h"

namespace elastic {

namespace {

class CudaBackend final : public Backend {
public:
    CudaBackend(int device, GpuPrecision precision) : device_(device), precision_(precision) {
        switch (precision) {
        case GpuPrecision::BF16: wtype_ = cuda::WeightType::BF16; attn_ = cuda::DType::BF16; break;
        case GpuPrecision::F16: wtype_ = cuda::WeightType::F16; attn_ = cuda::DType::F16; break;
        case GpuPrecision::F32: wtype_ = cuda::WeightType::F32; attn_ = cuda::DType::F32; break;
        }
        CUDA_CHECK(cudaSetDevice(device));
        // A blocking stream: anything a kernel launcher queues on the legacy default stream still
        // waits for our work and vice versa.
        CUDA_CHECK(cudaStreamCreate(&stream_));
        // Stream-ordered scratch (cudaMallocAsync: attention's 16-bit copies, the router's buffer)
        // stays in the pool across synchronisations instead of going back to the driver at each
        // one (the default threshold 0 makes every allocation after a sync map fresh memory).
        cudaMemPool_t pool;
        CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
        uint64_t keep = UINT64_MAX;
        CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
        CUBLAS_CHECK(cublasCreate(&blas_));
        CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    }
    ~CudaBackend() override {  // no aborts here: tear down what can be
        cudaSetDevice(device_);
        cudaStreamSynchronize(stream_);
        plan_.reset();
        for (auto& kv : weights_) cudaFree(kv.second.dev);
        for (auto& kv : vectors_) cudaFree(kv.second.dev);
        for (auto& kv : consts_) cudaFree(kv.second.dev);
        cudaFree(xs_);
        cudaFree(ints_);
        cublasDestroy(blas_);
        cudaStreamDestroy(stream_);
    }
    const char* name() const override {
        switch (precision_) {
        case GpuPrecision::BF16: return "cuda (bf16)";
        case GpuPrecision::F16: return "cuda (f16)";
        case GpuPrecision::F32: break;
        }
        return "cuda (f32)";
    }

    float* alloc(size_t n) override {
        bind();
        return cuda::device_alloc<float>(n, "activations");
    }
    void release(float* p) override {
        bind();
        CUDA_CHECK(cudaFree(p));  // waits for queued work that may still use p
    }
    void upload(float* dst, const float* host, size_t n) override {
        bind();
        CUDA_CHECK(cudaMemcpyAsync(dst, host, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller may free host at once
    }
    void download(float* host, const float* src, size_t n) override {
        bind();
        CUDA_CHECK(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    }

    void sync() override {
        bind();
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    }

    void embedding(const Weight& E, const int32_t* ids, int64_t T, float* out) override {
        bind();
        const void* table = weight(E);  // shared with the output matmul when tied
        if (T == 1) {
            cuda::embedding(table, wtype_, E.cols, nullptr, ids[0], 1, out, stream_);
        } else {
            cuda::embedding(table, wtype_, E.cols, device_ints(ids, T), 0, T, out, stream_);
        }
    }
    void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) override {
        bind();
        cuda::rms_norm(x, device_vector(w, size_t(dim)), y, rows, dim, eps, stream_);
    }
    void matmul(const Weight& W, const float* x, float* y, int64_t T) override {
        bind();
        const void* w = weight(W);
        const size_t need = wtype_ == cuda::WeightType::F32 ? 0 : size_t(T * W.cols) * cuda::weight_elem_bytes(wtype_);
        if (need > xs_n_) {
            CUDA_CHECK(cudaFree(xs_));
            xs_ = cuda::device_alloc<uint8_t>(need, "GEMM inputs");
            xs_n_ = need;
        }
        cuda::matmul(blas_, w, wtype_, W.rows, W.cols, x, xs_, y, T, stream_);
    }
    void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq) override {
        bind();
        const float* freq = device_vector(inv_freq, size_t(head_dim / 2));
        bool consecutive = true;  // the forward's positions always are: then no copy at all
        for (int64_t t = 1; t < T && consecutive; ++t) consecutive = pos[t] == pos[0] + t;
        const int32_t* dpos = consecutive ? nullptr : device_ints(pos, T);
        cuda::rope(x, T, n_heads, head_dim, dpos, T > 0 ? pos[0] : 0, freq, stream_);
    }
    void swiglu(const float* gate, const float* up, float* out, int64_t n) override {
        bind();
        cuda::swiglu(gate, up, out, n, stream_);
    }
    void add(float* y, const float* x, int64_t n) override {
        bind();
        cuda::add(y, x, n, stream_);
    }

    void attn_hybrid_prefill(const float* q, const float* k, const float* v, float* out, int64_t T, int n_head,
                             int n_kv_head, int head_dim, const LayerPlan& plan, const StreamingWindow& win,
                             int64_t xa_block, float scale) override {
        if (head_dim != 64 && head_dim != 128)
            fail("the CUDA attention kernels take head_dim 64 or 128; this model has %d (use --backend cpu)", head_dim);
        bind();
        plan_ = cuda::upload_plan(plan, T, xa_block, stream_);  // kept until the next layer's: its kernels read it
        cuda::hybrid_prefill_f32io(q, k, v, out, T, n_head, n_kv_head, head_dim, *plan_, win, xa_block, scale, attn_,
                                   stream_);
    }
    void xa_fill_plan(const float* q, const float* k, int64_t T, int n_head, int n_kv_head, int head_dim,
                      const XAParams& p, LayerPlan& plan) override {
        bind();
        cuda::xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan, stream_);
    }
    void top_candidates(const float* logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) override {
        ELASTIC_ASSERT(k >= 1 && k <= kMaxCandidates && n >= 1);
        bind();
        k = std::min(k, int(n));
        out.resize(size_t(k));
        cuda::top_candidates(logits, n, k, out.data(), stream_);
    }
    void router_logits(const RouterLayer& r, const float* k, int64_t T, int n_kv_head, int head_dim, int window,
                       float* logits_host) override {
        bind();
        const RouterLinear* src[5] = {&r.fe0, &r.fe2, &r.rh0, &r.rh2, &r.rh4};
        cuda::RouterLinearDev dev[5];
        for (int i = 0; i < 5; ++i) dev[i] = {device_const(src[i]->w), device_const(src[i]->b), src[i]->in, src[i]->out};
        cuda::router_logits(blas_, dev, k, T, n_kv_head, head_dim, window, logits_host, stream_);
    }
    struct Cache final : LayerCache {
        std::unique_ptr<cuda::DeviceLayerCache> c;
        size_t bytes() const override { return cuda::cache_bytes(*c); }
    };
    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        bind();
        auto c = std::make_unique<Cache>();
        c->c = cuda::new_layer_cache(plan, win, capacity, n_kv_head, head_dim);
        return c;
    }
    void cache_store_prefill(LayerCache& c, const float* k, const float* v, int64_t T) override {
        bind();
        cuda::cache_store_prefill(*static_cast<Cache&>(c).c, k, v, T, stream_);
    }
    void cache_append(LayerCache& c, const float* k_tok, const float* v_tok, int64_t pos) override {
        bind();
        cuda::cache_append(*static_cast<Cache&>(c).c, k_tok, v_tok, pos, stream_);
    }
    void attn_decode(const float* q, const LayerCache& c, int64_t pos, float* out, int n_head, float scale) override {
        bind();
        cuda::attn_decode(q, *static_cast<const Cache&>(c).c, pos, out, n_head, scale, stream_);
    }

private:
    struct CachedWeight {
        uint64_t fingerprint;
        void* dev;  // [rows, cols] of wtype_
    };
    struct CachedConst {
        uint64_t fingerprint = 0;
        float* dev = nullptr;
    };
    struct CachedVector {
        std::vector<float> host;  // the contents uploaded, compared on every use
        float* dev;
    };

    // The device thread state is per host thread: every entry point selects our device first.
    void bind() const { CUDA_CHECK(cudaSetDevice(device_)); }

    // W on the device in wtype_, dequantised and uploaded on first use (DESIGN.md §2: the GPU keeps
    // bf16 weights by default). Keyed by W.data; the fingerprint notices a freed matrix's reused address.
    const void* weight(const Weight& W) {
        const uint64_t fp = cuda::weight_fingerprint(W);
        auto it = weights_.find(W.data);
        if (it != weights_.end()) {
            if (it->second.fingerprint == fp) return it->second.dev;
            CUDA_CHECK(cudaFree(it->second.dev));
            weights_.erase(it);
        }
        void* dev = cuda::upload_weight(W, wtype_, stream_);
        weights_.emplace(W.data, CachedWeight{fp, dev});
        return dev;
    }

    // A small host vector (norm weights, inv_freq) on the device, cached by address and contents.
    const float* device_vector(const float* host, size_t n) {
        CachedVector& e = vectors_[host];
        if (e.dev && e.host.size() == n && std::memcmp(e.host.data(), host, n * sizeof(float)) == 0) return e.dev;
        if (e.host.size() != n) {
            CUDA_CHECK(cudaFree(e.dev));
            e.dev = cuda::device_alloc<float>(n, "a norm or frequency vector");
        }
        e.host.assign(host, host + n);
        CUDA_CHECK(cudaMemcpyAsync(e.dev, e.host.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // e.host may change on the next call
        return e.dev;
    }

    // A constant host array (router weights) on the device, uploaded on first use. Keyed by address;
    // the size and a sampled fingerprint notice a freed array whose address was reused (unlike
    // device_vector, the contents are not compared in full on every use: a router layer is 1-4 MB).
    const float* device_const(const std::vector<float>& v) {
        uint64_t fp = 1469598103934665603ull ^ v.size();
        for (size_t i = 0; i < 16 && !v.empty(); ++i) {
            uint32_t u;
            std::memcpy(&u, &v[(v.size() - 1) * i / 15], 4);
            fp = (fp ^ u) * 1099511628211ull;
        }
        CachedConst& e = consts_[v.data()];
        if (e.dev && e.fingerprint == fp) return e.dev;
        CUDA_CHECK(cudaFree(e.dev));
        e.dev = cuda::device_alloc<float>(v.size(), "router weights");
        e.fingerprint = fp;
        CUDA_CHECK(cudaMemcpyAsync(e.dev, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        return e.dev;
    }

    // Host int32 values (token ids, positions) in a device scratch buffer. The stream orders the
    // buffer's reuse after the kernels that read it.
    const int32_t* device_ints(const int32_t* host, int64_t n) {
        if (size_t(n) > ints_n_) {
            CUDA_CHECK(cudaFree(ints_));
            ints_ = cuda::device_alloc<int32_t>(size_t(n), "token ids");
            ints_n_ = size_t(n);
        }
        CUDA_CHECK(cudaMemcpyAsync(ints_, host, size_t(n) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
        return ints_;
    }

    int device_;
    GpuPrecision precision_;
    cuda::WeightType wtype_ = cuda::WeightType::BF16;
    cuda::DType attn_ = cuda::DType::BF16;
    cudaStream_t stream_ = nullptr;
    cublasHandle_t blas_ = nullptr;
    std::unordered_map<const uint8_t*, CachedWeight> weights_;
    std::unordered_map<const float*, CachedVector> vectors_;
    std::unordered_map<const float*, CachedConst> consts_;
    uint8_t* xs_ = nullptr;  // x rounded to wtype_ for the GEMM, [xs_n_] bytes
    size_t xs_n_ = 0;
    int32_t* ints_ = nullptr;  // [ints_n_]
    size_t ints_n_ = 0;
    std::unique_ptr<cuda::DevicePlan> plan_;  // the last prefill's plan
};

}  // namespace

int cuda_device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

std::unique_ptr<Backend> make_cuda_backend(int device, GpuPrecision precision) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        fail("CUDA: no usable GPU (%s)", cudaGetErrorString(err));
    }
    if (n == 0) fail("CUDA: no GPU found");
    if (device < 0 || device >= n) fail("CUDA: device %d does not exist (this machine has %d)", device, n);
    return std::make_unique<CudaBackend>(device, precision);
}

}  // namespace elastic
