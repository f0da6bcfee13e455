// The router-training loop (see trainer.h): optimizer, schedule, data order, checkpoints, logs.
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/quants.h"
#include "formats/safetensors.h"
#include "train/backward.h"
#include "train/router-init.h"

namespace elastic::train {

namespace {

using json = nlohmann::json;
const char* const kFormat = "elastic-router-trainer-1";

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + ".self_attn."; }

// The 10 tensors of a router layer in router_tensor_names order.
std::vector<std::vector<float>*> tensors(RouterLayer& r) {
    return {&r.fe0.w, &r.fe0.b, &r.fe2.w, &r.fe2.b, &r.rh0.w, &r.rh0.b, &r.rh2.w, &r.rh2.b, &r.rh4.w, &r.rh4.b};
}

std::vector<const std::vector<float>*> tensors(const RouterLayer& r) {
    return {&r.fe0.w, &r.fe0.b, &r.fe2.w, &r.fe2.b, &r.rh0.w, &r.rh0.b, &r.rh2.w, &r.rh2.b, &r.rh4.w, &r.rh4.b};
}

std::vector<float> zeros_like_vec(const std::vector<float>& v) { return std::vector<float>(v.size(), 0.0f); }

RouterLayer zeros_like(const RouterLayer& r) {
    RouterLayer z = r;
    for (std::vector<float>* t : tensors(z)) *t = zeros_like_vec(*t);
    return z;
}

std::string rng_text(const std::mt19937_64& g) {
    std::ostringstream s;
    s << g;
    return s.str();
}

std::mt19937_64 rng_from(const std::string& text) {
    std::mt19937_64 g;
    std::istringstream s(text);
    s >> g;
    if (s.fail()) fail("trainer checkpoint: bad generator state");
    return g;
}

// Fisher–Yates with our own index draw (std::shuffle's is implementation-defined).
void shuffle(std::vector<uint32_t>& v, std::mt19937_64& g) {
    for (size_t i = v.size(); i > 1; --i) {
        const size_t j = size_t(g() % i);
        std::swap(v[i - 1], v[j]);
    }
}

size_t next_sample(TrainState& st, size_t n) {
    if (st.pos >= int64_t(st.order.size())) {
        std::mt19937_64 g = rng_from(st.rng);
        st.order.resize(n);
        for (size_t i = 0; i < n; ++i) st.order[i] = uint32_t(i);
        shuffle(st.order, g);
        st.rng = rng_text(g);
        st.pos = 0;
        ++st.epoch;
    }
    return st.order[size_t(st.pos++)];
}

void write_layers(const std::string& path, const std::vector<RouterLayer>& layers,
                  const std::vector<std::pair<std::string, std::string>>& metadata, DType dtype = DType::F32) {
    ELASTIC_ASSERT(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16);
    SafetensorsWriter w;
    std::vector<std::vector<uint8_t>> keep;  // converted copies, alive until write()
    auto add = [&](const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
        if (dtype == DType::F32) {
            w.add_tensor(name, DType::F32, std::move(shape), v.data(), v.size() * sizeof(float));
            return;
        }
        keep.emplace_back(dtype_nbytes(dtype, int64_t(v.size())));
        quantize(dtype, v.data(), keep.back().data(), int64_t(v.size()));
        w.add_tensor(name, dtype, std::move(shape), keep.back().data(), keep.back().size());
    };
    for (const auto& kv : metadata) w.set_metadata(kv.first, kv.second);
    for (size_t l = 0; l < layers.size(); ++l) {
        const RouterLayer& r = layers[l];
        const std::vector<std::string> names = router_tensor_names(layer_prefix(int(l)));
        const RouterLinear* lin[5] = {&r.fe0, &r.fe2, &r.rh0, &r.rh2, &r.rh4};
        const std::vector<const std::vector<float>*> t = tensors(r);
        for (int i = 0; i < 5; ++i) {
            const std::vector<float>& wt = *t[size_t(2 * i)];
            const std::vector<float>& bt = *t[size_t(2 * i + 1)];
            add(names[size_t(2 * i)], {lin[i]->out, lin[i]->in}, wt);
            add(names[size_t(2 * i + 1)], {lin[i]->out}, bt);
        }
    }
    const std::string tmp = path + ".tmp";
    w.write(tmp);
    std::filesystem::rename(tmp, path);
}

std::vector<RouterLayer> read_layers(const std::string& path, int n_layer, int head_dim) {
    if (!std::filesystem::exists(path)) fail("trainer checkpoint: %s is missing", path.c_str());
    std::unique_ptr<SafetensorsFile> f = SafetensorsFile::open(path);
    std::vector<RouterLayer> layers;
    for (int l = 0; l < n_layer; ++l) layers.push_back(Router::layer_from_tensors(*f, layer_prefix(l), head_dim));
    return layers;
}

json pair_json(const double* v) { return json{{category_name(0), v[0]}, {category_name(1), v[1]}}; }

}  // namespace

