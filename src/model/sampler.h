// Next-token choice from logits: greedy (temperature 0), or temperature + top-k + top-p with a
// seeded generator (same seed, same logits -> same tokens).
#pragma once
#include <cstdint>
#include <random>
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

private:
    SamplerParams p_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> cand_;
};

// log-softmax of one row at index `target` (for perplexity), computed in double.
double log_prob(const float* logits, int32_t vocab, int32_t target);

}  // namespace elastic
