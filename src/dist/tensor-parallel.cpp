// Tensor-parallel inference: see tensor-parallel.h. The layer's steps are model/layer.h's; what is
// here is who computes which head and where the partial sums meet.
#include "dist/tensor-parallel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "dist/placement.h"
#include "model/layer.h"

namespace elastic::dist {

namespace {

// CPU time of the calling thread: a rank's own work, whatever the other ranks' threads do to the
// shared cores.
double thread_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

}  // namespace

const char* placement_name(Placement p) { return p == Placement::Balanced ? "balanced" : "contiguous"; }

Placement parse_placement(const std::string& s) {
    if (s == "balanced") return Placement::Balanced;
    if (s == "contiguous") return Placement::Contiguous;
    fail("unknown placement '%s' (balanced or contiguous)", s.c_str());
}

std::vector<double> mode_costs(const std::vector<HeadMode>& modes, const StreamingWindow& win, int64_t T) {
    std::vector<double> c;
    for (HeadMode m : modes)
        c.push_back(double(attended_pairs(m == HeadMode::SSA ? HeadMode::SSA : HeadMode::FA, win, nullptr, 1, T)));
    return c;
}

TpSlices::TpSlices(const Model& m, int n_ranks) : ranks(n_ranks) {
    const ModelConfig& c = m.config;
    if (ranks < 1) fail("tensor parallel: %d ranks (at least 1)", ranks);
    const int H = c.n_kv_head, G = c.n_head / c.n_kv_head, hd = c.head_dim;
    // The FFN in whole blocks of w_down's stored type, so each rank's columns keep that type.
    const int64_t blk = dtype_block_size(m.weights.layers.at(0).w_down.type), units = c.d_ff / blk;
    if (units < ranks)
        fail("tensor parallel: the FFN's %d columns (%lld blocks of %lld) cannot be split over %d ranks", c.d_ff,
             (long long)units, (long long)blk, ranks);
    for (int r = 0; r <= ranks; ++r) ffn_begin.push_back(units * r / ranks * blk);
    for (const LayerWeights& L : m.weights.layers) {
        Layer d;
        for (int g = 0; g < H; ++g)
            d.groups.push_back({weight_rows(L.wq, int64_t(g) * G * hd, int64_t(G) * hd),
                                weight_rows(L.wk, int64_t(g) * hd, hd), weight_rows(L.wv, int64_t(g) * hd, hd),
                                weight_cols(L.wo, int64_t(g) * G * hd, int64_t(G) * hd)});
        if (dtype_block_size(L.w_down.type) != blk) fail("tensor parallel: w_down's type differs between layers");
        for (int r = 0; r < ranks; ++r) {
            const int64_t f0 = ffn_begin[size_t(r)], nf = ffn_begin[size_t(r) + 1] - f0;
            d.w_gate.push_back(weight_rows(L.w_gate, f0, nf));
            d.w_up.push_back(weight_rows(L.w_up, f0, nf));
            d.w_down.push_back(weight_cols(L.w_down, f0, nf));
        }
        layers.push_back(std::move(d));
    }
}

TpEngine::TpEngine(const Model& m, const TpSlices& s, int r, Backend& be, const Router* rt)
    : model(m), backend(be), router(rt), rank(r), ranks(s.ranks) {
    const ModelConfig& c = m.config;
    const ModelWeights& w = m.weights;
    if (r < 0 || r >= s.ranks) fail("rank %d outside %d ranks", r, s.ranks);
    if (router && router->n_layer() != c.n_layer) fail("the router has %d layers, the model %d", router->n_layer(), c.n_layer);
    tok_embd = be.upload_matrix(w.tok_embd);
    output = w.output.data == w.tok_embd.data ? tok_embd : be.upload_matrix(w.output);
    out_norm = be.upload_vector(w.out_norm);
    inv_freq = be.upload_vector(m.inv_freq);
    for (int l = 0; l < c.n_layer; ++l) {
        const LayerWeights& L = w.layers[size_t(l)];
        const TpSlices::Layer& S = s.layers[size_t(l)];
        Layer d;
        d.attn_norm = be.upload_vector(L.attn_norm);
        d.ffn_norm = be.upload_vector(L.ffn_norm);
        if (c.qk_norm) {
            d.q_norm = be.upload_vector(L.q_norm);
            d.k_norm = be.upload_vector(L.k_norm);
        }
        d.wk = be.upload_matrix(L.wk);
        for (const TpSlices::Group& g : S.groups)
            d.groups.push_back({be.upload_matrix(g.wq), be.upload_matrix(g.wk), be.upload_matrix(g.wv), be.upload_matrix(g.wo)});
        d.w_gate = be.upload_matrix(S.w_gate[size_t(r)]);
        d.w_up = be.upload_matrix(S.w_up[size_t(r)]);
        d.w_down = be.upload_matrix(S.w_down[size_t(r)]);
        if (router && router->has_layer(l)) {
            const RouterLayer& rl = router->layer(l);
            if (rl.head_dim() != c.head_dim)
                fail("the router of layer %d takes head_dim %d, the model has %d", l, rl.head_dim(), c.head_dim);
            d.router = be.upload_router(rl, c.n_kv_head);
        }
        layers.push_back(std::move(d));
    }
}

TpSession::TpSession(const TpEngine& engine, Communicator& comm, int64_t capacity, const AttentionSpec& spec,
                     Placement placement, int64_t chunk)
    : e_(engine), c_(engine.model.config), be_(engine.backend), comm_(comm), cap_(capacity),
      chunk_(std::max<int64_t>(1, chunk)), spec_(spec), placement_(placement) {
    if (comm.size() != e_.ranks || comm.rank() != e_.rank)
        fail("tensor parallel: rank %d of %d holds the weights of rank %d of %d", comm.rank(), comm.size(), e_.rank, e_.ranks);
    if (capacity <= 0) fail("context capacity must be positive");
    if (capacity > c_.max_ctx) fail("%lld tokens exceed the model's context length of %d", (long long)capacity, c_.max_ctx);
    if (spec_.needs_router() && !e_.router) fail("attention mode '%s' needs a router (--router PATH)", spec_.name.c_str());
    if (spec_.kind == AttentionSpec::Kind::Static) (void)choose_modes(spec_, 0, c_.n_kv_head, c_.n_layer, nullptr, 0, 0);
    last_logits_.resize(size_t(c_.vocab));
}

TpSession::~TpSession() { release_scratch(); }

void TpSession::release_scratch() {
    for (Buf* b : {&x_, &h_, &part_, &tmp_, &q_, &k_, &v_, &att_, &kr_, &gate_, &up_, &logits_})
        if (*b) {
            be_.release(*b);
            *b = Buf{};
        }
    rows_ = 0;
}

void TpSession::ensure_scratch(int64_t rows) {
    if (rows <= rows_) return;
    release_scratch();
    const int64_t D = c_.d_model, hd = c_.head_dim, gd = int64_t(c_.n_head / c_.n_kv_head) * hd;
    const int64_t router_rows = std::min<int64_t>(rows, 2 * int64_t(e_.router ? e_.router->window() : 0));
    const int64_t ffn = e_.layers[0].w_gate->rows, ffn_rows = std::min(rows, chunk_);
    const DType at = be_.attn_type();
    for (Buf* b : {&x_, &h_, &part_, &tmp_}) *b = be_.alloc(size_t(rows * D), DType::F32);
    q_ = be_.alloc(size_t(rows * gd), at);
    att_ = be_.alloc(size_t(rows * gd), at);
    k_ = be_.alloc(size_t(rows * hd), at);
    v_ = be_.alloc(size_t(rows * hd), at);
    if (router_rows > 0) kr_ = be_.alloc(size_t(router_rows * c_.n_kv_head * hd), at);
    gate_ = be_.alloc(size_t(ffn_rows * ffn), DType::F32);
    up_ = be_.alloc(size_t(ffn_rows * ffn), DType::F32);
    logits_ = be_.alloc(size_t(c_.vocab), DType::F32);
    rows_ = rows;
}

size_t TpSession::kv_bytes() const {
    size_t n = 0;
    for (const auto& layer : caches_)
        for (const auto& c : layer)
            if (c) n += c->bytes();
    return n;
}

void TpSession::check(const int32_t* ids, int64_t n) const {
    if (pos_ + n > cap_) fail("%lld tokens exceed the session's context of %lld", (long long)(pos_ + n), (long long)cap_);
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= c_.vocab) fail("token id %d is outside the vocabulary (%d)", ids[i], c_.vocab);
}