std::string StepLog::json() const {
    nlohmann::json j;
    j["step"] = step;
    j["lm_loss"] = lm_loss;
    j["reg_loss"] = reg_loss;
    nlohmann::json om;
    for (int c = 0; c < kCategories; ++c)
        om[category_name(c)] = count[c] > 0 ? nlohmann::json(omega[c]) : nlohmann::json(nullptr);
    j["omega"] = om;
    j["target"] = pair_json(target);
    j["tau"] = tau;
    j["lambda1"] = pair_json(lambda1);
    j["lambda2"] = pair_json(lambda2);
    j["lr"] = lr;
    j["grad_norm"] = grad_norm;
    j["tokens"] = tokens;
    j["seconds"] = seconds;
    j["tokens_per_s"] = seconds > 0 ? double(tokens) / seconds : 0.0;
    return j.dump();
}

double temperature(const TrainerOptions& o, int64_t step) {
    if (!o.gumbel) return 1.0;
    const double span = std::max(1.0, o.tau_share * double(o.steps));
    const double f = std::min(1.0, double(step) / span);
    return o.tau_start + (o.tau_end - o.tau_start) * f;
}

std::vector<std::vector<float>> collect_router_inputs(const Engine& engine, const std::vector<TrainSample>& data, int n,
                                                      const StepOptions& o, const std::vector<RouterLayer>& routers,
                                                      const std::vector<std::vector<uint8_t>>* forced_full,
                                                      const std::vector<std::vector<uint8_t>>* forced_full_robust,
                                                      std::vector<int>* categories,
                                                      const std::function<void(int, int)>& on_sample) {
    if (n < 1 || data.empty()) fail("router inputs: %d samples of %zu", n, data.size());
    n = int(std::min<size_t>(size_t(n), data.size()));
    StepOptions so = o;
    so.soft_forward = false;
    so.noise_key = 0;
    so.tau = 1.0f;
    std::vector<std::vector<float>> pooled;
    so.pooled = &pooled;
    if (categories) categories->clear();
    for (int i = 0; i < n; ++i) {
        const TrainSample& s = data[size_t(i) * data.size() / size_t(n)];
        so.forced_full = forced_full_robust && s.category == kRobust ? forced_full_robust : forced_full;
        train_loss(engine, routers, s, 0.0, 0.0, 0.0, so);
        if (categories) categories->push_back(s.category);
        if (on_sample) on_sample(i + 1, n);
    }
    ELASTIC_ASSERT(pooled.size() == routers.size());
    return pooled;
}

std::vector<double> standardize_routers(const std::vector<std::vector<float>>& inputs, std::vector<RouterLayer>& routers) {
    ELASTIC_ASSERT(inputs.size() == routers.size());
    std::vector<double> norms;
    for (size_t l = 0; l < routers.size(); ++l) {
        const size_t d = size_t(routers[l].fe0.in);
        ELASTIC_ASSERT(d > 0 && inputs[l].size() % d == 0);
        norms.push_back(router_standardize_input(routers[l], inputs[l].data(), inputs[l].size() / d));
    }
    return norms;
}

