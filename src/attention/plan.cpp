#include "attention/plan.h"

#include <algorithm>

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

}  // namespace elastic
