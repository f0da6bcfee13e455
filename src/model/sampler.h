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

    // Top-p without top-k (a GPU sorts the scaled logits and returns the leading ones: see
    // Backend::sorted_candidates): lead = the leading (logit / temperature, id) pairs of all n_total,
    // sorted; sum = the softmax normaliser over all of them. The same draw as sample() (same
    // generator state, same token), or -1, with the generator untouched, when `lead` is shorter
    // than n_total and does not reach the nucleus (the caller then samples the full logits).
    float temperature() const { return p_.temperature; }
    bool uses_sorted() const { return p_.temperature > 0.0f && p_.top_k == 0 && p_.top_p < 1.0f; }
    int32_t sample_sorted(const std::vector<std::pair<float, int32_t>>& lead, double sum, int32_t n_total);

private:
    // From cand_[0, n) (scaled logits, sorted), top-p and the generator. total >= 0: the normaliser
    // over all candidates (of which cand_ holds the leading n); then -1 when the nucleus is not
    // within the n.
    int32_t draw(size_t n, double total = -1, bool complete = true);
    SamplerParams p_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> cand_;
};

// log-softmax of one row at index `target` (for perplexity), computed in double.
double log_prob(const float* logits, int32_t vocab, int32_t target);

}  // namespace elastic