void TpSession::forward(const int32_t* ids, int64_t n) {
    if (n <= 0) return;
    check(ids, n);
    ensure_scratch(n);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) pos[size_t(t)] = int32_t(pos_ + t);
    const bool prefill = pos_ == 0;
    if (prefill) {
        const size_t L = size_t(c_.n_layer);
        stats_ = AttentionStats{};
        stats_.tokens = n;
        plans_.assign(L, LayerPlan{});
        rank_of_.assign(L, {});
        prob_fa_.assign(L, {});
        caches_.clear();
        caches_.resize(L);
        sparse_so_far_ = 0;
        placed_.assign(size_t(e_.ranks), 0.0);
        load_ = Load{};
        load_.pairs.assign(L, 0.0);
        load_.prefill_seconds.assign(L, 0.0);
    }
    const double t0 = stats_clock();
    be_.embedding(*e_.tok_embd, ids, n, x_);  // x [n, D], the same on every rank
    for (int l = 0; l < c_.n_layer; ++l) layer(l, n, pos.data());
    pos_ += n;
    // The logits of the last position, on every rank (the output projection is replicated).
    const int64_t D = c_.d_model;
    be_.rms_norm(x_.at((n - 1) * D), *e_.out_norm, h_, 1, D, c_.rms_eps);
    be_.matmul(*e_.output, h_, logits_, 1);
    be_.download(last_logits_.data(), logits_, size_t(c_.vocab));
    if (prefill) {
        double kv = double(kv_bytes());
        comm_.all_reduce_sum(&kv, 1);
        stats_.finish(c_.n_layer, c_.n_kv_head, sparse_so_far_, size_t(kv));
        stats_.prefill_seconds = stats_clock() - t0;
    }
}

