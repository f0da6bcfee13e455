// The op interface the model forward is written against (CONVENTIONS.md #3). A backend owns its
// memory: weights go to it once, at load, and come back as handles (Matrix, Vector, RouterWeights);
// activations live in its buffers (Buf). Nothing in the forward crosses between host and backend
// but token ids and positions in and logits (or sampling candidates) out.
//
// Two activation types: the residual stream, norms, FFN and logits are fp32 everywhere; the
// attention tensors (q, k, v, attention output) are in the backend's attention type `attn_type()`:
// fp32 on the CPU, bf16 / fp16 / fp32 on a GPU per its precision. Ops assert the types they get.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attention/plan.h"
#include "attention/router.h"
#include "core/dtype.h"
#include "model/weights.h"

namespace elastic {

// Cross-entropy of a sequence's logits against its targets (Backend::cross_entropy).
struct CrossEntropy {
    double loss = 0;    // mean over counted tokens (0 when none counts)
    int64_t count = 0;  // tokens with target >= 0
};

// A view of backend memory: elements of `type` (F32, BF16 or F16). Offsets are in elements.
struct Buf {
    void* p = nullptr;
    DType type = DType::F32;

    Buf at(int64_t elems) const { return {static_cast<char*>(p) + size_t(elems) * elem_bytes(), type}; }
    size_t elem_bytes() const { return type == DType::F32 ? 4 : 2; }
    float* f32() const;  // the pointer, asserting type F32
    explicit operator bool() const { return p != nullptr; }
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;
    // Type of q, k, v and the attention output (see the file comment).
    virtual DType attn_type() const { return DType::F32; }
    // Most decode rows one call may stack (DecodeBatch) while each row's result stays bit-identical
    // to a call with that row alone: the GEMMs must not change their arithmetic with the row count.
    virtual int max_stable_decode_rows() const { return 1; }

    // --- Memory ---
    virtual Buf alloc(size_t n, DType t) = 0;  // n elements, uninitialised
    virtual void release(Buf b) = 0;
    // Host fp32 <-> buffer of any type (rounded to nearest even on the way in). For tests, logits
    // and tools; the forward itself moves nothing else.
    virtual void upload(Buf dst, const float* host, size_t n) = 0;
    virtual void download(float* host, Buf src, size_t n) = 0;
    // Waits for the queued work (a GPU backend runs asynchronously); for timing statistics.
    virtual void sync() {}
    // Benchmarks: the time in ms of the work `queue` enqueues, as the device measures it (a GPU
    // backend: events on its stream right before and after, so host-side launch costs overlap
    // with the device work and only the device's time counts); here, without a device clock, the
    // host time from a sync() before to a sync() after.
    virtual double timed_ms(const std::function<void()>& queue) {
        sync();
        const auto t0 = std::chrono::steady_clock::now();
        queue();
        sync();
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }

    // --- Resident weights (made once per model; the backend keeps what it needs) ---
    struct Matrix {
        virtual ~Matrix() = default;
        int64_t rows = 0, cols = 0;  // a Linear weight [out, in]
    };
    struct Vector {
        virtual ~Vector() = default;
        int64_t n = 0;
    };
    struct RouterWeights {
        virtual ~RouterWeights() = default;
        const RouterLayer* layer = nullptr;  // the host copy (shapes, decision rule)
    };
    virtual std::shared_ptr<const Matrix> upload_matrix(const Weight& W) = 0;
    virtual std::shared_ptr<const Vector> upload_vector(const std::vector<float>& v) = 0;
    virtual std::unique_ptr<const RouterWeights> upload_router(const RouterLayer& r, int n_kv_head) = 0;

