#include "attention/plan.h"

#include <algorithm>
#include <numeric>

namespace elastic {

const char* head_mode_name(HeadMode m) {
    switch (m) {
        case HeadMode::FA: return "FA";
        case HeadMode::SSA: return "SSA";
        case HeadMode::XA: return "XA";
    }
    return "?";
}

bool plan_allows(HeadMode m, const StreamingWindow& w, const BlockList* xa, int64_t block, int64_t i, int64_t j) {
    if (j > i) return false;
    switch (m) {
        case HeadMode::FA: return true;
        case HeadMode::SSA: return j < w.sink || i - j < w.local;
        case HeadMode::XA: {
            const int64_t qb = i / block, kb = j / block;
            auto b = xa->blocks.begin() + xa->offsets[size_t(qb)], e = xa->blocks.begin() + xa->offsets[size_t(qb) + 1];
            return std::binary_search(b, e, int32_t(kb));
        }
    }
    return false;
}

int64_t attended_pairs(HeadMode m, const StreamingWindow& win, const BlockList* xa, int64_t xa_block, int64_t T) {
    int64_t n = 0;
    switch (m) {
        case HeadMode::FA: return T * (T + 1) / 2;
        case HeadMode::SSA:
            for (int64_t i = 0; i < T; ++i) {
                const int64_t win_begin = std::max<int64_t>(0, i - win.local + 1);
                n += (i + 1) - std::max<int64_t>(0, win_begin - std::min(win.sink, win_begin));
            }
            return n;
        case HeadMode::XA:
            for (int64_t qb = 0; qb < xa->n_query_blocks(); ++qb) {
                const int64_t r0 = qb * xa_block, r1 = std::min(T, r0 + xa_block);
                for (int64_t x = xa->offsets[size_t(qb)]; x < xa->offsets[size_t(qb) + 1]; ++x) {
                    const int64_t kb = xa->blocks[size_t(x)];
                    if (kb < qb)
                        n += (r1 - r0) * xa_block;
                    else if (kb == qb)
                        n += (r1 - r0) * (r1 - r0 + 1) / 2;
                }
            }
            return n;
    }
    return n;
}

void xa_select_blocks(const double* s, int64_t qb, double threshold, std::vector<int32_t>& out,
                   std::vector<int32_t>& order) {
    const double total = std::accumulate(s, s + qb + 1, 0.0);
    const size_t first = out.size();
    out.push_back(0);
    double mass = s[0];
    if (qb > 0) {
        out.push_back(int32_t(qb));
        mass += s[qb];
    }
    order.resize(size_t(std::max<int64_t>(0, qb - 1)));
    std::iota(order.begin(), order.end(), 1);
    std::sort(order.begin(), order.end(), [s](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
    for (int32_t kb : order) {
        if (mass >= threshold * total) break;
        out.push_back(kb);
        mass += s[kb];
    }
    std::sort(out.begin() + std::ptrdiff_t(first), out.end());
}

}  // namespace elastic