void TpSession::plan_layer(int l, int64_t n) {
    const TpEngine::Layer& L = e_.layers[size_t(l)];
    const int H = c_.n_kv_head, hd = c_.head_dim;
    RouterDecision decision;
    if (spec_.needs_router()) {
        // The router pools the first and last `window` rows of the pre-RoPE keys of every head
        // (DESIGN.md §1.1): every rank projects those rows only (the whole prompt when it is short).
        int64_t rows = n;
        if (L.router) {
            const int64_t w = e_.router->window(), kvd = int64_t(H) * hd, D = c_.d_model;
            if (n <= 2 * w) {
                be_.matmul(*L.wk, h_, kr_, n);
            } else {
                be_.matmul(*L.wk, h_, kr_, w);
                be_.matmul(*L.wk, h_.at((n - w) * D), kr_.at(w * kvd), w);
                rows = 2 * w;
            }
            if (L.k_norm) be_.rms_norm(kr_, *L.k_norm, kr_, rows * H, hd, c_.rms_eps);
        }
        decision = route_layer(be_, L.router.get(), e_.router->window(), kr_, rows, H, hd, stats_);
        if (L.router) prob_fa_[size_t(l)] = decision.prob_fa;
    }
    LayerPlan& plan = plans_[size_t(l)];
    plan.mode = choose_modes(spec_, l, H, c_.n_layer, spec_.needs_router() ? &decision : nullptr, sparse_so_far_,
                             int64_t(l) * H);
    plan.xa.assign(size_t(H), BlockList{});
    for (HeadMode m : plan.mode) sparse_so_far_ += spec_.counts_as_sparse(m);
    // Every rank places the same costs the same way: the same owners everywhere.
    if (placement_ == Placement::Balanced) {
        const std::vector<double> cost = mode_costs(plan.mode, spec_.win, n);
        rank_of_[size_t(l)] = spread_over_layers(cost, place_balanced(cost, e_.ranks), placed_);
    } else {
        rank_of_[size_t(l)] = place_contiguous(H, e_.ranks);
    }
    caches_[size_t(l)].resize(size_t(H));
}

