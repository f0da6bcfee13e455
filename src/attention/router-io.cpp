// Router weights in and out: loading from a released checkpoint (next to the backbone, possibly
// sharded) or a separate safetensors file, writing them back, and routers with a known decision.
// Stored F32/F16/BF16 become fp32 at load (0.27 M parameters per layer at d = 128: ~1 MB).
#include <cmath>
#include <functional>

#include "attention/router.h"
#include "core/error.h"
#include "formats/quants.h"
#include "formats/safetensors.h"

namespace elastic {

namespace {

const char* const kParts[5] = {"cls_feat_extractor.0", "cls_feat_extractor.2", "cls_router_head_agnostic.0",
                               "cls_router_head_agnostic.2", "cls_router_head_agnostic.4"};

using Finder = std::function<const TensorRef*(const std::string&)>;

const TensorRef& need(const Finder& find, const std::string& name, const std::string& where) {
    const TensorRef* t = find(name);
    if (!t) fail("router: tensor %s not found in %s", name.c_str(), where.c_str());
    if (t->type != DType::F32 && t->type != DType::F16 && t->type != DType::BF16)
        fail("router: tensor %s in %s has type %s; expected F32, F16 or BF16", name.c_str(), where.c_str(),
             dtype_name(t->type));
    if (dtype_nbytes(t->type, t->numel()) != t->nbytes)
        fail("router: tensor %s in %s: size does not match its shape", name.c_str(), where.c_str());
    return *t;
}

std::vector<float> to_f32(const TensorRef& t) {
    std::vector<float> v(size_t(t.numel()));
    if (!v.empty()) dequantize(t.type, t.data, v.data(), t.numel());
    return v;
}

// One Linear: weight [out, in] with in == `in` (or anything when in <= 0), bias [out].
RouterLinear load_linear(const Finder& find, const std::string& base, int in, const std::string& where) {
    const TensorRef& w = need(find, base + ".weight", where);
    const TensorRef& b = need(find, base + ".bias", where);
    if (w.shape.size() != 2 || w.shape[0] < 1 || w.shape[1] < 1 || (in > 0 && w.shape[1] != in))
        fail("router: tensor %s in %s has shape %s; expected [out, %d]", w.name.c_str(), where.c_str(),
             w.shape_str().c_str(), in);
    if (b.shape.size() != 1 || b.shape[0] != w.shape[0])
        fail("router: tensor %s in %s has shape %s; expected [%lld]", b.name.c_str(), where.c_str(),
             b.shape_str().c_str(), (long long)w.shape[0]);
    RouterLinear L;
    L.out = int(w.shape[0]);
    L.in = int(w.shape[1]);
    L.w = to_f32(w);
    L.b = to_f32(b);
    return L;
}

RouterLayer load_layer(const Finder& find, const std::string& prefix, int head_dim, const std::string& where) {
    const std::string base = prefix + "mask_allocator.";
    RouterLayer r;
    if (head_dim > 0) {
        const TensorRef& w0 = need(find, base + kParts[0] + ".weight", where);
        if (w0.shape.size() == 2 && w0.shape[1] != head_dim)
            fail("router: tensor %s in %s has shape %s: its input width %lld is not the model's head_dim %d",
                 w0.name.c_str(), where.c_str(), w0.shape_str().c_str(), (long long)w0.shape[1], head_dim);
    }
    r.fe0 = load_linear(find, base + kParts[0], head_dim, where);
    r.fe2 = load_linear(find, base + kParts[1], r.fe0.out, where);
    r.rh0 = load_linear(find, base + kParts[2], r.fe2.out, where);
    r.rh2 = load_linear(find, base + kParts[3], r.rh0.out, where);
    r.rh4 = load_linear(find, base + kParts[4], r.rh2.out, where);
    r.validate("router " + prefix + " in " + where);
    return r;
}

std::string layer_prefix(const std::string& pattern, int l) {
    std::string p = pattern;
    const size_t at = p.find("{l}");
    if (at != std::string::npos) p.replace(at, 3, std::to_string(l));
    return p;
}

void add_f(SafetensorsWriter& w, const std::string& name, const std::vector<int64_t>& shape,
           const std::vector<float>& v, DType t) {
    if (t == DType::F32) {
        w.add_tensor(name, t, shape, v.data(), v.size() * sizeof(v[0]));
        return;
    }
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = t == DType::F16 ? f32_to_fp16(v[i]) : f32_to_bf16(v[i]);
    w.add_tensor(name, t, shape, h.data(), h.size() * sizeof(h[0]));
}

RouterLinear make_linear(int in, int out) {
    RouterLinear L;
    L.in = in;
    L.out = out;
    L.w.assign(size_t(in) * out, 0.0f);
    L.b.assign(size_t(out), 0.0f);
    return L;
}

}  // namespace

std::vector<std::string> router_tensor_names(const std::string& prefix) {
    std::vector<std::string> names;
    for (const char* p : kParts)
        for (const char* s : {".weight", ".bias"}) names.push_back(prefix + "mask_allocator." + p + s);
    return names;
}

RouterLayer Router::layer_from_tensors(const SafetensorsFile& f, const std::string& prefix, int head_dim) {
    return load_layer([&](const std::string& n) { return f.find_tensor(n); }, prefix, head_dim, "safetensors file");
}

Router Router::from_tensors(const SafetensorsFile& f, const std::string& prefix, int head_dim) {
    return Router({layer_from_tensors(f, prefix, head_dim)});
}

Router Router::load(const std::string& path, int n_layer, int head_dim) {
    if (n_layer < 1 || head_dim < 1) fail("router: bad model shape (%d layers, head_dim %d)", n_layer, head_dim);
    std::unique_ptr<SafetensorsCheckpoint> ck = SafetensorsCheckpoint::open(path);
    const Finder find = [&](const std::string& n) { return ck->find_tensor(n); };
    const std::string pattern = "model.layers.{l}.self_attn.";
    // A router for a layer the model lacks means the router was trained for another model.
    if (find(router_tensor_names(layer_prefix(pattern, n_layer))[0]))
        fail("router: %s holds a router for layer %d but the model has %d layers", path.c_str(), n_layer, n_layer);
    std::vector<RouterLayer> layers;
    layers.reserve(size_t(n_layer));
    for (int l = 0; l < n_layer; ++l) layers.push_back(load_layer(find, layer_prefix(pattern, l), head_dim, path));
    return Router(std::move(layers));
}

void write_router_safetensors(const std::string& path, const std::vector<RouterLayer>& layers,
                              const std::string& prefix_pattern, DType dtype, size_t max_shard_bytes) {
    if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
        fail("router: cannot write router weights as %s", dtype_name(dtype));
    SafetensorsWriter w;
    for (size_t l = 0; l < layers.size(); ++l) {
        const RouterLayer& r = layers[l];
        if (r.fe0.in <= 0) continue;
        r.validate(strprintf("router layer %zu", l));
        const std::vector<std::string> names = router_tensor_names(layer_prefix(prefix_pattern, int(l)));
        const RouterLinear* lin[5] = {&r.fe0, &r.fe2, &r.rh0, &r.rh2, &r.rh4};
        for (int i = 0; i < 5; ++i) {
            add_f(w, names[size_t(2 * i)], {lin[i]->out, lin[i]->in}, lin[i]->w, dtype);
            add_f(w, names[size_t(2 * i + 1)], {lin[i]->out}, lin[i]->b, dtype);
        }
    }
    if (max_shard_bytes > 0)
        w.write_sharded(path, max_shard_bytes);
    else
        w.write(path);
}

RouterLayer router_layer_constant(int head_dim, bool full) {
    const int d = head_dim;
    RouterLayer r{make_linear(d, 4 * d), make_linear(4 * d, d), make_linear(d, 4 * d), make_linear(4 * d, d),
                  make_linear(d, 2)};
    r.rh4.b = full ? std::vector<float>{0.0f, 1.0f} : std::vector<float>{1.0f, 0.0f};
    return r;
}

// Only channel 0 of every hidden layer carries a signal: u = x_c - threshold + 8 goes through
// three SiLUs and is compared with SiLU^3(8). SiLU is increasing on [-1.28, inf) and negative
// below 0, so logit1 - logit0 > 0 exactly when x_c > threshold (up to fp32 rounding at the edge).
RouterLayer router_layer_threshold(int head_dim, int channel, float threshold) {
    ELASTIC_ASSERT(channel >= 0 && channel < head_dim);
    const int d = head_dim;
    RouterLayer r{make_linear(d, 4 * d), make_linear(4 * d, d), make_linear(d, 4 * d), make_linear(4 * d, d),
                  make_linear(d, 2)};
    const float offset = 8.0f;
    r.fe0.w[size_t(channel)] = 1.0f;  // fe0 row 0 picks x_c
    r.fe0.b[0] = offset - threshold;
    r.fe2.w[0] = 1.0f;  // each later layer passes channel 0 on
    r.rh0.w[0] = 1.0f;
    r.rh2.w[0] = 1.0f;
    auto silu = [](float x) { return x / (1.0f + std::exp(-x)); };
    r.rh4.w[size_t(d)] = 1.0f;  // logit1 = h[0] - SiLU^3(offset); logit0 = 0
    r.rh4.b[1] = -silu(silu(silu(offset)));
    return r;
}

}  // namespace elastic
