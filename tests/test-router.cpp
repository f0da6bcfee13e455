// The router (src/attention/router.h): the reference module's outputs on three fixture cases
// (pooled task feature and logits to 1e-4 of the tensor's max magnitude, decisions exactly),
// boundary pooling against a naive Python-slice reimplementation, the sigmoid variant on
// hand-built weights, routers with a known decision, loading from checkpoint-style directories
// (single, sharded) and separate files in F32/F16/BF16, and the errors of bad files.
// Also prints the time of route() (informational; no assertion).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "attention/router.h"
#include "core/error.h"
#include "formats/quants.h"
#include "formats/safetensors.h"
#include "test-helpers.h"

using namespace elastic;
namespace fs = std::filesystem;

namespace {

const std::string kFixture = std::string(ELASTIC_SOURCE_DIR) + "/../shared/fixtures/router/router_reference.safetensors";

struct TmpDir {
    std::string path;
    TmpDir() {
        std::string tmpl = (fs::temp_directory_path() / "elastic-router-XXXXXX").string();
        EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
        path = tmpl;
    }
    ~TmpDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string operator/(const std::string& name) const { return (fs::path(path) / name).string(); }
};

void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
    try {
        f();
        ADD_FAILURE() << "no error thrown; expected one mentioning " << needles[0];
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
        for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    }
}

std::vector<float> tensor_f32(const SafetensorsFile& f, const std::string& name) {
    const TensorRef* t = f.find_tensor(name);
    EXPECT_NE(t, nullptr) << name;
    if (!t) return {};
    std::vector<float> v(size_t(t->numel()));
    dequantize(t->type, t->data, v.data(), t->numel());
    return v;
}

// Relative error against the reference's max magnitude, with the worst element in the message.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what,
                  double* err_out = nullptr) {
    ASSERT_EQ(got.size(), want.size()) << what;
    size_t wi = 0;
    const double e = test::max_rel_err(got, want, &wi);
    if (err_out) *err_out = e;
    EXPECT_LE(e, tol) << what << ": worst element " << wi << " got " << got[wi] << " want " << want[wi];
}

RouterLinear rand_linear(int in, int out, std::mt19937_64& rng) {
    RouterLinear L;
    L.in = in;
    L.out = out;
    const float s = 1.0f / std::sqrt(float(in));  // nn.Linear's init scale
    L.w = test::randn(size_t(in) * out, rng, s);
    L.b = test::randn(size_t(out), rng, s);
    return L;
}

RouterLayer rand_layer(int d, std::mt19937_64& rng, int n_out = 2) {
    return RouterLayer{rand_linear(d, 4 * d, rng), rand_linear(4 * d, d, rng), rand_linear(d, 4 * d, rng),
                       rand_linear(4 * d, d, rng), rand_linear(d, n_out, rng)};
}