PlanFit fit_routers_to_plan(const std::vector<std::vector<float>>& inputs, const std::vector<std::vector<uint8_t>>& full,
                            double p_fa, int iters, double lr, std::vector<RouterLayer>& routers) {
    ELASTIC_ASSERT(!inputs.empty() && !full.empty() && !full[0].empty() && inputs[0].size() % full[0].size() == 0);
    const size_t row = full[0].size() * size_t(routers.empty() ? 1 : routers[0].fe0.in);
    ELASTIC_ASSERT(row > 0 && inputs[0].size() % row == 0);
    return fit_routers_to_plans(inputs, {&full}, std::vector<int>(inputs[0].size() / row, 0), p_fa, iters, lr, routers);
}

PlanFit fit_routers_to_plans(const std::vector<std::vector<float>>& inputs,
                             const std::vector<const std::vector<std::vector<uint8_t>>*>& plans,
                             const std::vector<int>& plan_of, double p_fa, int iters, double lr,
                             std::vector<RouterLayer>& routers) {
    if (plans.empty()) fail("router fit: no plan");
    if (!(p_fa > 0.5 && p_fa < 1.0)) fail("router fit: the target probability must be in (0.5, 1), not %g", p_fa);
    std::vector<std::vector<std::vector<float>>> t;
    for (const auto* p : plans) {
        ELASTIC_ASSERT(p);
        std::vector<std::vector<float>> tp;
        for (const auto& layer : *p) {
            std::vector<float> row;
            for (uint8_t f : layer) row.push_back(float(f ? p_fa : 1.0 - p_fa));
            tp.push_back(std::move(row));
        }
        t.push_back(std::move(tp));
    }
    std::vector<const std::vector<std::vector<float>>*> tptr;
    for (const auto& x : t) tptr.push_back(&x);
    return fit_routers_to_targets(inputs, tptr, plan_of, iters, lr, routers);
}

std::vector<std::vector<float>> graded_static_targets(const std::vector<std::vector<float>>& scores,
                                                      const std::vector<std::vector<uint8_t>>& plan, double temp) {
    if (!(temp > 0)) fail("router fit: the ranking temperature must be positive, not %g", temp);
    if (scores.size() != plan.size()) fail("router fit: %zu layers of head scores for %zu of plan", scores.size(), plan.size());
    std::vector<std::pair<int, int>> heads;  // (layer, head)
    int k = 0;
    for (size_t l = 0; l < plan.size(); ++l) {
        if (scores[l].size() != plan[l].size())
            fail("router fit: layer %zu has %zu head scores for %zu heads", l, scores[l].size(), plan[l].size());
        for (size_t h = 0; h < plan[l].size(); ++h) {
            heads.emplace_back(int(l), int(h));
            k += plan[l][h] != 0;
        }
    }
    std::stable_sort(heads.begin(), heads.end(), [&](const auto& a, const auto& b) {
        return scores[size_t(a.first)][size_t(a.second)] > scores[size_t(b.first)][size_t(b.second)];
    });
    const double n = double(heads.size());
    std::vector<std::vector<float>> t(plan.size());
    for (size_t l = 0; l < plan.size(); ++l) t[l].assign(plan[l].size(), 0.5f);
    for (size_t rank = 0; rank < heads.size(); ++rank) {
        const auto [l, h] = heads[rank];
        double p = 1.0 / (1.0 + std::exp(-(double(k) - 0.5 - double(rank)) / (temp * n)));
        const bool fa = plan[size_t(l)][size_t(h)] != 0;
        if ((p > 0.5) != fa) p = fa ? 0.55 : 0.45;
        t[size_t(l)][size_t(h)] = float(p);
    }
    return t;
}