    // --- Dense ops ---
    // out[T, d] f32 = rows ids[t] of E[vocab, d]
    virtual void embedding(const Matrix& E, const int32_t* ids, int64_t T, Buf out) = 0;
    // y[rows, dim] = x / rms(x) * w   (y may equal x; x and y of any activation type)
    virtual void rms_norm(Buf x, const Vector& w, Buf y, int64_t rows, int64_t dim, float eps) = 0;
    // y[T, W.rows] = x[T, W.cols] @ W^T   (x and y f32 or attn_type())
    virtual void matmul(const Matrix& W, Buf x, Buf y, int64_t T) = 0;
    // x[T, n_heads, head_dim] rotated in place (HF rotate_half convention) at positions pos[T] (host)
    virtual void rope(Buf x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const Vector& inv_freq) = 0;
    // out[n] = silu(gate[n]) * up[n]   (f32)
    virtual void swiglu(Buf gate, Buf up, Buf out, int64_t n) = 0;
    // y[n] += x[n]   (f32)
    virtual void add(Buf y, Buf x, int64_t n) = 0;

    // --- Fused steps of a layer. The defaults run the dense ops above in this order (so every
    // backend has them); the CUDA backend does decode rows in one launch each, with the same bits.
    struct MatmulOut {
        const Matrix* W;
        Buf y;
    };
    // h[T, dim] = rms_norm(x) · w, then outs[i].y[T, W.rows] = h @ W^T for each of the n_outs (1-3) products.
    virtual void norm_matmuls(Buf x, const Vector& w, float eps, Buf h, int64_t T, int64_t dim, const MatmulOut* outs,
                              int n_outs);
    // gate[T, wg.rows] = silu(h @ wg^T) · (h @ wu^T) with h = rms_norm(x) · w; h and up are scratch
    // ([T, dim] and [T, wu.rows], f32).
    virtual void norm_swiglu(Buf x, const Vector& w, float eps, Buf h, const Matrix& wg, const Matrix& wu, Buf gate,
                             Buf up, int64_t T, int64_t dim);
    // x[T, W.rows] (f32) += in @ W^T; tmp: scratch [T, W.rows] (f32).
    virtual void matmul_add(const Matrix& W, Buf in, Buf x, Buf tmp, int64_t T);
    // Qwen3's per-head RMSNorms of q [T, n_head, d] and k [T, n_kv_head, d] (qn, kn null: none), then
    // RoPE of both at positions pos[T] (host).
    virtual void qk_norm_rope(Buf q, Buf k, const Vector* qn, const Vector* kn, float eps, int64_t T, int n_head,
                              int n_kv_head, int head_dim, const int32_t* pos, const Vector& inv_freq);