// Python: torch.cat([k[:w], k[-w:]]).mean(0), written the slow obvious way.
std::vector<float> naive_pool(const std::vector<float>& k, int64_t T, int H, int d, int w) {
    std::vector<int64_t> rows;
    for (int64_t t = 0; t < std::min<int64_t>(w, T); ++t) rows.push_back(t);                     // k[:w]
    const int64_t start = T - std::min<int64_t>(w, T);                                          // -w clamps to -T
    for (int64_t t = start; t < T; ++t) rows.push_back(t);                                      // k[-w:]
    std::vector<float> out(size_t(H) * d);
    for (size_t i = 0; i < out.size(); ++i) {
        double s = 0;
        for (int64_t t : rows) s += k[size_t(t) * H * d + i];
        out[i] = float(s / double(rows.size()));
    }
    return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reference module outputs.

TEST(RouterFixture, MatchesReference) {
    ASSERT_TRUE(test::file_exists(kFixture)) << kFixture;
    auto f = SafetensorsFile::open(kFixture);
    struct Case { const char* name; int d, H; int64_t T; };
    for (const Case& c : {Case{"d64_h3_t500", 64, 3, 500}, Case{"d128_h8_t37", 128, 8, 37}, Case{"d128_h8_t1000", 128, 8, 1000}}) {
        SCOPED_TRACE(c.name);
        const std::string p = std::string(c.name) + ".";
        Router r = Router::from_tensors(*f, p, c.d);
        EXPECT_TRUE(r.layer(0).use_softmax());
        const TensorRef* kt = f->find_tensor(p + "keys");
        ASSERT_NE(kt, nullptr);
        ASSERT_EQ(kt->shape, (std::vector<int64_t>{c.T, c.H, c.d}));
        const std::vector<float> keys = tensor_f32(*f, p + "keys");
        std::vector<float> pooled = test::poisoned(size_t(c.H) * c.d);
        const RouterDecision dec = r.route(0, keys.data(), c.T, c.H, c.d, &pooled);
        double ep = 0, el = 0;
        expect_close(pooled, tensor_f32(*f, p + "pooled"), 1e-4, "pooled", &ep);
        expect_close(dec.logits, tensor_f32(*f, p + "logits"), 1e-4, "logits", &el);
        const std::vector<float> fa = tensor_f32(*f, p + "full_attention");
        ASSERT_EQ(dec.full.size(), fa.size());
        int n_fa = 0;
        for (size_t h = 0; h < fa.size(); ++h) {
            EXPECT_EQ(int(dec.full[h]), int(fa[h])) << "head " << h;
            EXPECT_EQ(dec.full[h] != 0, dec.margin[h] > 0) << "head " << h;
            EXPECT_EQ(dec.full[h] != 0, dec.prob_fa[h] > 0.5f) << "head " << h;
            n_fa += dec.full[h];
        }
        std::printf("[router] %-14s pooled max rel err %.2e, logits max rel err %.2e, %d/%d heads FA\n", c.name, ep, el,
                    n_fa, c.H);
    }
}

// ---------------------------------------------------------------------------------------------
// Boundary pooling.

TEST(RouterPool, PythonSliceSemantics) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const int H = 3, d = 8;
    for (int64_t T : {1, 37, 50, 60, 99, 100, 101, 150, 199, 200, 201, 1000}) {
        SCOPED_TRACE("T " + std::to_string(T));
        const std::vector<float> k = test::randn(size_t(T) * H * d, rng);
        std::vector<float> out = test::poisoned(size_t(H) * d);
        router_pool(k.data(), T, H, d, 100, out.data());
        expect_close(out, naive_pool(k, T, H, d, 100), 1e-6, "pool");
    }
    // Another window.
    const std::vector<float> k = test::randn(size_t(40) * H * d, rng);
    std::vector<float> out(size_t(H) * d);
    router_pool(k.data(), 40, H, d, 16, out.data());
    expect_close(out, naive_pool(k, 40, H, d, 16), 1e-6, "pool window 16");
}

TEST(RouterPool, OverlapCountsTwice) {
    // T = 150: rows 50..99 are in both slices. Key value = row index, so the mean is
    // (sum 0..99 + sum 50..149) / 200 = (4950 + 9950) / 200 = 74.5.
    std::vector<float> k(150);
    for (int t = 0; t < 150; ++t) k[size_t(t)] = float(t);
    float out = 0;
    router_pool(k.data(), 150, 1, 1, 100, &out);
    EXPECT_FLOAT_EQ(out, 74.5f);
    // T = 60: each slice is the whole sequence; the mean is the plain mean 29.5.
    router_pool(k.data(), 60, 1, 1, 100, &out);
    EXPECT_FLOAT_EQ(out, 29.5f);
}

// ---------------------------------------------------------------------------------------------
// Sigmoid variant, by hand: d = 2, hidden widths 1 and 2, one token so the pooled keys are the keys.
//   fe0 [1,2] = [1 0]: a = silu(x0);  fe2 [2,1] = [1;0]: f = [a, 0]
//   rh0 [1,2] = [1 0]: silu(a);  rh2 [1,1] = 1: silu(silu(a));  rh4 [1,1] = 2, bias 0.5
//   l = 2 silu^3(x0) + 0.5, LayerNorm over the 3 heads, sigmoid; FA iff l > mean(l).
TEST(RouterSigmoid, HandBuilt) {
    auto lin = [](int in, int out, std::vector<float> w, std::vector<float> b) { return RouterLinear{in, out, w, b}; };
    RouterLayer r{lin(2, 1, {1, 0}, {0}), lin(1, 2, {1, 0}, {0, 0}), lin(2, 1, {1, 0}, {0}), lin(1, 1, {1}, {0}),
                  lin(1, 1, {2}, {0.5f})};
    EXPECT_FALSE(r.use_softmax());
    Router router({r});
    const float keys[6] = {1, 7, -2, 7, 3, 7};  // [T=1, H=3, d=2]; channel 1 is ignored
    std::vector<float> pooled;
    const RouterDecision dec = router.route(0, keys, 1, 3, 2, &pooled);

    auto silu = [](double x) { return x / (1 + std::exp(-x)); };
    double l[3], mean = 0, var = 0;
    for (int h = 0; h < 3; ++h) mean += (l[h] = 2 * silu(silu(silu(keys[2 * h]))) + 0.5) / 3;
    for (int h = 0; h < 3; ++h) var += (l[h] - mean) * (l[h] - mean) / 3;
    // l ~ {1.113, 0.400, 5.566}: only head 2 is above the mean.
    EXPECT_NEAR(l[0], 1.1128, 1e-4);
    EXPECT_NEAR(l[1], 0.4005, 1e-4);
    EXPECT_NEAR(l[2], 5.5656, 1e-4);
    const uint8_t want_full[3] = {0, 0, 1};
    ASSERT_EQ(dec.logits.size(), 3u);
    for (int h = 0; h < 3; ++h) {
        const double z = (l[h] - mean) / std::sqrt(var + 1e-5);
        EXPECT_NEAR(dec.logits[size_t(h)], z, 1e-5) << h;
        EXPECT_NEAR(dec.prob_fa[size_t(h)], 1 / (1 + std::exp(-z)), 1e-6) << h;
        EXPECT_NEAR(dec.margin[size_t(h)], 1 / (1 + std::exp(-z)) - 0.5, 1e-6) << h;
        EXPECT_EQ(dec.full[size_t(h)], want_full[h]) << h;
        EXPECT_NEAR(pooled[size_t(2 * h)], silu(keys[2 * h]), 1e-6) << h;
        EXPECT_EQ(pooled[size_t(2 * h + 1)], 0.0f) << h;
    }
    // One KV head: LayerNorm maps it to 0, sigmoid 0.5, not > 0.5: sparse.
    const RouterDecision one = router.route(0, keys, 1, 1, 2);
    EXPECT_EQ(one.full[0], 0);
    EXPECT_FLOAT_EQ(one.prob_fa[0], 0.5f);
}