PlanFit fit_routers_to_targets(const std::vector<std::vector<float>>& inputs,
                               const std::vector<const std::vector<std::vector<float>>*>& plans,
                               const std::vector<int>& plan_of, int iters, double lr, std::vector<RouterLayer>& routers) {
    if (plans.empty()) fail("router fit: no plan");
    for (const auto* p : plans) ELASTIC_ASSERT(p && p->size() == routers.size());
    for (int k : plan_of)
        if (k < 0 || size_t(k) >= plans.size()) fail("router fit: sample plan %d of %zu", k, plans.size());
    ELASTIC_ASSERT(inputs.size() == routers.size());
    for (const auto* p : plans)
        for (const auto& layer : *p)
            for (float t : layer)
                if (!(t > 0 && t < 1)) fail("router fit: a target probability must be in (0, 1), not %g", double(t));
    if (iters < 1 || !(lr > 0)) fail("router fit: %d iterations at learning rate %g", iters, lr);
    for (size_t l = 0; l < routers.size(); ++l)
        if (!routers[l].use_softmax()) fail("router fit: layer %zu is a sigmoid-variant router (softmax only)", l);
    // Layers are independent: one thread each (OpenMP), sums per layer, folded in layer order.
    const int L = int(routers.size());
    // Per layer: the squared error, and per plan the agreeing decisions and the decisions; per layer
    // and iteration the same with the sparse decisions, for the curve (folded in layer order below).
    const size_t K = plans.size(), P = 3 * K + 1;  // per iteration: mse, then agree / sparse / rows per plan
    std::vector<double> mse_l(size_t(L), 0.0);
    std::vector<double> agree_lk(size_t(L) * K, 0.0), rows_lk(size_t(L) * K, 0.0);
    std::vector<double> curve_l(size_t(L) * size_t(iters + 1) * P, 0.0);
#pragma omp parallel for schedule(dynamic, 1)
    for (int li = 0; li < L; ++li) {
        const size_t l = size_t(li);
        RouterLayer& r = routers[l];
        const int d = r.fe0.in, H = int((*plans[0])[l].size());
        const size_t row = size_t(H) * size_t(d);
        ELASTIC_ASSERT(H > 0 && inputs[l].size() % row == 0);
        const size_t n = inputs[l].size() / row;  // samples; each is one "sequence" of H pooled rows
        ELASTIC_ASSERT(plan_of.size() == n);
        for (const auto* p : plans) ELASTIC_ASSERT((*p)[l].size() == size_t(H));
        RouterLayer m = router_zero_grads(r), v = router_zero_grads(r);
        const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
        std::vector<float> dz(static_cast<size_t>(H));
        for (int it = 1; it <= iters + 1; ++it) {
            RouterLayer g = router_zero_grads(r);
            double mse = 0;
            std::vector<int64_t> agree_k(K, 0), sparse_k(K, 0), rows_k(K, 0);
            for (size_t s = 0; s < n; ++s) {
                // A one-row "sequence" pools to itself: the router's input is the stored row.
                const RouterActs a = router_forward(r, inputs[l].data() + s * row, 1, H, d, Router::kDefaultWindow);
                const std::vector<float>& target = (*plans[size_t(plan_of[s])])[l];
                for (int h = 0; h < H; ++h) {
                    const double e = double(a.soft[size_t(h)]) - double(target[size_t(h)]);
                    mse += e * e;
                    const bool ok = (a.z[size_t(h)] > 0.5f) == (target[size_t(h)] > 0.5f);
                    agree_k[size_t(plan_of[s])] += ok;
                    sparse_k[size_t(plan_of[s])] += a.z[size_t(h)] <= 0.5f;
                    rows_k[size_t(plan_of[s])] += 1;
                    dz[size_t(h)] = float(2.0 * e / double(n * size_t(H)));
                }
                if (it <= iters) router_backward(r, a, dz.data(), g, nullptr);
            }
            double* c = curve_l.data() + (l * size_t(iters + 1) + size_t(it - 1)) * P;
            c[0] = mse;
            for (size_t k = 0; k < K; ++k) {
                c[1 + 3 * k] = double(agree_k[k]);
                c[2 + 3 * k] = double(sparse_k[k]);
                c[3 + 3 * k] = double(rows_k[k]);
            }
            if (it > iters) {  // the last pass only measures
                mse_l[l] = mse;
                for (size_t k = 0; k < plans.size(); ++k) {
                    agree_lk[l * plans.size() + k] = double(agree_k[k]);
                    rows_lk[l * plans.size() + k] = double(rows_k[k]);
                }
                break;
            }
            auto mt = tensors(m), vt = tensors(v), gt = tensors(g), pt = tensors(r);
            const double c1 = 1.0 - std::pow(b1, it), c2 = 1.0 - std::pow(b2, it);
            for (size_t t = 0; t < pt.size(); ++t)
                for (size_t i = 0; i < pt[t]->size(); ++i) {
                    const double gi = (*gt[t])[i];
                    (*mt[t])[i] = float(b1 * (*mt[t])[i] + (1 - b1) * gi);
                    (*vt[t])[i] = float(b2 * (*vt[t])[i] + (1 - b2) * gi * gi);
                    (*pt[t])[i] -= float(lr * ((*mt[t])[i] / c1) / (std::sqrt((*vt[t])[i] / c2) + eps));
                }
        }
    }
    PlanFit fit;
    double agree = 0, rows = 0;
    for (int l = 0; l < L; ++l) fit.mse += mse_l[size_t(l)];
    for (size_t k = 0; k < plans.size(); ++k) {
        double a = 0, r = 0;
        for (int l = 0; l < L; ++l) a += agree_lk[size_t(l) * plans.size() + k], r += rows_lk[size_t(l) * plans.size() + k];
        fit.plan_agreement.push_back(r > 0 ? a / r : 0.0);
        agree += a;
        rows += r;
    }
    fit.mse /= std::max(1.0, rows);
    fit.agreement = agree / std::max(1.0, rows);
    for (const auto* p : plans) {
        double below = 0, all = 0;
        for (const auto& layer : *p)
            for (float t : layer) below += t < 0.5f, all += 1;
        fit.plan_omega.push_back(below / std::max(1.0, all));
    }
    for (int it = 0; it <= iters; ++it) {
        std::vector<double> sum(P, 0.0);
        for (int l = 0; l < L; ++l)
            for (size_t i = 0; i < P; ++i) sum[i] += curve_l[(size_t(l) * size_t(iters + 1) + size_t(it)) * P + i];
        PlanFitPoint pt;
        pt.iter = it;
        double all_rows = 0;
        for (size_t k = 0; k < K; ++k) {
            const double r = std::max(1.0, sum[3 + 3 * k]);
            pt.agreement.push_back(sum[1 + 3 * k] / r);
            pt.omega.push_back(sum[2 + 3 * k] / r);
            all_rows += sum[3 + 3 * k];
        }
        pt.mse = sum[0] / std::max(1.0, all_rows);
        fit.curve.push_back(std::move(pt));
    }
    return fit;
}

