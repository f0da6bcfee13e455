// The CUDA backend: weights uploaded once as handles (Matrix, Vector, RouterWeights) in the
// precision's type; activations in device buffers, fp32 for the residual stream and the
// precision's type for q, k, v and the attention output (model/backend.h); one stream and one
// cuBLAS handle per backend (no globals: two backends may serve two sessions, even on two devices).
// In the forward only token ids and positions (when not consecutive) go in, and logits or sampling
// candidates come out. The elastic attention ops are the kernels of src/cuda/attention.h.
//
// Decode graphs (Backend::graph_begin, step_inputs, graph_replay): a decode step is captured from
// the stream once and then replayed as it is for every later token. What changes from token to
// token lives in device memory: step_inputs() copies the token ids and positions to `step_`, and
// the ops of the step that take an id or a position use that copy whenever their host values are
// the step's (the embedding, RoPE, the cache append and the decode attention, whose grid is one
// wave whatever the position). A capture in which some op took its position as a kernel argument,
// or one made before backend scratch that it uses was reallocated, is not replayable: the next
// step is captured again and applied to the instantiated graph with cudaGraphExecUpdate
// (llama.cpp's scheme), or instantiated afresh when its topology differs. Captures run in
// thread-local mode: anything that would synchronise or allocate inside one fails loudly instead of
// silently breaking order.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <vector>

#include "core/error.h"
#include "cuda/attention.h"
#include "cuda/cuda-check.h"
#include "cuda/ops.h"
#include "cuda/train.h"
#include "cuda/weight-upload.h"
#include "model/backend.h"

namespace elastic {

namespace {

// Device memory freed on the owning device when the handle goes.
struct DeviceBlock {
    int device = 0;
    void* p = nullptr;
    ~DeviceBlock() {
        if (!p) return;
        cudaSetDevice(device);
        cudaFree(p);
    }
};

struct CudaMatrix final : Backend::Matrix {
    DType type = DType::BF16;
    DeviceBlock mem;  // [rows, cols] of type
};
struct CudaVector final : Backend::Vector {
    DeviceBlock mem;  // [n] fp32
};
struct CudaRouter final : Backend::RouterWeights {
    cuda::RouterLinearDev lin[5];
    int n_kv_head = 0;
    DeviceBlock weights, scratch;  // scratch: pooled keys and every Linear's output
    float* pinned = nullptr;       // page-locked host copy of the logits [n_kv_head, rh4.out]
    ~CudaRouter() override {
        if (pinned) cudaFreeHost(pinned);
    }
};
const CudaMatrix& M_of(const Backend::Matrix& m) { return static_cast<const CudaMatrix&>(m); }
const float* V_of(const Backend::Vector& v) { return static_cast<const float*>(static_cast<const CudaVector&>(v).mem.p); }

class CudaBackend final : public Backend {
public:
    CudaBackend(int device, DType precision) : device_(device), precision_(precision) {
        CUDA_CHECK(cudaSetDevice(device));
        // A blocking stream: anything a kernel launcher queues on the legacy default stream still
        // waits for our work and vice versa.
        CUDA_CHECK(cudaStreamCreate(&stream_));
        // Stream-ordered scratch (cudaMallocAsync: the XAttention scores) stays in the pool across
        // synchronisations instead of going back to the driver at each one.
        cudaMemPool_t pool;
        CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
        uint64_t keep = UINT64_MAX;
        CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
        CUBLAS_CHECK(cublasCreate(&blas_));
        CUBLAS_CHECK(cublasSetStream(blas_, stream_));
        // Our own workspace (cublasSetStream resets it, so after that): cuBLAS must not allocate
        // inside a graph capture. The size is cuBLAS's recommendation: 32 MiB on Hopper, 4 MiB before.
        int major = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
        blas_ws_n_ = size_t(major >= 9 ? 32 : 4) << 20;
        blas_ws_ = cuda::device_alloc<uint8_t>(blas_ws_n_, "the cuBLAS workspace");
        CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_ws_, blas_ws_n_));
        // On unless ELASTIC_CUDA_GRAPH=0 (docs/performance.md, "Decode as CUDA graphs").
        const char* g = std::getenv("ELASTIC_CUDA_GRAPH");
        graphs_on_ = !(g && std::strcmp(g, "0") == 0);
        const char* gl = std::getenv("ELASTIC_CUDA_GRAPH_LAYERS");
        graph_layers_ = gl ? std::max(0, std::atoi(gl)) : 0;
    }
    ~CudaBackend() override {  // no aborts here: tear down what can be
        cudaSetDevice(device_);
        if (capturing_ >= 0) {  // (an exception left a capture open)
            cudaGraph_t g = nullptr;
            if (cudaStreamEndCapture(stream_, &g) == cudaSuccess && g) cudaGraphDestroy(g);
        }
        cudaStreamSynchronize(stream_);
        for (auto& kv : graphs_)
            if (kv.second.exec) cudaGraphExecDestroy(kv.second.exec);
        plan_.reset();
        train_plan_.reset();
        cudaFree(xs_);
        cudaFree(stage_);
        cudaFree(ints_);
        cudaFree(step_);
        cublasDestroy(blas_);
        if (ev0_) cudaEventDestroy(ev0_);
        for (cudaEvent_t e : route_ev_)
            if (e) cudaEventDestroy(e);
        for (cudaEvent_t e : marks_) cudaEventDestroy(e);
        cudaFree(route_dev_);
        cudaFreeHost(route_host_);
        if (ev1_) cudaEventDestroy(ev1_);
        cudaFree(blas_ws_);
        cudaStreamDestroy(stream_);
    }
    const char* name() const override {
        switch (precision_) {
        case DType::BF16: return "cuda (bf16)";
        case DType::F16: return "cuda (f16)";
        default: return "cuda (f32)";
        }
    }
    DType attn_type() const override { return precision_; }