// ---------------------------------------------------------------------------------------------
// Routers with a known decision.

TEST(RouterKnown, ConstantAndThreshold) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const int d = 64, H = 8;
    const int64_t T = 300;
    std::vector<float> k = test::randn(size_t(T) * H * d, rng, 3.0f);
    Router r({router_layer_constant(d, true), router_layer_constant(d, false), router_layer_threshold(d, 5, 0.25f)});
    for (uint8_t z : r.route(0, k.data(), T, H, d).full) EXPECT_EQ(z, 1);
    for (uint8_t z : r.route(1, k.data(), T, H, d).full) EXPECT_EQ(z, 0);
    // Channel 5 constant per head over the tokens: head h's pooled value is known.
    const float vals[H] = {-50.f, -9.f, -1.f, 0.2f, 0.3f, 1.f, 10.f, 100.f};
    for (int64_t t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h) k[size_t(t) * H * d + size_t(h) * d + 5] = vals[h];
    const RouterDecision dec = r.route(2, k.data(), T, H, d);
    for (int h = 0; h < H; ++h) EXPECT_EQ(int(dec.full[size_t(h)]), vals[h] > 0.25f ? 1 : 0) << "head " << h;
}

// ---------------------------------------------------------------------------------------------
// Loading.

TEST(RouterLoad, CheckpointDirShardedAndSeparateFile) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const int d = 64, H = 3, n_layer = 2;
    const int64_t T = 257;
    const std::vector<RouterLayer> layers = {rand_layer(d, rng), rand_layer(d, rng, 1)};
    const Router want(layers);
    const std::vector<float> k = test::randn(size_t(T) * H * d, rng);
    TmpDir tmp;

    // A checkpoint directory (model.safetensors), a sharded one (index + shards), a separate file.
    fs::create_directories(tmp / "ck");
    write_router_safetensors(tmp / "ck/model.safetensors", layers);
    write_router_safetensors(tmp / "sharded", layers, "model.layers.{l}.self_attn.", DType::F32, 200000);
    write_router_safetensors(tmp / "router.safetensors", layers);
    ASSERT_TRUE(test::file_exists(tmp / "sharded/model.safetensors.index.json"));

    for (const std::string& path : {tmp / "ck", tmp / "sharded", tmp / "router.safetensors"}) {
        SCOPED_TRACE(path);
        const Router r = Router::load(path, n_layer, d);
        ASSERT_EQ(r.n_layer(), n_layer);
        for (int l = 0; l < n_layer; ++l) {
            EXPECT_TRUE(r.has_layer(l));
            EXPECT_EQ(r.layer(l).rh4.w, layers[size_t(l)].rh4.w);
            EXPECT_EQ(r.layer(l).fe0.w, layers[size_t(l)].fe0.w);
            const RouterDecision a = r.route(l, k.data(), T, H, d), b = want.route(l, k.data(), T, H, d);
            EXPECT_EQ(a.logits, b.logits);
            EXPECT_EQ(a.full, b.full);
        }
        EXPECT_FALSE(r.has_layer(n_layer));
    }

    // Half-precision files are widened to float at load.
    for (DType t : {DType::F16, DType::BF16}) {
        const std::string path = tmp / (std::string("router-") + dtype_name(t) + ".safetensors");
        write_router_safetensors(path, layers, "model.layers.{l}.self_attn.", t);
        const Router r = Router::load(path, n_layer, d);
        for (size_t i = 0; i < layers[1].rh2.w.size(); ++i) {
            const float x = layers[1].rh2.w[i];
            const float want_w = t == DType::F16 ? fp16_to_f32(f32_to_fp16(x)) : bf16_to_f32(f32_to_bf16(x));
            ASSERT_EQ(r.layer(1).rh2.w[i], want_w) << dtype_name(t) << " element " << i;
        }
        EXPECT_FALSE(r.layer(1).use_softmax());
    }
}