TrainState init_state(std::vector<RouterLayer> routers, const TrainerOptions& o, size_t n_samples) {
    if (n_samples == 0) fail("training: no samples");
    TrainState st;
    st.routers = std::move(routers);
    for (const RouterLayer& r : st.routers) {
        st.adam_m.push_back(zeros_like(r));
        st.adam_v.push_back(zeros_like(r));
    }
    for (int c = 0; c < kCategories; ++c) st.lambda1[c] = st.lambda2[c] = o.lambda_init;
    st.rng = rng_text(std::mt19937_64(o.seed));
    st.pos = 0;
    st.epoch = -1;  // next_sample shuffles epoch 0 first
    return st;
}

double learning_rate(const TrainerOptions& o, int64_t step) {
    const int64_t warm = int64_t(std::ceil(o.warmup * double(o.steps)));
    if (step < warm) return o.lr * double(step + 1) / double(warm);
    const int64_t rest = std::max<int64_t>(1, o.steps - warm);
    const double p = std::min(1.0, double(step - warm) / double(rest));
    return 0.5 * o.lr * (1.0 + std::cos(M_PI * p));
}

StepLog train_step_batch(const Engine& engine, const std::vector<TrainSample>& data, const TrainerOptions& o,
                         TrainState& st) {
    const auto t0 = std::chrono::steady_clock::now();
    ELASTIC_ASSERT(o.batch >= 1 && !data.empty());
    std::vector<RouterLayer> grads;
    for (const RouterLayer& r : st.routers) grads.push_back(router_zero_grads(r));
    StepLog log;
    for (int c = 0; c < kCategories; ++c) log.target[c] = o.target[c];
    StepOptions so = o.step;
    so.tau = float(temperature(o, st.step));
    log.tau = so.tau;
    // Per batch slot: what the step reports (filled by the slot's rank, summed over ranks, then
    // folded in slot order, so the log is the same for any number of ranks).
    enum { kLm, kReg, kOmega, kCat, kTokens, kDl1, kDl2, kSlotFields };
    const int ranks = o.comm ? o.comm->size() : 1, me = o.comm ? o.comm->rank() : 0;
    std::vector<double> slot(size_t(o.batch) * kSlotFields, 0.0);
    for (int b = 0; b < o.batch; ++b) {
        const TrainSample& s = data[next_sample(st, data.size())];  // every rank walks the same order
        if (b % ranks != me) continue;
        const int c = s.category;
        // Noise keyed by (seed, step, slot in the batch): never 0, reproducible across a resume.
        so.noise_key = o.gumbel ? (o.seed * 0x9E3779B97F4A7C15ull) ^ (uint64_t(st.step) << 20) ^ uint64_t(b) ^ 1ull : 0;
        if (o.gumbel && so.noise_key == 0) so.noise_key = 1;
        const StepResult r = train_step(engine, st.routers, s, st.lambda1[c], st.lambda2[c], o.target[c], so, grads);
        double* v = slot.data() + size_t(b) * kSlotFields;
        v[kLm] = r.lm_loss;
        v[kReg] = r.reg_loss;
        v[kOmega] = r.omega;
        v[kCat] = c;
        v[kTokens] = double(s.tokens.size());
        v[kDl1] = r.dlambda1;
        v[kDl2] = r.dlambda2;
    }
    if (ranks > 1) {
        o.comm->all_reduce_sum(slot.data(), slot.size());
        std::vector<double> flat;
        for (RouterLayer& g : grads)
            for (std::vector<float>* t : tensors(g)) flat.insert(flat.end(), t->begin(), t->end());
        o.comm->all_reduce_sum(flat.data(), flat.size());
        size_t k = 0;
        for (RouterLayer& g : grads)
            for (std::vector<float>* t : tensors(g))
                for (float& x : *t) x = float(flat[k++]);
    }
    double dl1[kCategories] = {0, 0}, dl2[kCategories] = {0, 0};
    for (int b = 0; b < o.batch; ++b) {
        const double* v = slot.data() + size_t(b) * kSlotFields;
        const int c = int(v[kCat]);
        log.lm_loss += v[kLm] / o.batch;
        log.reg_loss += v[kReg] / o.batch;
        log.omega[c] += v[kOmega];
        st.last_omega[c] = v[kOmega];
        log.count[c] += 1;
        log.tokens += int64_t(v[kTokens]);
        dl1[c] += v[kDl1] / o.batch;
        dl2[c] += v[kDl2] / o.batch;
    }
    for (int c = 0; c < kCategories; ++c)
        if (log.count[c] > 0) log.omega[c] /= log.count[c];
    // Average, clip by the global norm.
    double sq = 0;
    for (RouterLayer& g : grads)
        for (std::vector<float>* t : tensors(g))
            for (float& x : *t) {
                x /= float(o.batch);
                sq += double(x) * double(x);
            }
    log.grad_norm = std::sqrt(sq);
    const float clip = (o.clip > 0 && log.grad_norm > o.clip) ? float(o.clip / log.grad_norm) : 1.0f;
    // AdamW (decoupled weight decay).
    log.lr = learning_rate(o, st.step);
    const double t = double(st.step + 1);
    const double bc1 = 1.0 - std::pow(o.beta1, t), bc2 = 1.0 - std::pow(o.beta2, t);
    for (size_t l = 0; l < st.routers.size(); ++l) {
        const std::vector<std::vector<float>*> P = tensors(st.routers[l]), G = tensors(grads[l]),
                                               M = tensors(st.adam_m[l]), V = tensors(st.adam_v[l]);
        for (size_t i = 0; i < P.size(); ++i)
            for (size_t e = 0; e < P[i]->size(); ++e) {
                const double g = double((*G[i])[e] * clip);
                double m = (*M[i])[e], v = (*V[i])[e], p = (*P[i])[e];
                m = o.beta1 * m + (1.0 - o.beta1) * g;
                v = o.beta2 * v + (1.0 - o.beta2) * g * g;
                p -= log.lr * ((m / bc1) / (std::sqrt(v / bc2) + o.adam_eps) + o.weight_decay * p);
                (*M[i])[e] = float(m);
                (*V[i])[e] = float(v);
                (*P[i])[e] = float(p);
            }
    }
    // Gradient ascent on λ (kept >= 0).
    for (int c = 0; c < kCategories; ++c) {
        st.lambda1[c] = std::max(0.0, st.lambda1[c] + o.lambda_lr * dl1[c]);
        st.lambda2[c] = std::max(0.0, st.lambda2[c] + o.lambda_lr * dl2[c]);
        log.lambda1[c] = st.lambda1[c];
        log.lambda2[c] = st.lambda2[c];
    }
    ++st.step;
    log.step = st.step;
    log.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return log;
}