    // --- Elastic attention (DESIGN.md §1.2, §1.5, §1.6); q, k, v, out in attn_type() ---
    // Prefill of positions 0..T-1, every KV head in its plan's mode, one pass.
    // q, out [T, n_head, head_dim]; k, v [T, n_kv_head, head_dim]
    virtual void attn_hybrid_prefill(Buf q, Buf k, Buf v, Buf out, int64_t T, int n_head, int n_kv_head, int head_dim,
                                     const LayerPlan& plan, const StreamingWindow& win, int64_t xa_block, float scale) = 0;
    // XAttention block lists for the plan's XA heads from the post-RoPE q [T, n_head, d], k [T, n_kv_head, d].
    virtual void xa_fill_plan(Buf q, Buf k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                              LayerPlan& plan) = 0;
    // The same for the next attn_hybrid_prefill on this backend. A backend may keep the lists in
    // device memory (plan.xa_on_device; the CUDA backend selects on the GPU and builds the launch's
    // work list there, so nothing crosses to the host); then, once the backend has synchronised,
    // xa_finish_plan fills plan.xa_pairs. The default is xa_fill_plan, with host lists.
    virtual void xa_prefill_plan(Buf q, Buf k, int64_t T, int n_head, int n_kv_head, int head_dim, const XAParams& p,
                                 LayerPlan& plan) {
        xa_fill_plan(q, k, T, n_head, n_kv_head, head_dim, p, plan);
    }
    virtual void xa_finish_plan(LayerPlan& plan) { (void)plan; }
    // Host lists of a plan made on the device (no-op otherwise): plan.xa filled, xa_on_device cleared.
    // The backend holds one device plan, so only the plan of its last xa_prefill_plan can be copied.
    virtual void xa_download(LayerPlan& plan) { (void)plan; }
    // Router of one layer (DESIGN.md §1.1): the pre-RoPE keys k [T, n_kv_head, head_dim] pooled over
    // their first and last `window` rows, through the layer's MLPs; logits_host [n_kv_head, rh4.out].
    virtual void router_logits(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                               float* logits_host) = 0;
    // Routing on the device, for a prefill whose modes are FA or SSA. route_prefill queues the
    // router of one layer (as router_logits), its decision (Router::decision) and the modes of
    // `rule` (choose_modes: routed, or MSR's n_sparse lowest-margin heads), written straight into
    // the device plan of the next attn_hybrid_prefill (plan.modes_on_device); nothing comes back to
    // the host before that attention is queued. route_result then waits for the router's own
    // kernels only (the attention runs on), fills plan.mode and the decision, and returns the
    // router's seconds on the device. A backend whose routes_on_device() is false routes on the
    // host (router_logits, then Router::decision); the defaults throw.
    struct RouteRule {
        int n_sparse = -1;  // < 0: each head its decision; else MSR: this many sparse heads
        HeadMode full_mode = HeadMode::FA, sparse_mode = HeadMode::SSA;
    };
    virtual bool routes_on_device() const { return false; }
    virtual void route_prefill(const RouterWeights& r, Buf k, int64_t T, int n_kv_head, int head_dim, int window,
                               const RouteRule& rule, LayerPlan& plan);
    virtual double route_result(LayerPlan& plan, RouterDecision& decision);
    // Points in the backend's queue of work, timed where the work runs: mark() records one (CUDA:
    // an event on the stream; the CPU, whose ops are done when they return: the host clock);
    // seconds(a, b) waits for b and gives the time from a to b; forget_marks() starts the count again.
    virtual int mark();
    virtual double seconds(int a, int b);
    virtual void forget_marks() { host_marks_.clear(); }
    // The KV cache of one layer of one sequence: each head keeps what its mode needs.
    struct LayerCache {
        virtual ~LayerCache() = default;
        virtual size_t bytes() const = 0;
    };
    virtual std::unique_ptr<LayerCache> new_layer_cache(const LayerPlan& plan, const StreamingWindow& win,
                                                        int64_t capacity, int n_kv_head, int head_dim) = 0;
    virtual void cache_store_prefill(LayerCache& c, Buf k, Buf v, int64_t T) = 0;  // k, v [T, n_kv_head, d]
    virtual void cache_append(LayerCache& c, Buf k_tok, Buf v_tok, int64_t pos) = 0;  // [n_kv_head, d]
    // A decode step's qk_norm_rope, then row t of k and v [T, n_kv_head, d] appended to caches[t] at
    // pos[t], the caches distinct: those two steps by default; a backend may do it in one pass
    // (CUDA: one launch).
    virtual void qk_norm_rope_append(Buf q, Buf k, Buf v, const Vector* qn, const Vector* kn, float eps, int64_t T,
                                     int n_head, int n_kv_head, int head_dim, const int32_t* pos, const Vector& inv_freq,
                                     LayerCache* const* caches);
    // One query token at position pos (already appended): q, out [n_head, head_dim].
    virtual void attn_decode(Buf q, const LayerCache& c, int64_t pos, Buf out, int n_head, float scale) = 0;