TEST(RouterLoad, Errors) {
    std::mt19937_64 rng(7);
    const int d = 64;
    const std::vector<RouterLayer> layers = {rand_layer(d, rng), rand_layer(d, rng)};
    TmpDir tmp;
    const std::string file = tmp / "router.safetensors";
    write_router_safetensors(file, layers);

    expect_error([&] { Router::load(file, 3, d); },
                 {"model.layers.2.self_attn.mask_allocator.cls_feat_extractor.0.weight", "not found", file});
    expect_error([&] { Router::load(file, 2, 128); },
                 {"model.layers.0.self_attn.mask_allocator.cls_feat_extractor.0.weight", "head_dim 128", "[256, 64]"});
    expect_error([&] { Router::load(file, 1, d); }, {"layer 1", "1 layers"});
    expect_error([&] { Router::load(tmp / "nope.safetensors", 2, d); }, {"nope.safetensors"});

    // One tensor missing; one with a shape that breaks the chain; an integer tensor.
    const std::vector<std::string> names = router_tensor_names("model.layers.0.self_attn.");
    const RouterLinear* lin[5] = {&layers[0].fe0, &layers[0].fe2, &layers[0].rh0, &layers[0].rh2, &layers[0].rh4};
    auto write_variant = [&](const std::string& path, const std::function<bool(int, SafetensorsWriter&)>& custom) {
        SafetensorsWriter w;
        for (int i = 0; i < 10; ++i) {
            if (custom(i, w)) continue;
            const RouterLinear& L = *lin[i / 2];
            if (i % 2 == 0)
                w.add_tensor(names[size_t(i)], DType::F32, {L.out, L.in}, L.w.data(), L.w.size() * sizeof(L.w[0]));
            else
                w.add_tensor(names[size_t(i)], DType::F32, {L.out}, L.b.data(), L.b.size() * sizeof(L.b[0]));
        }
        w.write(path);
    };
    write_variant(tmp / "missing.safetensors", [](int i, SafetensorsWriter&) { return i == 9; });
    expect_error([&] { Router::load(tmp / "missing.safetensors", 1, d); }, {names[9], "not found"});

    const std::vector<float> junk(size_t(d) * 3 * d, 0.5f), junk_bias(size_t(d) + 1, 0.5f);
    write_variant(tmp / "shape.safetensors", [&](int i, SafetensorsWriter& w) {
        if (i != 6) return false;
        w.add_tensor(names[6], DType::F32, {d, 3 * d}, junk.data(), junk.size() * sizeof(junk[0]));  // rh2 expects input 4d
        return true;
    });
    expect_error([&] { Router::load(tmp / "shape.safetensors", 1, d); }, {names[6], "[64, 192]"});

    write_variant(tmp / "bias.safetensors", [&](int i, SafetensorsWriter& w) {
        if (i != 3) return false;
        w.add_tensor(names[3], DType::F32, {d + 1}, junk_bias.data(), junk_bias.size() * sizeof(junk_bias[0]));
        return true;
    });
    expect_error([&] { Router::load(tmp / "bias.safetensors", 1, d); }, {names[3], "[65]"});

    const std::vector<int32_t> ints(2, 1);
    write_variant(tmp / "int.safetensors", [&](int i, SafetensorsWriter& w) {
        if (i != 9) return false;
        w.add_tensor(names[9], DType::I32, {2}, ints.data(), ints.size() * sizeof(ints[0]));
        return true;
    });
    expect_error([&] { Router::load(tmp / "int.safetensors", 1, d); }, {names[9], "I32"});

    // Three outputs in the last layer: neither variant.
    RouterLayer bad = layers[0];
    bad.rh4 = rand_linear(d, 3, rng);
    expect_error([&] { Router r({bad}); }, {"3 outputs"});
    // Keys of the wrong head_dim.
    const Router r({layers[0]});
    const std::vector<float> k(size_t(10) * 2 * 32, 1.0f);
    expect_error([&] { r.route(0, k.data(), 10, 2, 32); }, {"head_dim 64", "32"});
    expect_error([&] { r.route(1, k.data(), 10, 2, 64); }, {"layer 1"});
}