    Buf alloc(size_t n, DType t) override {
        bind();
        ELASTIC_ASSERT_MSG(t == DType::F32 || t == precision_, "CUDA buffers are fp32 or the backend's precision");
        return {cuda::device_alloc<uint8_t>(n * cuda::elem_bytes(t), "activations"), t};
    }
    void release(Buf b) override {
        bind();
        CUDA_CHECK(cudaFree(b.p));  // waits for queued work that may still use it
    }
    void upload(Buf dst, const float* host, size_t n) override {
        bind();
        float* d = dst.type == DType::F32 ? static_cast<float*>(dst.p) : stage(n);
        CUDA_CHECK(cudaMemcpyAsync(d, host, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
        if (dst.type != DType::F32) cuda::convert(d, DType::F32, dst.p, dst.type, int64_t(n), stream_);
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller may free host at once
    }
    void download(float* host, Buf src, size_t n) override {
        bind();
        const float* d = static_cast<const float*>(src.p);
        if (src.type != DType::F32) {
            float* st = stage(n);
            cuda::convert(src.p, src.type, st, DType::F32, int64_t(n), stream_);
            d = st;
        }
        CUDA_CHECK(cudaMemcpyAsync(host, d, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    void sync() override {
        bind();
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    double timed_ms(const std::function<void()>& queue) override {
        bind();
        if (!ev0_) {
            CUDA_CHECK(cudaEventCreate(&ev0_));
            CUDA_CHECK(cudaEventCreate(&ev1_));
        }
        CUDA_CHECK(cudaEventRecord(ev0_, stream_));
        queue();
        CUDA_CHECK(cudaEventRecord(ev1_, stream_));
        CUDA_CHECK(cudaEventSynchronize(ev1_));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, ev0_, ev1_));
        return double(ms);
    }

    std::shared_ptr<const Matrix> upload_matrix(const Weight& W) override {
        bind();
        auto m = std::make_shared<CudaMatrix>();
        m->rows = W.rows;
        m->cols = W.cols;
        m->type = precision_;
        m->mem.device = device_;
        m->mem.p = cuda::upload_weight(W, precision_, stream_);
        return m;
    }
    std::shared_ptr<const Vector> upload_vector(const std::vector<float>& v) override {
        bind();
        auto r = std::make_shared<CudaVector>();
        r->n = int64_t(v.size());
        r->mem.device = device_;
        r->mem.p = cuda::device_alloc<float>(v.size(), "a norm or frequency vector");
        CUDA_CHECK(cudaMemcpy(r->mem.p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
        return r;
    }
    std::unique_ptr<const RouterWeights> upload_router(const RouterLayer& rl, int n_kv_head) override {
        bind();
        auto r = std::make_unique<CudaRouter>();
        r->layer = &rl;
        const RouterLinear* src[5] = {&rl.fe0, &rl.fe2, &rl.rh0, &rl.rh2, &rl.rh4};
        // Each w and b starts on a 16-byte boundary (the fused router kernel reads float4s).
        auto pad4 = [](size_t n) { return (n + 3) / 4 * 4; };
        size_t total = 0;
        for (const RouterLinear* L : src) total += pad4(L->w.size()) + pad4(L->b.size());
        r->weights.device = r->scratch.device = device_;
        float* d = cuda::device_alloc<float>(total, "router weights");
        r->weights.p = d;
        for (int i = 0; i < 5; ++i) {
            const RouterLinear& L = *src[i];
            CUDA_CHECK(cudaMemcpy(d, L.w.data(), L.w.size() * sizeof(float), cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(d + pad4(L.w.size()), L.b.data(), L.b.size() * sizeof(float), cudaMemcpyHostToDevice));
            r->lin[i] = {d, d + pad4(L.w.size()), L.in, L.out};
            d += pad4(L.w.size()) + pad4(L.b.size());
        }
        r->n_kv_head = n_kv_head;
        if (cudaMallocHost(&r->pinned, size_t(n_kv_head) * size_t(rl.rh4.out) * sizeof(float)) != cudaSuccess) {
            (void)cudaGetLastError();  // no page-locked memory: the copy goes to pageable memory
            r->pinned = nullptr;
        }
        r->scratch.p = cuda::device_alloc<float>(cuda::router_scratch_floats(r->lin, n_kv_head, rl.head_dim()), "router");
        return r;
    }

    void embedding(const Matrix& E, const int32_t* ids, int64_t T, Buf out) override {
        bind();
        const CudaMatrix& m = M_of(E);
        if (const int32_t* d = step_ids(ids, T)) cuda::embedding(m.mem.p, m.type, m.cols, d, 0, T, out.f32(), stream_);
        else if (T == 1) cuda::embedding(m.mem.p, m.type, m.cols, nullptr, ids[0], 1, out.f32(), stream_);
        else cuda::embedding(m.mem.p, m.type, m.cols, device_ints(ids, T), 0, T, out.f32(), stream_);
    }
    void rms_norm(Buf x, const Vector& w, Buf y, int64_t rows, int64_t dim, float eps) override {
        bind();
        ELASTIC_ASSERT(w.n == dim);
        cuda::rms_norm(x.p, x.type, V_of(w), y.p, y.type, rows, dim, eps, stream_);
    }
    void matmul(const Matrix& W, Buf x, Buf y, int64_t T) override {
        bind();
        const CudaMatrix& m = M_of(W);
        if (x.type != m.type) {  // fp32 input rounded to the weight type first
            const size_t need = size_t(T * m.cols) * cuda::elem_bytes(m.type);
            grow(xs_, xs_n_, need, "GEMM inputs");
        }
        cuda::matmul(blas_, m.mem.p, m.type, m.rows, m.cols, x.p, x.type, xs_, y.p, y.type, T, stream_, &gemv_);
    }
    void rope(Buf x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const Vector& inv_freq) override {
        bind();
        cuda::rope(x.p, x.type, T, n_heads, head_dim, device_positions(pos, T), T > 0 ? pos[0] : 0, V_of(inv_freq),
                   stream_);
    }
    void swiglu(Buf gate, Buf up, Buf out, int64_t n) override {
        bind();
        cuda::swiglu(gate.f32(), up.f32(), out.f32(), n, stream_);
    }
    void add(Buf y, Buf x, int64_t n) override {
        bind();
        cuda::add(y.f32(), x.f32(), n, stream_);
    }

    // Fused layer steps (Backend's defaults otherwise): decode rows (T <= kGemvMaxT) through our
    // GEMV when it takes every product, unless ELASTIC_GEMV=cublas.
    bool fuse(int64_t T, std::initializer_list<const Matrix*> ms, DType tx, const void* x, DType ty) const {
        if (T > cuda::kGemvMaxT || gemv_.mode == cuda::GemvTuning::kCublas) return false;
        for (const Matrix* W : ms) {
            const CudaMatrix& m = M_of(*W);
            if (!cuda::gemv_takes(m.type, m.rows, m.cols, m.mem.p, tx, x, ty, T) || m.type != M_of(**ms.begin()).type)
                return false;
        }
        return true;
    }
    void norm_matmuls(Buf x, const Vector& w, float eps, Buf h, int64_t T, int64_t dim, const MatmulOut* outs,
                      int n_outs) override {
        bool ok = n_outs >= 1 && n_outs <= 3 && x.type == DType::F32 && w.n == dim;
        for (int i = 0; ok && i < n_outs; ++i)
            ok = outs[i].y.type == outs[0].y.type && outs[i].W->cols == dim &&
                 fuse(T, {outs[0].W, outs[i].W}, x.type, x.p, outs[i].y.type);
        if (!ok) return Backend::norm_matmuls(x, w, eps, h, T, dim, outs, n_outs);
        bind();
        const void* W[3];
        void* y[3];
        int64_t rows[3];
        for (int i = 0; i < n_outs; ++i) {
            W[i] = M_of(*outs[i].W).mem.p;
            y[i] = outs[i].y.p;
            rows[i] = outs[i].W->rows;
        }
        cuda::gemv_norm(W, M_of(*outs[0].W).type, rows, y, outs[0].y.type, n_outs, x.f32(), V_of(w), eps, dim, T, stream_);
    }
    void norm_swiglu(Buf x, const Vector& w, float eps, Buf h, const Matrix& wg, const Matrix& wu, Buf gate, Buf up,
                     int64_t T, int64_t dim) override {
        if (x.type != DType::F32 || gate.type != DType::F32 || w.n != dim || wg.rows != wu.rows || wg.cols != dim ||
            wu.cols != dim || !fuse(T, {&wg, &wu}, x.type, x.p, DType::F32))
            return Backend::norm_swiglu(x, w, eps, h, wg, wu, gate, up, T, dim);
        bind();
        cuda::gemv_norm_swiglu(M_of(wg).mem.p, M_of(wu).mem.p, M_of(wg).type, wg.rows, gate.f32(), x.f32(), V_of(w), eps,
                               dim, T, stream_);
    }
    void matmul_add(const Matrix& W, Buf in, Buf x, Buf tmp, int64_t T) override {
        if (x.type != DType::F32 || !fuse(T, {&W}, in.type, in.p, DType::F32)) return Backend::matmul_add(W, in, x, tmp, T);
        bind();
        const CudaMatrix& m = M_of(W);
        cuda::gemv_add(m.mem.p, m.type, m.rows, m.cols, in.p, in.type, x.f32(), T, stream_);
    }
    void qk_norm_rope(Buf q, Buf k, const Vector* qn, const Vector* kn, float eps, int64_t T, int n_head, int n_kv_head,
                      int head_dim, const int32_t* pos, const Vector& inv_freq) override {
        if (!fused_qk(q, k, head_dim, T))
            return Backend::qk_norm_rope(q, k, qn, kn, eps, T, n_head, n_kv_head, head_dim, pos, inv_freq);
        bind();
        cuda::qk_norm_rope(q.p, k.p, q.type, qn ? V_of(*qn) : nullptr, kn ? V_of(*kn) : nullptr, eps, T, n_head, n_kv_head,
                           head_dim, device_positions(pos, T), T > 0 ? pos[0] : 0, V_of(inv_freq), stream_);
    }
    // Whether cuda::qk_norm_rope takes these decode rows (else Backend's rms_norm + rope steps).
    static bool fused_qk(Buf q, Buf k, int head_dim, int64_t T) {
        return (head_dim == 64 || head_dim == 128) && q.type == k.type && T <= cuda::kGemvMaxT;
    }

    // The decode step's q/k norms, RoPE and cache append in one launch (Backend's default: the
    // two steps) where qk_norm_rope takes the rows and the caches are in the attention type.
    void qk_norm_rope_append(Buf q, Buf k, Buf v, const Vector* qn, const Vector* kn, float eps, int64_t T, int n_head,
                             int n_kv_head, int head_dim, const int32_t* pos, const Vector& inv_freq,
                             LayerCache* const* caches) override {
        if (!fused_qk(q, k, head_dim, T) || k.type != precision_ || v.type != precision_ || fused_append_off())
            return Backend::qk_norm_rope_append(q, k, v, qn, kn, eps, T, n_head, n_kv_head, head_dim, pos, inv_freq,
                                                caches);
        bind();
        cuda::KvAppend app;
        app.v = v.p;
        for (int64_t t = 0; t < T; ++t)
            cuda::cache_append_target(app, int(t), *static_cast<Cache&>(*caches[t]).c, pos[t]);
        cuda::qk_norm_rope_append(q.p, k.p, q.type, qn ? V_of(*qn) : nullptr, kn ? V_of(*kn) : nullptr, eps, T, n_head,
                                  n_kv_head, head_dim, device_positions(pos, T), T > 0 ? pos[0] : 0, V_of(inv_freq), app,
                                  stream_);
    }
    // ELASTIC_FUSED_APPEND=0 (measurements, A/B): the norms + RoPE and the append as two launches.
    static bool fused_append_off() {
        static const bool off = [] {
            const char* e = std::getenv("ELASTIC_FUSED_APPEND");
            return e && *e == '0';
        }();
        return off;
    }

    void attn_hybrid_prefill(Buf q, Buf k, Buf v, Buf out, int64_t T, int n_head, int n_kv_head, int head_dim,
                             const LayerPlan& plan, const StreamingWindow& win, int64_t xa_block, float scale) override {
        if (head_dim != 64 && head_dim != 128)
            fail("the CUDA attention kernels take head_dim 64 or 128; this model has %d (use --backend cpu)", head_dim);
        bind();
        check_attn(q, k, v, out);
        if (plan.modes_on_device) {  // route_prefill wrote the modes
            if (!plan_ || !cuda::holds_device_modes(*plan_, n_kv_head, T))
                fail("the routed plan on the device is not this launch's (route_prefill must precede its prefill)");
        } else if (plan.xa_on_device) {  // xa_prefill_plan wrote the lists and the plan's fields
            if (!plan_ || !cuda::holds_device_xa(*plan_, plan, T, xa_block))
                fail("the XA plan on the device is not this launch's (xa_prefill_plan must precede its prefill)");
        } else if (plan_) {
            cuda::refill_plan(*plan_, plan, T, xa_block, stream_);  // one device plan, refilled per layer
        } else {
            plan_ = cuda::upload_plan(plan, T, xa_block, stream_);
        }
        cuda::attn_hybrid_prefill(q.p, k.p, v.p, out.p, precision_, T, n_head, n_kv_head, head_dim, *plan_, win, xa_block,
                                  scale, stream_);
    }
    void xa_fill_plan(Buf q, Buf k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                      LayerPlan& plan) override {
        bind();
        check_attn(q, k, k, q);
        cuda::xa_fill_plan(q.p, k.p, precision_, T, n_head, n_kv_head, head_dim, p, plan, stream_);
    }
    // The forward's XA plan: selected on the device into the backend's plan (xattention.cu), unless
    // ELASTIC_XA_SELECT=host (the scores to the host and the lists back, as xa_fill_plan) or the
    // sequence is past what one CTA's sort takes.
    void xa_prefill_plan(Buf q, Buf k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                         LayerPlan& plan) override {
        static const bool host = [] {
            const char* e = std::getenv("ELASTIC_XA_SELECT");
            return e && std::strcmp(e, "host") == 0;
        }();
        const int xa_heads = int(std::count(plan.mode.begin(), plan.mode.end(), HeadMode::XA));
        if (host || !cuda::xa_device_select_supported(T, p, xa_heads))
            return xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan);
        bind();
        check_attn(q, k, k, q);
        if (!plan_) plan_ = cuda::new_plan();
        cuda::xa_fill_device_plan(*plan_, q.p, k.p, precision_, T, n_head, n_kv_head, head_dim, p, plan, stream_);
        plan.xa.assign(plan.mode.size(), BlockList{});
        plan.xa_on_device = true;
        plan.xa_pairs.clear();
    }
    void xa_finish_plan(LayerPlan& plan) override {
        if (!plan.xa_on_device) return;
        bind();
        ELASTIC_ASSERT(plan_);
        plan.xa_pairs = cuda::device_xa_pairs(*plan_, plan, stream_);
    }
    void xa_download(LayerPlan& plan) override {
        if (!plan.xa_on_device) return;
        bind();
        ELASTIC_ASSERT(plan_);
        cuda::download_device_xa(*plan_, plan, stream_);
    }
    void router_logits(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                       float* logits_host) override {
        bind();
        const auto& cr = static_cast<const CudaRouter&>(r);
        ELASTIC_ASSERT(cr.n_kv_head == n_kv_head);
        cuda::router_logits(blas_, cr.lin, k.p, k.type, T, n_kv_head, head_dim, window, static_cast<float*>(cr.scratch.p),
                            logits_host, stream_, cr.pinned);
    }

    // Routing on the device (Backend::route_prefill): unless ELASTIC_ROUTE=host (read per call,
    // the host path of router_logits + Router::decision, for A/B runs) and for layers of at most
    // 64 KV heads (router_decide's one thread).
    bool routes_on_device() const override {
        const char* e = std::getenv("ELASTIC_ROUTE");
        return !(e && std::strcmp(e, "host") == 0);
    }
    void route_prefill(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                       const RouteRule& rule, LayerPlan& plan) override {
        bind();
        const auto& cr = static_cast<const CudaRouter&>(r);
        ELASTIC_ASSERT(cr.n_kv_head == n_kv_head && n_kv_head <= 64);
        ELASTIC_ASSERT_MSG(rule.full_mode != HeadMode::XA && rule.sparse_mode != HeadMode::XA,
                           "routing on the device takes FA and SSA modes only");
        if (route_pending_) {  // a prefill that threw between the two: its record is not wanted
            CUDA_CHECK(cudaEventSynchronize(route_ev_[2]));
            route_pending_ = false;
        }
        const int n_out = cr.layer->rh4.out;
        const size_t rec = cuda::route_record_floats(n_kv_head, n_out);
        if (rec > route_cap_) {
            if (route_dev_) CUDA_CHECK(cudaFree(route_dev_));
            if (route_host_) CUDA_CHECK(cudaFreeHost(route_host_));
            route_cap_ = std::max<size_t>(rec, 64 * 5);
            route_dev_ = cuda::device_alloc<float>(route_cap_, "the router's decision");
            CUDA_CHECK(cudaMallocHost(&route_host_, route_cap_ * sizeof(float)));
            for (cudaEvent_t* e : {&route_ev_[0], &route_ev_[1], &route_ev_[2]})
                if (!*e) CUDA_CHECK(cudaEventCreate(e));
        }
        if (!plan_) plan_ = cuda::new_plan();
        cuda::fill_plan_device_modes(*plan_, n_kv_head, T, 64, stream_);
        CUDA_CHECK(cudaEventRecord(route_ev_[0], stream_));
        const float* logits = cuda::router_queue(blas_, cr.lin, k.p, k.type, T, n_kv_head, head_dim, window,
                                                 static_cast<float*>(cr.scratch.p), stream_);
        cuda::RouteRule dr;
        dr.n_sparse = rule.n_sparse;
        dr.full_mode = int(rule.full_mode);
        dr.sparse_mode = int(rule.sparse_mode);
        cuda::router_decide(logits, n_kv_head, n_out, dr, cuda::head_meta_words(*plan_), 2, route_dev_, stream_);
        CUDA_CHECK(cudaEventRecord(route_ev_[1], stream_));
        CUDA_CHECK(cudaMemcpyAsync(route_host_, route_dev_, rec * sizeof(float), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaEventRecord(route_ev_[2], stream_));
        route_pending_ = true;
        route_H_ = n_kv_head;
        route_out_ = n_out;
        plan = LayerPlan{};
        plan.modes_on_device = true;
    }
    double route_result(LayerPlan& plan, RouterDecision& d) override {
        if (!route_pending_ || !plan.modes_on_device) fail("route_result: no route_prefill to take");
        bind();
        CUDA_CHECK(cudaEventSynchronize(route_ev_[2]));  // the router's kernels and their record only
        route_pending_ = false;
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, route_ev_[0], route_ev_[1]));
        const int H = route_H_, n = route_out_;
        const float* rec = route_host_;
        d.logits.assign(rec, rec + size_t(H) * n);
        d.prob_fa.assign(rec + size_t(H) * n, rec + size_t(H) * (n + 1));
        d.margin.assign(rec + size_t(H) * (n + 1), rec + size_t(H) * (n + 2));
        d.full.assign(size_t(H), 0);
        plan.mode.resize(size_t(H));
        for (int h = 0; h < H; ++h) {
            const int m = int(rec[size_t(H) * (n + 2) + size_t(h)]);
            ELASTIC_ASSERT(m == int(HeadMode::FA) || m == int(HeadMode::SSA));
            plan.mode[size_t(h)] = HeadMode(m);
            d.full[size_t(h)] = rec[size_t(H) * (n + 3) + size_t(h)] != 0.0f;
        }
        plan.modes_on_device = false;
        return double(ms) * 1e-3;
    }
    int mark() override {
        bind();
        if (n_marks_ == int(marks_.size())) {
            marks_.push_back(nullptr);
            CUDA_CHECK(cudaEventCreate(&marks_.back()));
        }
        CUDA_CHECK(cudaEventRecord(marks_[size_t(n_marks_)], stream_));
        return n_marks_++;
    }
    double seconds(int a, int b) override {
        ELASTIC_ASSERT(a >= 0 && b >= 0 && a < n_marks_ && b < n_marks_);
        bind();
        CUDA_CHECK(cudaEventSynchronize(marks_[size_t(b)]));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, marks_[size_t(a)], marks_[size_t(b)]));
        return double(ms) * 1e-3;
    }
    void forget_marks() override { n_marks_ = 0; }

    struct Cache final : LayerCache {
        std::unique_ptr<cuda::DeviceLayerCache> c;
        size_t bytes() const override { return cuda::cache_bytes(*c); }
    };
    std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win, int64_t capacity,
                                                int n_kv_head, int head_dim) override {
        bind();
        auto c = std::make_unique<Cache>();
        c->c = cuda::new_layer_cache(plan, win, capacity, n_kv_head, head_dim, stream_);
        return c;
    }
    void cache_store_prefill(LayerCache& c, Buf k, Buf v, int64_t T) override {
        bind();
        check_attn(k, v, k, v);
        cuda::cache_store_prefill(*static_cast<Cache&>(c).c, k.p, v.p, precision_, T, stream_);
    }
    void cache_append(LayerCache& c, Buf k_tok, Buf v_tok, int64_t pos) override {
        bind();
        check_attn(k_tok, v_tok, k_tok, v_tok);
        cuda::cache_append(*static_cast<Cache&>(c).c, k_tok.p, v_tok.p, precision_, pos, stream_, step_pos(pos));
    }
    void attn_decode(Buf q, const LayerCache& c, int64_t pos, Buf out, int n_head, float scale) override {
        bind();
        check_attn(q, out, q, out);
        cuda::attn_decode(q.p, *static_cast<const Cache&>(c).c, pos, out.p, precision_, n_head, scale, stream_,
                          step_pos(pos));
    }

    // Router training (src/cuda/train.cu), fp32 only.
    void copy(Buf dst, Buf src, size_t n) override {
        bind();
        CUDA_CHECK(cudaMemcpyAsync(dst.f32(), src.f32(), n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
    }
    void zero(Buf dst, size_t n) override {
        bind();
        CUDA_CHECK(cudaMemsetAsync(dst.f32(), 0, n * sizeof(float), stream_));
    }
    void rms_norm_backward(Buf x, const Vector& w, Buf dy, Buf dx, int64_t rows, int64_t dim, float eps,
                           bool accumulate) override {
        bind();
        ELASTIC_ASSERT(w.n == dim);
        cuda::rms_norm_backward(x.f32(), V_of(w), dy.f32(), dx.f32(), rows, dim, eps, accumulate, stream_);
    }
    void swiglu_backward(Buf gate, Buf up, Buf dout, Buf dgate, Buf dup, int64_t n) override {
        bind();
        cuda::swiglu_backward(gate.f32(), up.f32(), dout.f32(), dgate.f32(), dup.f32(), n, stream_);
    }
    void matmul_dx(const Matrix& W, Buf dy, Buf dx, int64_t T, bool accumulate) override {
        bind();
        const CudaMatrix& m = M_of(W);
        train_check(m);
        cuda::matmul_dx(blas_, static_cast<const float*>(m.mem.p), m.rows, m.cols, dy.f32(), dx.f32(), T, accumulate,
                        stream_);
    }
    CrossEntropy cross_entropy(const Matrix& W, Buf h, const int32_t* targets, int64_t T, Buf dh) override {
        bind();
        const CudaMatrix& m = M_of(W);
        train_check(m);
        return cuda::cross_entropy(blas_, static_cast<const float*>(m.mem.p), m.rows, m.cols, h.f32(), targets, T,
                                   dh.f32(), stream_);
    }
    void attn_forward_lse(const AttnShape& s, const LayerPlan& plan, Buf q, Buf k, Buf v, Buf out, Buf lse) override {
        bind();
        train_plan(s, plan);
        cuda::attn_forward_lse(s, *train_plan_, q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(), stream_);
    }
    void attn_backward(const AttnShape& s, const LayerPlan& plan, Buf q, Buf k, Buf v, Buf o, Buf lse, Buf dout, Buf dq,
                       Buf dk, Buf dv, const float* coef) override {
        bind();
        train_plan(s, plan);
        cuda::attn_backward(s, *train_plan_, q.f32(), k.f32(), v.f32(), o.f32(), lse.f32(), dout.f32(), dq.f32(),
                            dk.f32(), dv.f32(), coef, stream_);
    }
    void mix_heads(Buf a, Buf b, const float* w, Buf out, int64_t T, int n_head, int n_kv_head, int head_dim) override {
        bind();
        cuda::mix_heads(a.f32(), b.f32(), w, out.f32(), T, n_head, n_kv_head, head_dim, stream_);
    }
    void mix_heads_dw(Buf dout, Buf a, Buf b, int64_t T, int n_head, int n_kv_head, int head_dim,
                      double* dw_host) override {
        bind();
        cuda::mix_heads_dw(dout.f32(), a.f32(), b.f32(), T, n_head, n_kv_head, head_dim, dw_host, stream_);
    }

    // Decode graphs (the file comment; Backend::graph_begin).
    bool graphs() const override { return graphs_on_; }
    void set_graphs(bool on) override { graphs_on_ = on; }
    int graph_layers() const override { return graph_layers_; }
    bool graph_begin(int64_t key) override {
        ELASTIC_ASSERT(capturing_ < 0 && key >= 0);
        if (!graphs_on_) return false;
        bind();
        CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
        capturing_ = key;
        capture_static_ = true;
        return true;
    }
    void graph_end() override {
        ELASTIC_ASSERT(capturing_ >= 0);
        bind();
        cudaGraph_t g = nullptr;
        CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
        Recording& r = graphs_[capturing_];
        capturing_ = -1;
        if (r.exec) {
            cudaGraphExecUpdateResultInfo info{};
            if (cudaGraphExecUpdate(r.exec, g, &info) == cudaSuccess) {
                ++graph_stats_.updates;
            } else {  // another topology: build it afresh
                (void)cudaGetLastError();
                CUDA_CHECK(cudaGraphExecDestroy(r.exec));
                r.exec = nullptr;
            }
        }
        if (!r.exec) {
            CUDA_CHECK(cudaGraphInstantiate(&r.exec, g, 0));
            ++graph_stats_.instantiations;
        }
        r.replayable = capture_static_;
        r.scratch_gen = scratch_gen_;
        CUDA_CHECK(cudaGraphDestroy(g));
        CUDA_CHECK(cudaGraphLaunch(r.exec, stream_));
        ++graph_stats_.launches;
    }
    void graph_abort() override {
        if (capturing_ < 0) return;
        bind();
        cudaGraph_t g = nullptr;
        const cudaError_t err = cudaStreamEndCapture(stream_, &g);
        if (err != cudaSuccess) (void)cudaGetLastError();  // an invalidated capture ends with an error
        if (g) cudaGraphDestroy(g);
        capturing_ = -1;
    }
    void step_inputs(const int32_t* ids, const int32_t* pos, int64_t n) override {
        ELASTIC_ASSERT(capturing_ < 0 && n >= 1);
        bind();
        grow(step_, step_cap_, size_t(2 * n), "decode step inputs");
        step_host_.assign(ids, ids + n);
        step_host_.insert(step_host_.end(), pos, pos + n);
        // From pageable memory: the copy is staged before the call returns, so the next step may
        // overwrite step_host_ while this one is still queued.
        CUDA_CHECK(cudaMemcpyAsync(step_, step_host_.data(), size_t(2 * n) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   stream_));
        step_n_ = n;
    }
    bool graph_replay(int64_t first, int n) override {
        if (!graphs_on_ || capturing_ >= 0 || n <= 0) return false;
        for (int64_t key = first; key < first + n; ++key) {
            const auto it = graphs_.find(key);
            if (it == graphs_.end() || !it->second.exec || !it->second.replayable || it->second.scratch_gen != scratch_gen_)
                return false;
        }
        bind();
        for (int64_t key = first; key < first + n; ++key) CUDA_CHECK(cudaGraphLaunch(graphs_[key].exec, stream_));
        graph_stats_.launches += n;
        graph_stats_.replays += n;
        return true;
    }
    void graph_forget(int64_t key) override {
        const auto it = graphs_.find(key);
        if (it == graphs_.end()) return;
        bind();
        if (it->second.exec) CUDA_CHECK(cudaGraphExecDestroy(it->second.exec));
        graphs_.erase(it);
    }
    GraphStats graph_stats() const override { return graph_stats_; }

    void top_candidates(Buf logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) override {
        ELASTIC_ASSERT(k >= 1 && k <= kMaxCandidates && n >= 1);
        bind();
        k = std::min(k, int(n));
        out.resize(size_t(k));
        cuda::top_candidates(logits.f32(), n, k, out.data(), stream_);
    }
    bool sorted_candidates(Buf logits, int32_t n, float temperature, int max_out,
                           std::vector<std::pair<float, int32_t>>& out, double& sum) override {
        ELASTIC_ASSERT(n >= 1 && max_out >= 1 && temperature > 0);
        bind();
        out.resize(size_t(std::min<int64_t>(n, max_out)));
        sum = cuda::sorted_candidates(logits.f32(), n, temperature, int(out.size()), out.data(), stream_);
        return true;
    }

private:
    // The device thread state is per host thread: every entry point selects our device first.
    void bind() const { CUDA_CHECK(cudaSetDevice(device_)); }
    void check_attn(Buf a, Buf b, Buf c, Buf d) const {
        for (const Buf& x : {a, b, c, d})
            ELASTIC_ASSERT_MSG(x.type == precision_, "attention tensors must be in the backend's attention type");
    }
    void train_check(const CudaMatrix& m) const {
        if (m.type != DType::F32)
            fail("router training on CUDA needs the model in fp32 (this backend holds it in %s)", name());
    }
    // The training attention's plan on the device (its own, apart from the prefill's).
    void train_plan(const AttnShape& s, const LayerPlan& plan) {
        const bool xa = std::find(plan.mode.begin(), plan.mode.end(), HeadMode::XA) != plan.mode.end();
        if (xa && s.xa_block % 64 != 0) fail("CUDA router training: --xa-block must be a multiple of 64");
        const int64_t block = xa ? s.xa_block : 64;
        if (train_plan_) cuda::refill_plan(*train_plan_, plan, s.T, block, stream_);
        else train_plan_ = cuda::upload_plan(plan, s.T, block, stream_);
    }
    // fp32 staging for upload / download of 16-bit buffers (tests and tools only).
    float* stage(size_t n) {
        grow(stage_, stage_n_, n, "a staging buffer");
        return stage_;
    }
    // Backend scratch p of cap elements grown to at least n (contents not kept). A recording may
    // hold the old pointer, so every growth makes all recordings stale (scratch_gen_).
    template <typename T>
    void grow(T*& p, size_t& cap, size_t n, const char* what) {
        if (n <= cap) return;
        CUDA_CHECK(cudaFree(p));
        p = cuda::device_alloc<T>(n, what);
        cap = n;
        ++scratch_gen_;
    }
    // Host int32 values (token ids, positions) in a device scratch buffer. The stream orders the
    // buffer's reuse after the kernels that read it.
    const int32_t* device_ints(const int32_t* host, int64_t n) {
        grow(ints_, ints_n_, size_t(n), "token ids");
        CUDA_CHECK(cudaMemcpyAsync(ints_, host, size_t(n) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
        return ints_;
    }

    // Where a kernel reads the positions pos[T]: a decode step's from its recording's inputs; null
    // when they are consecutive (the kernel counts from pos[0]; the forward's always are), else a
    // device copy.
    const int32_t* device_positions(const int32_t* pos, int64_t T) {
        if (const int32_t* d = step_pos(pos, T)) return d;
        for (int64_t t = 1; t < T; ++t)
            if (pos[t] != pos[0] + t) return device_ints(pos, T);
        return nullptr;
    }

    // The step inputs' device copy where an op's host ids (or positions) are the step's: then the
    // launch reads them there and does not depend on the step. Otherwise null, and a capture in
    // progress is marked not replayable.
    const int32_t* step_ids(const int32_t* ids, int64_t T) { return step_match(ids, T, 0); }
    const int32_t* step_pos(const int32_t* pos, int64_t T) { return step_match(pos, T, step_n_); }
    const int32_t* step_match(const int32_t* v, int64_t T, int64_t off) {  // off: 0 ids, step_n_ positions
        if (T == step_n_ && std::equal(v, v + T, step_host_.begin() + off)) return step_ + off;
        if (capturing_ >= 0) capture_static_ = false;
        return nullptr;
    }
    const int32_t* step_pos(int64_t pos) {  // one token's position among the step's
        for (int64_t t = 0; t < step_n_; ++t)
            if (step_host_[size_t(step_n_ + t)] == pos) return step_ + step_n_ + t;
        if (capturing_ >= 0) capture_static_ = false;
        return nullptr;
    }

    int device_;
    DType precision_;
    cudaStream_t stream_ = nullptr;
    cudaEvent_t ev0_ = nullptr, ev1_ = nullptr;  // timed_ms
    cublasHandle_t blas_ = nullptr;
    uint8_t* blas_ws_ = nullptr;  // cuBLAS workspace, [blas_ws_n_] bytes
    size_t blas_ws_n_ = 0;
    bool graphs_on_ = true;             // ELASTIC_CUDA_GRAPH=0: off
    int graph_layers_ = 0;              // ELASTIC_CUDA_GRAPH_LAYERS: layers per captured segment
    struct Recording {
        cudaGraphExec_t exec = nullptr;
        bool replayable = false;   // every id and position of the capture came from step_
        uint64_t scratch_gen = 0;  // scratch_gen_ at the capture
    };
    int64_t capturing_ = -1;                 // key of the capture in progress
    bool capture_static_ = true;             // so far every op of the capture read the step inputs
    std::map<int64_t, Recording> graphs_;    // key → its instantiated graph
    GraphStats graph_stats_;
    uint64_t scratch_gen_ = 0;               // bumped whenever scratch a recording may use is reallocated
    int32_t* step_ = nullptr;                // device [2 · step_n_]: ids, then positions
    size_t step_cap_ = 0;
    int64_t step_n_ = 0;
    std::vector<int32_t> step_host_;         // the same on the host
    cuda::GemvTuning gemv_;  // decode products: our GEMV or cuBLAS, per shape
    uint8_t* xs_ = nullptr;  // fp32 GEMM inputs rounded to the weight type, [xs_n_] bytes
    size_t xs_n_ = 0;
    float* stage_ = nullptr;  // [stage_n_]
    size_t stage_n_ = 0;
    int32_t* ints_ = nullptr;  // [ints_n_]
    size_t ints_n_ = 0;
    std::unique_ptr<cuda::DevicePlan> plan_;  // the last prefill's plan
    // route_prefill's record (device, and its pinned copy) and events: router start, decision
    // written, record copied.
    float* route_dev_ = nullptr;
    float* route_host_ = nullptr;
    size_t route_cap_ = 0;
    cudaEvent_t route_ev_[3] = {nullptr, nullptr, nullptr};
    bool route_pending_ = false;
    int route_H_ = 0, route_out_ = 0;
    std::vector<cudaEvent_t> marks_;  // mark(): reused after forget_marks()
    int n_marks_ = 0;
    std::unique_ptr<cuda::DevicePlan> train_plan_;  // the training attention's last plan
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

std::unique_ptr<Backend> make_cuda_backend(int device, DType precision) {
    if (precision != DType::BF16 && precision != DType::F16 && precision != DType::F32)
        fail("CUDA: the precision must be bf16, f16 or f32");
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
