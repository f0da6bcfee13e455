// Next-token choice from logits: greedy (temperature 0), or temperature + top-k + top-p with a
// seeded generator (same seed, same logits -> same tokens).
#pragma once
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace elastic {

struct SamplerParams {
    float temperature = 0.0f;  // 0 = greedy
    int top_k = 0;             // 0 = off
    float top_p = 1.0f;        // 1 = off
    uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(const SamplerParams& p);
    int32_t sample(const float* logits, int32_t vocab);

    // Sampling from the top candidates alone (a GPU backend finds them on the device, so only k
    // pairs leave it): possible for greedy (k = 1) and for top-k up to `max_k`. The candidates are
    // the k largest raw logits, value descending, lower index first on ties; the draw is then the
    // same as sample()'s (up to ties that dividing by the temperature creates at the k-th place).
    bool uses_candidates(int max_k) const { return p_.temperature == 0.0f || (p_.top_k > 0 && p_.top_k <= max_k); }
    int candidates_needed() const { return p_.temperature == 0.0f ? 1 : p_.top_k; }
    int32_t sample_candidates(const std::vector<std::pair<float, int32_t>>& top);

private:
    int32_t draw(size_t n);  // from cand_[0, n) (scaled logits, sorted), top-p and the generator
    SamplerParams p_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> cand_;
};

// log-softmax of one row at index `target` (for perplexity), computed in double.
double log_prob(const float* logits, int32_t vocab, int32_t target);

}  // namespace elastic
