// Shared test utilities: fresh random inputs, poisoned outputs, error measures, paths.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "attention/plan.h"
#include "attention/router.h"
#include "formats/quants.h"
#include "model/weights.h"

namespace elastic::test {

// A fresh seed per run (printed on failure by the caller through SCOPED_TRACE), unless
// ELASTIC_TEST_SEED pins it.
inline uint64_t fresh_seed() {
    if (const char* s = std::getenv("ELASTIC_TEST_SEED")) return std::strtoull(s, nullptr, 10);
    return std::random_device{}();
}

inline std::vector<float> randn(size_t n, std::mt19937_64& rng, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

// A random router layer of head_dim d (released widths 4d / d; n_out 2: softmax variant, 1:
// sigmoid): weights ~ N(0, 1.5² / in), biases ~ N(0, 0.01), drawn fe0, fe2, rh0, rh2, rh4 in turn.
inline RouterLayer random_router(int d, int n_out, std::mt19937_64& rng) {
    auto lin = [&](int in, int out) {
        return RouterLinear{in, out, randn(size_t(in) * out, rng, 1.5f / std::sqrt(float(in))), randn(size_t(out), rng, 0.1f)};
    };
    return RouterLayer{lin(d, 4 * d), lin(4 * d, d), lin(d, 4 * d), lin(4 * d, d), lin(d, n_out)};
}

// Layers whose modes hold both FA and SSA heads.
inline int mixed_layers(const std::vector<std::vector<HeadMode>>& modes) {
    int n = 0;
    for (const auto& m : modes)
        n += std::count(m.begin(), m.end(), HeadMode::FA) > 0 && std::count(m.begin(), m.end(), HeadMode::SSA) > 0;
    return n;
}

inline std::vector<float> poisoned(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// max_i |a_i - b_i| / max(max_i |b_i|, tiny); NaN anywhere gives +inf.
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b, size_t* worst = nullptr) {
    double mb = 0, me = 0;
    size_t wi = 0;
    for (size_t i = 0; i < b.size(); ++i) mb = std::max(mb, double(std::fabs(b[i])));
    for (size_t i = 0; i < a.size(); ++i) {
        double e = std::fabs(double(a[i]) - double(b[i]));
        if (std::isnan(a[i]) || std::isnan(b[i])) e = std::numeric_limits<double>::infinity();
        if (e > me) { me = e; wi = i; }
    }
    if (worst) *worst = wi;
    return me / std::max(mb, 1e-30);
}

// x rounded to bf16 (round to nearest even), as the CUDA backend stores weights and GEMM inputs.
inline float round_bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return x;
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
    std::memcpy(&x, &u, 4);
    return x;
}
inline std::vector<float> round_bf16(std::vector<float> v) {
    for (float& x : v) x = round_bf16(x);
    return v;
}

// A random matrix [rows, cols] (normal, std 0.5) stored in type t (plain or quantised) in `store`.
inline Weight make_weight(DType t, int64_t rows, int64_t cols, std::mt19937_64& rng, std::vector<uint8_t>& store) {
    const std::vector<float> f = randn(size_t(rows * cols), rng, 0.5f);
    const size_t rb = dtype_nbytes(t, cols);
    store.resize(size_t(rows) * rb);
    for (int64_t r = 0; r < rows; ++r) quantize(t, f.data() + r * cols, store.data() + size_t(r) * rb, cols);
    Weight w;
    w.type = t;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = rb;
    w.data = store.data();
    return w;
}

// The tolerance rule (CONVENTIONS.md #5), one place for every test that compares a backend:
//  - fp32 (naive == nullptr): max |out - ref| <= rel * max |ref| (+ abs_floor: for outputs that are
//    exactly 0 in exact arithmetic, where only the rounding of their inputs' scale is left).
//  - bf16: max |out - ref| <= 2 * max |naive - ref| + rel * max |ref|, where `naive` is a naive
//    implementation with the same tensors rounded to bf16 and fp32 accumulation (FlashAttention's
//    rule; the floor covers outputs that bf16 happens to represent exactly).
// On failure the message names the worst element with its values.
inline ::testing::AssertionResult close_enough(const std::vector<float>& out, const std::vector<float>& ref,
                                               const std::vector<float>* naive = nullptr, double rel = 1e-5,
                                               double abs_floor = 0) {
    if (out.size() != ref.size() || (naive && naive->size() != ref.size()))
        return ::testing::AssertionFailure() << "size mismatch: " << out.size() << " vs " << ref.size();
    double mref = 0, err = 0, nerr = 0;
    size_t worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        mref = std::max(mref, double(std::fabs(ref[i])));
        double e = std::fabs(double(out[i]) - double(ref[i]));
        if (std::isnan(e)) e = std::numeric_limits<double>::infinity();
        if (e > err) { err = e; worst = i; }
        if (naive) nerr = std::max(nerr, std::fabs(double((*naive)[i]) - double(ref[i])));
    }
    const double allowed = (naive ? 2.0 * nerr : 0.0) + rel * mref + abs_floor;
    if (err <= allowed) return ::testing::AssertionSuccess();
    auto f = ::testing::AssertionFailure();
    f << "max error " << err << " > allowed " << allowed << " (" << (naive ? "2x naive bf16 error " : "fp32 rule, ")
      << (naive ? std::to_string(nerr) + " + " : "") << rel << " x max|ref| " << mref << (abs_floor > 0 ? " + floor " + std::to_string(abs_floor) : "") << "); worst element [" << worst
      << "]: got " << out[worst] << ", reference " << ref[worst];
    if (naive) f << ", naive bf16 " << (*naive)[worst];
    return f;
}

// A valid random XA block list over T positions: block 0 and the diagonal always, the others
// with probability p.
inline BlockList random_blocks(int64_t T, int64_t block, double p, std::mt19937_64& rng) {
    BlockList bl;
    bl.offsets.push_back(0);
    std::bernoulli_distribution keep(p);
    for (int64_t qb = 0; qb * block < T; ++qb) {
        for (int64_t kb = 0; kb <= qb; ++kb)
            if (kb == 0 || kb == qb || keep(rng)) bl.blocks.push_back(int32_t(kb));
        bl.offsets.push_back(int64_t(bl.blocks.size()));
    }
    return bl;
}

// Runs a scope with another CPU kernel set (formats/quants.h): tests of cache and scheduling
// equivalences compare paths that would otherwise differ by decode's Q8 activation rounding.
class ScopedCpuKernels {
public:
    explicit ScopedCpuKernels(CpuKernels k) : saved_(cpu_kernels()) { set_cpu_kernels(k); }
    ~ScopedCpuKernels() { set_cpu_kernels(saved_); }
    ScopedCpuKernels(const ScopedCpuKernels&) = delete;
    ScopedCpuKernels& operator=(const ScopedCpuKernels&) = delete;

private:
    CpuKernels saved_;
};

inline std::string source_path(const std::string& rel) { return std::string(ELASTIC_SOURCE_DIR) + "/" + rel; }

inline bool file_exists(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}

// The default model, if fetched (`make model`); ELASTIC_MODEL overrides.
inline std::string default_model_path() {
    if (const char* m = std::getenv("ELASTIC_MODEL")) return m;
    return source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

}  // namespace elastic::test
