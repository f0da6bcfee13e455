// Tensor-parallel placement of KV heads after routing (issue 14). A layer's attention is split by
// KV head across ranks and all-reduced after the output projection, so each layer waits for its
// slowest rank. The hybrid plan makes heads unequal (at 128K an FA head attends ~30x the pairs of a
// streaming head), so heads are placed by cost, not by count: longest-first onto the least-loaded
// rank (LPT; within 4/3 of the best placement), against the naive contiguous split.
#pragma once
#include <cstdint>
#include <vector>

#include "attention/elastic.h"

namespace elastic::dist {

// Attended (query, key) pairs of each KV head of one layer over a prompt of T tokens:
// (1 − pruned share) × T(T+1)/2, from a prefill's statistics (AttentionStats::pruned[layer]).
std::vector<double> head_costs(const std::vector<double>& pruned, int64_t T);

// Rank of each head: contiguous blocks of ceil(H / ranks) heads.
std::vector<int> place_contiguous(int n_heads, int ranks);
// Rank of each head: heads by cost, largest first, each onto the rank with the least cost so far
// (ties: the lower rank; equal costs keep head order), or the contiguous split where that is
// better: never slower than it. Deterministic.
std::vector<int> place_balanced(const std::vector<double>& cost, int ranks);
// The largest total cost of one rank under a placement.
double max_rank_cost(const std::vector<double>& cost, const std::vector<int>& rank_of, int ranks);

// Renames the ranks of one layer's placement (which leaves its slowest rank as it is) so that the
// layer's heaviest share goes to the rank with the least cost over the layers so far, the next to
// the next, and so on; `totals` [ranks] holds those costs and is updated. Without it longest-first
// puts every layer's largest head on rank 0, and with it that rank's KV cache: with one KV head per
// rank the layers would all load the same rank. Deterministic (ties: the lower rank).
std::vector<int> spread_over_layers(const std::vector<double>& cost, const std::vector<int>& rank_of,
                                    std::vector<double>& totals);

}  // namespace elastic::dist