    // --- Router training (src/train/train-step.cpp) ---
    // Activation gradients through the frozen backbone. Every buffer here is fp32 (a GPU trains in
    // F32 precision); the CPU functions of src/train/backward.h are the specification and the
    // CPU backend runs them. `accumulate`: add the result to the output instead of writing it.
    // A backend that does not train keeps the defaults, which throw elastic::Error.
    virtual void copy(Buf dst, Buf src, size_t n);  // dst[n] = src[n]
    virtual void zero(Buf dst, size_t n);
    // dx[rows, dim] of y = rms_norm(x) * w, from dy.
    virtual void rms_norm_backward(Buf x, const Vector& w, Buf dy, Buf dx, int64_t rows, int64_t dim, float eps,
                                   bool accumulate);
    // The inverse rotation of rope() (its transpose, hence its backward): rope() at the negated
    // positions.
    void rope_backward(Buf dx, int64_t T, int n_heads, int head_dim, const int32_t* pos, const Vector& inv_freq);
    // dgate, dup [n] of out = silu(gate) * up, from dout (written).
    virtual void swiglu_backward(Buf gate, Buf up, Buf dout, Buf dgate, Buf dup, int64_t n);
    // dx[T, W.cols] = dy[T, W.rows] @ W (the backward of matmul() for its input).
    virtual void matmul_dx(const Matrix& W, Buf dy, Buf dx, int64_t T, bool accumulate);
    // Mean cross-entropy of logits = h @ W^T against targets (host [T], -1 = ignored) and dh [T, W.cols]
    // = d(mean loss)/dh, zero on ignored rows. Logits exist only for a chunk of counted rows at a time.
    virtual CrossEntropy cross_entropy(const Matrix& W, Buf h, const int32_t* targets, int64_t T, Buf dh);
    // The plan's attention with each row's natural-log log-sum-exp: q, out [T, n_head, d];
    // k, v [T, n_kv_head, d]; lse [T, n_head].
    virtual void attn_forward_lse(const AttnShape& s, const LayerPlan& plan, Buf q, Buf k, Buf v, Buf out, Buf lse);
    // Its backward (scores recomputed tile by tile): dq, dk, dv ADDED to; coef host [n_kv_head]
    // (nullptr: all 1) scales each KV head group's gradients, heads with coef 0 are skipped.
    virtual void attn_backward(const AttnShape& s, const LayerPlan& plan, Buf q, Buf k, Buf v, Buf o, Buf lse, Buf dout,
                               Buf dq, Buf dk, Buf dv, const float* coef);
    // out[T, n_head, d] = w[g]·a + (1 − w[g])·b for the heads of KV head g; w host [n_kv_head].
    virtual void mix_heads(Buf a, Buf b, const float* w, Buf out, int64_t T, int n_head, int n_kv_head,
                           int head_dim);
    // dw_host[g] = Σ over rows and the heads of KV head g of <dout, a − b> (the gradient of
    // mix_heads for w), summed in fp64.
    virtual void mix_heads_dw(Buf dout, Buf a, Buf b, int64_t T, int n_head, int n_kv_head, int head_dim,
                              double* dw_host);

    // --- Decode graphs ---
    // A GPU backend can record the launches of a decode step instead of issuing them one by one,
    // then replay the recording (a CUDA graph): between graph_begin() and graph_end() the ops are
    // captured, not run; graph_end() runs them. `key` names the recording (a segment of one
    // session's step). Nothing between the two may synchronise, allocate or copy to or from the
    // host, so the caller runs a step with new scratch sizes (the first decode step of a sequence)
    // uncaptured. graph_begin() returns false (nothing captured; ops run directly) when the backend
    // has no graphs or they are off (set_graphs(false)); graph_end() follows only a true
    // graph_begin(). graph_abort() ends a capture without running it (after an exception).
    //
    // Recorded once, replayed as it is: step_inputs() puts a step's token ids and positions in
    // device memory before the step; the ops of a captured step whose ids and positions are those
    // inputs read them there (embedding, RoPE, cache append, decode attention), so nothing in the
    // recording depends on the step and graph_replay() can launch it again for the next token
    // after a new step_inputs(), without running the ops on the host. A recording that read some
    // position from its kernel arguments (or whose backend scratch has moved since) is not
    // replayable: graph_replay() returns false and the caller captures the step again, which
    // updates the instantiated graph in place (cudaGraphExecUpdate) when only arguments changed.
    // graph_forget() drops a key's recording (its session's caches are gone or refilled).
    struct GraphStats {
        int64_t launches = 0;        // graph launches (captured steps and replays)
        int64_t instantiations = 0;  // graphs built from scratch (first capture or topology change)
        int64_t updates = 0;         // captures applied to an existing graph in place
        int64_t replays = 0;         // launches of a recording as it was, nothing captured
    };
    virtual bool graphs() const { return false; }
    virtual void set_graphs(bool) {}
    virtual int graph_layers() const { return 0; }  // layers per captured segment; 0: the whole step
    virtual bool graph_begin(int64_t /*key*/) { return false; }
    virtual void graph_end() {}
    virtual void graph_abort() {}
    virtual void step_inputs(const int32_t* /*ids*/, const int32_t* /*pos*/, int64_t /*n*/) {}
    // Launches the recordings of keys first .. first + n − 1 (a step's segments) in order if every
    // one is replayable; false (nothing launched) otherwise.
    virtual bool graph_replay(int64_t /*first*/, int /*n*/) { return false; }
    virtual void graph_forget(int64_t /*key*/) {}
    virtual GraphStats graph_stats() const { return {}; }