void save_checkpoint(const std::string& dir, const TrainState& st, const TrainerOptions& o) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail("trainer: cannot create checkpoint directory %s: %s", dir.c_str(), ec.message().c_str());
    write_layers(dir + "/router.safetensors", st.routers, {{"step", std::to_string(st.step)}});
    write_layers(dir + "/adam-m.safetensors", st.adam_m, {});
    write_layers(dir + "/adam-v.safetensors", st.adam_v, {});
    json j;
    j["format"] = kFormat;
    j["step"] = st.step;
    j["steps"] = o.steps;
    j["config"] = train_config_name(o.step.config);
    j["lambda1"] = {st.lambda1[0], st.lambda1[1]};
    j["lambda2"] = {st.lambda2[0], st.lambda2[1]};
    j["order"] = st.order;
    j["pos"] = st.pos;
    j["epoch"] = st.epoch;
    j["rng"] = st.rng;
    j["last_omega"] = {st.last_omega[0], st.last_omega[1]};
    j["seed"] = o.seed;
    j["batch"] = o.batch;
    j["lr"] = o.lr;
    j["lambda_lr"] = o.lambda_lr;
    j["target"] = {o.target[0], o.target[1]};
    j["gumbel"] = o.gumbel;
    j["standardize"] = st.standardize;
    j["fit"] = st.fit;
    if (o.gumbel) j["tau"] = {o.tau_start, o.tau_end, o.tau_share};
    const std::string path = dir + "/state.json", tmp = path + ".tmp";
    {
        std::ofstream f(tmp);
        f << j.dump(1) << "\n";
        if (!f) fail("trainer: cannot write %s", tmp.c_str());
    }
    std::filesystem::rename(tmp, path);
}

