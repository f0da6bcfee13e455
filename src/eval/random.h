// A seeded generator whose output is the same on every platform and standard library (the
// <random> distributions are implementation-defined, so eval data must not use them).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace elastic::eval {

class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    // splitmix64 (Steele et al. 2014): 64 bits per call.
    uint64_t next() {
        uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }            // [0, n)
    int64_t range(int64_t lo, int64_t hi) { return lo + int64_t(below(uint64_t(hi - lo + 1))); }  // [lo, hi]
    double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
    template <class T>
    void shuffle(std::vector<T>& v) {
        for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(below(i))]);
    }
    // k distinct indices of [0, n), in the order drawn (partial Fisher-Yates).
    std::vector<size_t> sample(size_t n, size_t k) {
        std::vector<size_t> idx(n);
        for (size_t i = 0; i < n; ++i) idx[i] = i;
        if (k > n) k = n;
        for (size_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + size_t(below(n - i))]);
        idx.resize(k);
        return idx;
    }

private:
    uint64_t s_;
};

// Mixes a base seed with a name and numbers into an independent stream seed (FNV-1a + splitmix).
inline uint64_t derive_seed(uint64_t seed, const std::string& name, uint64_t a = 0, uint64_t b = 0) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
    Rng r(h ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full));
    return r.next();
}

}  // namespace elastic::eval
