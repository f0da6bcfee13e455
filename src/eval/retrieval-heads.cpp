#include "eval/retrieval-heads.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace elastic::eval {

RetrievalScorer::RetrievalScorer(int n_layer, int n_head, int n_kv_head, int head_dim)
    : L_(n_layer), H_(n_head), Hkv_(n_kv_head), d_(head_dim) {
    ELASTIC_ASSERT(n_head % n_kv_head == 0);
    top_.assign(size_t(L_ * H_), -1);
    copied_.assign(size_t(L_ * H_), {});
    sum_.assign(size_t(L_ * H_), 0.0);
}

void RetrievalScorer::begin_sample(const std::vector<int32_t>& prompt, int64_t needle_begin, int64_t needle_end) {
    prompt_ = prompt;
    nb_ = needle_begin;
    ne_ = needle_end;
    for (auto& s : copied_) s.clear();
}

void RetrievalScorer::observe(int layer, const float* q, const float* k, int64_t n_keys) {
    const int group = H_ / Hkv_;
    for (int h = 0; h < H_; ++h) {
        const float* qh = q + size_t(h) * size_t(d_);
        const int g = h / group;
        double best = -std::numeric_limits<double>::infinity();
        int64_t arg = -1;
        for (int64_t j = 0; j < n_keys; ++j) {
            const float* kj = k + (size_t(j) * size_t(Hkv_) + size_t(g)) * size_t(d_);
            double dot = 0;
            for (int i = 0; i < d_; ++i) dot += double(qh[i]) * double(kj[i]);
            if (dot > best) {
                best = dot;
                arg = j;
            }
        }
        top_[size_t(layer * H_ + h)] = arg;
    }
}

void RetrievalScorer::end_step(int32_t generated) {
    bool in_needle = false;
    for (int64_t p = nb_; p < ne_; ++p) in_needle |= prompt_[size_t(p)] == generated;
    if (in_needle)
        for (size_t i = 0; i < top_.size(); ++i) {
            const int64_t p = top_[i];
            if (p >= nb_ && p < ne_ && prompt_[size_t(p)] == generated) copied_[i].insert(p);
        }
    std::fill(top_.begin(), top_.end(), -1);
}

void RetrievalScorer::end_sample() {
    const double n = double(std::max<int64_t>(1, ne_ - nb_));
    for (size_t i = 0; i < sum_.size(); ++i) sum_[i] += double(copied_[i].size()) / n;
    ++samples_;
}

std::vector<std::vector<float>> RetrievalScorer::query_head_scores() const {
    std::vector<std::vector<float>> out(size_t(L_), std::vector<float>(size_t(H_), 0.0f));
    for (int l = 0; l < L_; ++l)
        for (int h = 0; h < H_; ++h) out[size_t(l)][size_t(h)] = samples_ ? float(sum_[size_t(l * H_ + h)] / samples_) : 0.0f;
    return out;
}

std::vector<std::vector<float>> RetrievalScorer::kv_head_scores(bool use_max) const {
    const auto q = query_head_scores();
    const int group = H_ / Hkv_;
    std::vector<std::vector<float>> out(size_t(L_), std::vector<float>(size_t(Hkv_), 0.0f));
    for (int l = 0; l < L_; ++l)
        for (int g = 0; g < Hkv_; ++g) {
            float agg = use_max ? 0.0f : 0.0f;
            for (int h = g * group; h < (g + 1) * group; ++h) agg = use_max ? std::max(agg, q[size_t(l)][size_t(h)]) : agg + q[size_t(l)][size_t(h)];
            out[size_t(l)][size_t(g)] = use_max ? agg : agg / float(group);
        }
    return out;
}

}  // namespace elastic::eval