TrainState load_checkpoint(const std::string& dir, int n_layer, int head_dim, size_t n_samples) {
    const std::string path = dir + "/state.json";
    std::ifstream f(path);
    if (!f) fail("trainer checkpoint: cannot read %s", path.c_str());
    json j;
    try {
        f >> j;
        if (j.at("format").get<std::string>() != kFormat) fail("trainer checkpoint: %s is not a %s file", path.c_str(), kFormat);
        TrainState st;
        st.step = j.at("step").get<int64_t>();
        st.schedule_steps = j.at("steps").get<int64_t>();
        for (int c = 0; c < kCategories; ++c) {
            st.lambda1[c] = j.at("lambda1").at(size_t(c)).get<double>();
            st.lambda2[c] = j.at("lambda2").at(size_t(c)).get<double>();
        }
        st.order = j.at("order").get<std::vector<uint32_t>>();
        st.pos = j.at("pos").get<int64_t>();
        st.epoch = j.at("epoch").get<int64_t>();
        st.rng = j.at("rng").get<std::string>();
        for (int c = 0; c < kCategories; ++c) st.last_omega[c] = j.at("last_omega").at(size_t(c)).get<double>();
        st.standardize = j.value("standardize", 0);  // absent before 2026-12-03
        st.fit = j.value("fit", std::string());
        if (!st.order.empty() && st.order.size() != n_samples)
            fail("trainer checkpoint: %s was made for %zu samples, the data has %zu", path.c_str(), st.order.size(),
                 n_samples);
        st.routers = read_layers(dir + "/router.safetensors", n_layer, head_dim);
        st.adam_m = read_layers(dir + "/adam-m.safetensors", n_layer, head_dim);
        st.adam_v = read_layers(dir + "/adam-v.safetensors", n_layer, head_dim);
        return st;
    } catch (const json::exception& e) {
        fail("trainer checkpoint: %s: %s", path.c_str(), e.what());
    }
}

