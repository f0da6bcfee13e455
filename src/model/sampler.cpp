#include "model/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace elastic {

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {
    if (!(p.temperature >= 0)) fail("temperature must be >= 0");
    if (p.top_k < 0) fail("top-k must be >= 0");
    if (!(p.top_p > 0 && p.top_p <= 1)) fail("top-p must be in (0, 1]");
}

namespace {
bool by_logit(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
}
}  // namespace

int32_t Sampler::sample(const float* logits, int32_t vocab) {
    if (p_.temperature == 0.0f) return int32_t(std::max_element(logits, logits + vocab) - logits);
    cand_.resize(size_t(vocab));
    for (int32_t i = 0; i < vocab; ++i) cand_[size_t(i)] = {logits[i] / p_.temperature, i};
    size_t n = cand_.size();
    if (p_.top_k > 0 && size_t(p_.top_k) < n) {
        std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
        n = size_t(p_.top_k);
    } else {
        std::sort(cand_.begin(), cand_.end(), by_logit);
    }
    return draw(n);
}

int32_t Sampler::sample_candidates(const std::vector<std::pair<float, int32_t>>& top) {
    if (top.empty()) fail("sampler: no candidates");
    if (p_.temperature == 0.0f) return top[0].second;
    cand_.resize(top.size());
    for (size_t i = 0; i < top.size(); ++i) cand_[i] = {top[i].first / p_.temperature, top[i].second};
    std::sort(cand_.begin(), cand_.end(), by_logit);
    return draw(cand_.size());
}

int32_t Sampler::sample_sorted(const std::vector<std::pair<float, int32_t>>& lead, double sum, int32_t n_total) {
    if (lead.empty()) fail("sampler: no candidates");
    cand_.assign(lead.begin(), lead.end());
    return draw(cand_.size(), sum, int64_t(lead.size()) >= int64_t(n_total));
}

int32_t Sampler::draw(size_t n, double total, bool complete) {
    const float mx = cand_[0].first;
    double sum = 0;
    std::vector<double> pr(n);
    for (size_t i = 0; i < n; ++i) sum += (pr[i] = std::exp(double(cand_[i].first - mx)));
    if (total >= 0) sum = total;
    if (p_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
        double acc = 0;
        size_t keep = 0;
        for (size_t i = 0; i < n; ++i) {
            acc += pr[i] / sum;
            if (acc >= p_.top_p) { keep = i + 1; break; }
        }
        if (keep == 0) {
            if (!complete) return -1;
            keep = n;
        }
        n = keep;
        sum = 0;
        for (size_t i = 0; i < n; ++i) sum += pr[i];
    } else if (!complete) {
        return -1;
    }
    double r = std::uniform_real_distribution<double>(0.0, sum)(rng_);
    for (size_t i = 0; i < n; ++i) {
        r -= pr[i];
        if (r <= 0) return cand_[i].second;
    }
    return cand_[n - 1].second;
}

double log_prob(const float* logits, int32_t vocab, int32_t target) {
    double mx = logits[0];
    for (int32_t i = 1; i < vocab; ++i) mx = std::max(mx, double(logits[i]));
    double sum = 0;
    for (int32_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - mx);
    return double(logits[target]) - mx - std::log(sum);
}

}  // namespace elastic
