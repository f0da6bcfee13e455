// Retrieval scores of attention heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains
// Long-Context Factuality"): while the model writes a needle it read in the prompt, a head
// "copy-pastes" when its strongest attention lands on the needle token equal to the token being
// generated. A head's score for a sample is |copied needle tokens| / |needle tokens|, averaged over
// samples. Query heads are folded into their KV head (max or mean) so the result feeds
// `--attention static:FILE` ({"scores": [[per KV head] per layer]}).
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace elastic::eval {

class RetrievalScorer {
public:
    RetrievalScorer(int n_layer, int n_head, int n_kv_head, int head_dim);

    // A sample starts: prompt token ids and the needle's token positions [begin, end).
    void begin_sample(const std::vector<int32_t>& prompt, int64_t needle_begin, int64_t needle_end);
    // One layer of a decode step: q [n_head, d] of the step, k [n_keys, n_kv_head, d]. Keeps the
    // position of each head's largest q·k (= largest attention probability; ties: earliest).
    void observe(int layer, const float* q, const float* k, int64_t n_keys);
    // The step's query produced `generated`: credit heads whose top position holds it in the needle.
    void end_step(int32_t generated);
    void end_sample();

    int samples() const { return samples_; }
    // [layer][query head] mean retrieval score.
    std::vector<std::vector<float>> query_head_scores() const;
    // [layer][kv head] by max (default) or mean over the group's query heads.
    std::vector<std::vector<float>> kv_head_scores(bool use_max = true) const;

private:
    int L_, H_, Hkv_, d_;
    std::vector<int32_t> prompt_;
    int64_t nb_ = 0, ne_ = 0;
    std::vector<int64_t> top_;                     // [layer * H + h] this step
    std::vector<std::set<int64_t>> copied_;        // [layer * H + h] needle positions copied this sample
    std::vector<double> sum_;                      // [layer * H + h] over samples
    int samples_ = 0;
};

}  // namespace elastic::eval