    // --- Sampling ---
    // The k largest of logits[0, n) (f32) as (value, index), value descending, lower index first on
    // ties (std::max_element's choice for k = 1). 1 <= k <= kMaxCandidates.
    static constexpr int kMaxCandidates = 128;
    virtual void top_candidates(Buf logits, int32_t n, int k, std::vector<std::pair<float, int32_t>>& out) = 0;
    // For top-p without top-k: the scaled logits s_i = logits[i] / temperature (an f32 division)
    // of [0, n) sorted like top_candidates (value descending, lower index first on ties), of which
    // the leading min(n, max_out) come back as (s_i, i), and in `sum` the softmax normaliser
    // Σ over all n of exp(double(s_i − s_0)): everything Sampler::sample_sorted needs to cut the
    // nucleus and draw exactly as Sampler::sample does over the full logits (up to the order of the
    // fp64 summation of `sum`: a GPU sums in parallel, the host in sorted order). Returns false
    // when the backend has no such op (the CPU: its logits are on the host already).
    static constexpr int kMaxNucleus = 4096;  // leading entries a GPU returns (32 KiB per token)
    virtual bool sorted_candidates(Buf /*logits*/, int32_t /*n*/, float /*temperature*/, int /*max_out*/,
                                   std::vector<std::pair<float, int32_t>>& out, double& sum) {
        out.clear();
        sum = 0;
        return false;
    }

private:
    std::vector<double> host_marks_;  // mark() where ops run as they are called
};

// CPU backend (fp32, OpenMP threads, OpenBLAS for dense products).
std::unique_ptr<Backend> make_cpu_backend(int threads);

// Checking backend for tests and tools: the CPU backend, except that every layer cache keeps the
// full K/V of every head and decode runs the fp64 naive kernel over it with the plan's decode masks
// (cpu::attn_decode_naive). The observer, if set, sees every decode step's query q [n_head, d]
// (post-RoPE) and the whole key history k [n_keys, n_kv_head, d] of the cache's layer.
using DecodeObserver = std::function<void(int layer, const float* q, const float* k, int64_t n_keys)>;
std::unique_ptr<Backend> make_reference_backend(int threads, DecodeObserver observer = nullptr);

// The CUDA backend on one GPU (src/cuda). precision: what weights, GEMM inputs and the attention
// tensors are stored in (accumulation is fp32 in all three):
//   BF16: bf16 weights, GEMM inputs and q/k/v/attention output (tensor cores);
//   F16:  the same in fp16 (3 more mantissa bits, 5 fewer exponent bits: values beyond 65504 overflow);
//   F32:  fp32 weights, GEMMs (no TF32) and the fp32 attention kernel: nothing rounded, for small
//         models and for checking against the CPU; slower and twice the weight memory of bf16.
// The decode KV cache is bf16 in all three. Throws elastic::Error when CUDA cannot start, the
// device does not exist, or the build has no CUDA.
std::unique_ptr<Backend> make_cuda_backend(int device, DType precision = DType::BF16);
// Usable CUDA devices; 0 when there is no driver, no GPU or no CUDA in this build.
int cuda_device_count();

}  // namespace elastic