StepLog train_loop(const Engine& engine, const std::vector<TrainSample>& data, const TrainerOptions& o,
                   const LoopOptions& lo, TrainState& st) {
    const int64_t end = lo.stop_at >= 0 ? std::min(lo.stop_at, o.steps) : o.steps;
    std::ofstream logf;
    if (!lo.log_path.empty()) {
        logf.open(lo.log_path, std::ios::app);
        if (!logf) fail("trainer: cannot open log %s", lo.log_path.c_str());
    }
    StepLog last;
    while (st.step < end) {
        last = train_step_batch(engine, data, o, st);
        if (lo.on_step) lo.on_step(last);
        if (logf.is_open()) logf << last.json() << "\n" << std::flush;
        if (lo.progress)
            std::fprintf(stderr, "\rstep %lld/%lld  lm %.4f  reg %.4f  Ω s %.3f r %.3f  lr %.2e  %.0f tok/s   ",
                         (long long)last.step, (long long)o.steps, last.lm_loss, last.reg_loss, last.omega[0],
                         last.omega[1], last.lr, last.seconds > 0 ? double(last.tokens) / last.seconds : 0.0);
        if (!lo.checkpoint_dir.empty() && lo.checkpoint_every > 0 && st.step % lo.checkpoint_every == 0)
            save_checkpoint(lo.checkpoint_dir, st, o);
    }
    if (lo.progress) std::fprintf(stderr, "\n");
    if (!lo.checkpoint_dir.empty()) save_checkpoint(lo.checkpoint_dir, st, o);
    return last;
}

void write_trained_router(const std::string& path, const std::vector<RouterLayer>& routers,
                          const std::vector<std::pair<std::string, std::string>>& metadata, DType dtype) {
    write_layers(path, routers, metadata, dtype);
}

}  // namespace elastic::train
