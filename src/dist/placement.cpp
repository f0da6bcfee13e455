// Head placement: see placement.h.
#include "dist/placement.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace elastic::dist {

std::vector<double> head_costs(const std::vector<double>& pruned, int64_t T) {
    const double pairs = double(T) * double(T + 1) / 2;
    std::vector<double> c;
    for (double p : pruned) c.push_back((1.0 - std::clamp(p, 0.0, 1.0)) * pairs);
    return c;
}

std::vector<int> place_contiguous(int n_heads, int ranks) {
    if (ranks < 1 || n_heads < 0) fail("place_contiguous: %d heads over %d ranks", n_heads, ranks);
    const int per = (n_heads + ranks - 1) / ranks;
    std::vector<int> r(static_cast<size_t>(n_heads));
    for (int h = 0; h < n_heads; ++h) r[size_t(h)] = per > 0 ? h / per : 0;
    return r;
}

std::vector<int> place_balanced(const std::vector<double>& cost, int ranks) {
    if (ranks < 1) fail("place_balanced: %d ranks", ranks);
    std::vector<int> order(cost.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return cost[size_t(a)] > cost[size_t(b)]; });
    std::vector<double> load(size_t(ranks), 0.0);
    std::vector<int> r(cost.size(), 0);
    for (int h : order) {
        const int k = int(std::min_element(load.begin(), load.end()) - load.begin());
        r[size_t(h)] = k;
        load[size_t(k)] += cost[size_t(h)];
    }
    // LPT is a heuristic: where the contiguous split happens to be better, keep that.
    std::vector<int> c = place_contiguous(int(cost.size()), ranks);
    return max_rank_cost(cost, c, ranks) < max_rank_cost(cost, r, ranks) ? c : r;
}

double max_rank_cost(const std::vector<double>& cost, const std::vector<int>& rank_of, int ranks) {
    std::vector<double> load(size_t(std::max(ranks, 1)), 0.0);
    for (size_t h = 0; h < cost.size(); ++h) load[size_t(rank_of[h])] += cost[h];
    return *std::max_element(load.begin(), load.end());
}

std::vector<int> spread_over_layers(const std::vector<double>& cost, const std::vector<int>& rank_of,
                                    std::vector<double>& totals) {
    const int ranks = int(totals.size());
    std::vector<double> load(totals.size(), 0.0);
    for (size_t h = 0; h < cost.size(); ++h) load[size_t(rank_of[h])] += cost[h];
    std::vector<int> heavy(load.size()), light(load.size());  // this layer's shares, heaviest first; ranks, least loaded first
    std::iota(heavy.begin(), heavy.end(), 0);
    std::iota(light.begin(), light.end(), 0);
    std::stable_sort(heavy.begin(), heavy.end(), [&](int a, int b) { return load[size_t(a)] > load[size_t(b)]; });
    std::stable_sort(light.begin(), light.end(), [&](int a, int b) { return totals[size_t(a)] < totals[size_t(b)]; });
    std::vector<int> rename(load.size());
    for (int i = 0; i < ranks; ++i) rename[size_t(heavy[size_t(i)])] = light[size_t(i)];
    std::vector<int> r(rank_of.size());
    for (size_t h = 0; h < rank_of.size(); ++h) r[h] = rename[size_t(rank_of[h])];
    for (int i = 0; i < ranks; ++i) totals[size_t(rename[size_t(i)])] += load[size_t(i)];
    return r;
}

}  // namespace elastic::dist
