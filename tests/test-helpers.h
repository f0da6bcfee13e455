// Shared test utilities: fresh random inputs, poisoned outputs, error measures, paths.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <sys/stat.h>
#include <vector>

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
