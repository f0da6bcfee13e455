// What the Backend interface defines once for every backend (model/backend.h).
#include "model/backend.h"

#include <vector>

#include "core/error.h"

namespace elastic {

void Backend::rope_backward(Buf dx, int64_t T, int n_heads, int head_dim, const int32_t* pos, const Vector& inv_freq) {
    // RoPE rotates each pair by pos·θ: an orthogonal map whose transpose is the rotation by −pos·θ.
    // float(−p)·θ is exactly −(float(p)·θ), and cos / sin are even / odd, so this is the exact inverse.
    std::vector<int32_t> neg(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) neg[size_t(t)] = -pos[t];
    rope(dx, T, n_heads, head_dim, neg.data(), inv_freq);
}

void Backend::norm_matmuls(Buf x, const Vector& w, float eps, Buf h, int64_t T, int64_t dim, const MatmulOut* outs,
                           int n_outs) {
    rms_norm(x, w, h, T, dim, eps);
    for (int i = 0; i < n_outs; ++i) matmul(*outs[i].W, h, outs[i].y, T);
}

void Backend::norm_swiglu(Buf x, const Vector& w, float eps, Buf h, const Matrix& wg, const Matrix& wu, Buf gate, Buf up,
                          int64_t T, int64_t dim) {
    rms_norm(x, w, h, T, dim, eps);
    matmul(wg, h, gate, T);
    matmul(wu, h, up, T);
    swiglu(gate, up, gate, T * wg.rows);
}

void Backend::matmul_add(const Matrix& W, Buf in, Buf x, Buf tmp, int64_t T) {
    matmul(W, in, tmp, T);
    add(x, tmp, T * W.rows);
}

void Backend::qk_norm_rope(Buf q, Buf k, const Vector* qn, const Vector* kn, float eps, int64_t T, int n_head,
                           int n_kv_head, int head_dim, const int32_t* pos, const Vector& inv_freq) {
    if (qn) {
        rms_norm(q, *qn, q, T * n_head, head_dim, eps);
        rms_norm(k, *kn, k, T * n_kv_head, head_dim, eps);
    }
    rope(q, T, n_head, head_dim, pos, inv_freq);
    rope(k, T, n_kv_head, head_dim, pos, inv_freq);
}

void Backend::qk_norm_rope_append(Buf q, Buf k, Buf v, const Vector* qn, const Vector* kn, float eps, int64_t T,
                                  int n_head, int n_kv_head, int head_dim, const int32_t* pos, const Vector& inv_freq,
                                  LayerCache* const* caches) {
    qk_norm_rope(q, k, qn, kn, eps, T, n_head, n_kv_head, head_dim, pos, inv_freq);
    const int64_t kvd = int64_t(n_kv_head) * head_dim;
    for (int64_t t = 0; t < T; ++t) cache_append(*caches[t], k.at(t * kvd), v.at(t * kvd), pos[t]);
}

void Backend::route_prefill(const RouterWeights&, Buf, int64_t, int, int, int, const RouteRule&, LayerPlan&) {
    fail("the %s backend routes on the host", name());
}
double Backend::route_result(LayerPlan&, RouterDecision&) { fail("the %s backend routes on the host", name()); }

int Backend::mark() {
    host_marks_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count());
    return int(host_marks_.size()) - 1;
}
double Backend::seconds(int a, int b) {
    ELASTIC_ASSERT(a >= 0 && b >= 0 && size_t(a) < host_marks_.size() && size_t(b) < host_marks_.size());
    return host_marks_[size_t(b)] - host_marks_[size_t(a)];
}

namespace {
[[noreturn]] void no_training(const Backend& b) { fail("the %s backend does not train routers", b.name()); }
}  // namespace

void Backend::copy(Buf, Buf, size_t) { no_training(*this); }
void Backend::zero(Buf, size_t) { no_training(*this); }
void Backend::rms_norm_backward(Buf, const Vector&, Buf, Buf, int64_t, int64_t, float, bool) { no_training(*this); }
void Backend::swiglu_backward(Buf, Buf, Buf, Buf, Buf, int64_t) { no_training(*this); }
void Backend::matmul_dx(const Matrix&, Buf, Buf, int64_t, bool) { no_training(*this); }
CrossEntropy Backend::cross_entropy(const Matrix&, Buf, const int32_t*, int64_t, Buf) { no_training(*this); }
void Backend::attn_forward_lse(const AttnShape&, const LayerPlan&, Buf, Buf, Buf, Buf, Buf) { no_training(*this); }
void Backend::attn_backward(const AttnShape&, const LayerPlan&, Buf, Buf, Buf, Buf, Buf, Buf, Buf, Buf, Buf,
                            const float*) {
    no_training(*this);
}
void Backend::mix_heads(Buf, Buf, const float*, Buf, int64_t, int, int, int) { no_training(*this); }
void Backend::mix_heads_dw(Buf, Buf, Buf, int64_t, int, int, int, double*) { no_training(*this); }

}  // namespace elastic