void TpSession::layer(int l, int64_t n, const int32_t* pos) {
    const TpEngine::Layer& L = e_.layers[size_t(l)];
    const int H = c_.n_kv_head, G = c_.n_head / c_.n_kv_head, hd = c_.head_dim;
    const int64_t D = c_.d_model;
    const bool prefill = pos_ == 0;
    be_.rms_norm(x_, *L.attn_norm, h_, n, D, c_.rms_eps);
    if (prefill) plan_layer(l, n);
    const HeadShape gs{G, 1, hd};  // one KV group at a time
    std::vector<double> pruned(size_t(H), 0.0);
    bool first = true;
    for (int g = 0; g < H; ++g) {
        if (rank_of_[size_t(l)][size_t(g)] != e_.rank) continue;
        const TpEngine::Group& W = L.groups[size_t(g)];
        project_qkv(be_, *W.wq, *W.wk, *W.wv, L.q_norm.get(), L.k_norm.get(), c_.rms_eps, h_, q_, k_, v_, n, gs);
        const double t0 = thread_seconds();
        if (prefill) {
            LayerPlan sub;
            sub.mode = {plans_[size_t(l)].mode[size_t(g)]};
            caches_[size_t(l)][size_t(g)] =
                prefill_attention(be_, *e_.inv_freq, q_, k_, v_, att_, n, pos, gs, sub, spec_, cap_, stats_);
            load_.prefill_seconds[size_t(l)] += thread_seconds() - t0;
            const bool xa = sub.mode[0] == HeadMode::XA;
            const double pairs = double(attended_pairs(sub.mode[0], spec_.win, xa ? &sub.xa[0] : nullptr, spec_.xa.block, n));
            load_.pairs[size_t(l)] += pairs;
            pruned[size_t(g)] = 1.0 - pairs / (double(n) * double(n + 1) / 2.0);
            if (xa) plans_[size_t(l)].xa[size_t(g)] = std::move(sub.xa[0]);
        } else {
            const std::vector<Backend::LayerCache*> caches(size_t(n), caches_[size_t(l)][size_t(g)].get());
            decode_attention(be_, *e_.inv_freq, q_, k_, v_, att_, n, pos, caches.data(), gs);
            load_.decode_seconds += thread_seconds() - t0;
        }
        be_.matmul(*W.wo, att_, first ? part_ : tmp_, n);  // this group's share of the output projection
        if (!first) be_.add(part_, tmp_, n * D);
        first = false;
    }
    if (first) {  // no head here (more ranks than heads): this rank adds nothing
        const std::vector<float> zeros(size_t(n * D), 0.0f);
        be_.upload(part_, zeros.data(), zeros.size());
    }
    if (prefill) {  // every rank records every head: the owners' pruned shares, gathered
        comm_.all_reduce_sum(pruned.data(), pruned.size());
        stats_.modes.push_back(plans_[size_t(l)].mode);
        stats_.prob_fa.push_back(prob_fa_[size_t(l)]);
        stats_.pruned.push_back(std::move(pruned));
    }
    comm_.all_reduce_sum(part_.f32(), size_t(n * D));  // the attention output, summed over ranks
    be_.add(x_, part_, n * D);
    ffn_rows(be_, *L.ffn_norm, *L.w_gate, *L.w_up, *L.w_down, c_.rms_eps, x_, h_, gate_, up_, n, D, chunk_,
             [&](Buf hr, int64_t m) { comm_.all_reduce_sum(hr.f32(), size_t(m * D)); });
}

LocalTensorParallel::LocalTensorParallel(const Model& model, const Router* router, int ranks, int64_t capacity,
                                         const AttentionSpec& spec, Placement placement, int threads_per_rank)
    : group_(ranks), threads_(std::max(1, threads_per_rank)), slices_(model, ranks) {
    for (int r = 0; r < ranks; ++r) {
        comms_.push_back(group_.rank(r));
        backends_.push_back(make_cpu_backend(0));  // 0: the OpenMP threads are set per rank thread
        engines_.push_back(std::make_unique<TpEngine>(model, slices_, r, *backends_.back(), router));
        sessions_.push_back(
            std::make_unique<TpSession>(*engines_.back(), *comms_.back(), capacity, spec, placement));
    }
}

LocalTensorParallel::~LocalTensorParallel() = default;

void LocalTensorParallel::forward(const int32_t* ids, int64_t n) {
    if (n <= 0) return;
    sessions_[0]->check(ids, n);  // a mistake is reported here, and the group stays usable
    std::mutex mu;
    std::exception_ptr first;  // the first failure; the others are its echo ("another rank ... failed")
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks(); ++r)
        threads.emplace_back([&, r] {
            try {
                omp_set_num_threads(threads_);  // this thread's OpenMP team size
                sessions_[size_t(r)]->forward(ids, n);
            } catch (...) {
                {
                    std::lock_guard<std::mutex> lk(mu);
                    if (!first) first = std::current_exception();
                }
                group_.abort();
            }
        });
    for (std::thread& t : threads) t.join();
    if (first) std::rethrow_exception(first);
}

}  // namespace elastic::dist
