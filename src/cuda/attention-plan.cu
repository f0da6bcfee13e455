// The device plan of the prefill kernels: upload of a batch's per-head modes and XA lists, and the
// work list of tiles sorted by cost (DESIGN.md §1.5: longest first).
#include "cuda/attention-plan.cuh"

#include <cub/device/device_radix_sort.cuh>

#include <cstdlib>
#include <string>

#include "core/error.h"

void std::default_delete<elastic::cuda::DevicePlan>::operator()(elastic::cuda::DevicePlan* p) const { delete p; }

namespace elastic::cuda {

namespace detail {

LaunchConsts launch_consts(const StreamingWindow& win, const DevicePlan& plan, float scale) {
    return {int(std::min<int64_t>(win.sink, int64_t(1) << 30)), int(std::min<int64_t>(win.local, int64_t(1) << 30)),
            int(plan.has_xa ? plan.xa_block : 64), scale * 1.4426950408889634f};
}

// Tile shape. 128-row tiles (2 m16 fragments per warp) halve the shared-memory traffic of K/V per
// FLOP against 64 rows and need XA blocks of 128. ptxas sm_90, bf16: d 64 × 128 rows × 64 keys:
// 250 registers, no spill; d 128 × 128 × 64: 255 + 192 B spilled; d 128 × 128 × 32 keys (half
// the S accumulators, QKᵀ k-loop unrolled by 2): 254, no spill; d 128 × 64 × 64: 174.
int auto_block_m(int head_dim, const DevicePlan& plan) {
    const bool xa_ok = !plan.has_xa || plan.xa_block % 128 == 0;
    return xa_ok ? 128 : 64;
}
int auto_block_n(int head_dim, int bm) { return head_dim == 128 && bm == 128 ? 32 : 64; }

namespace {

bool plain_order() {
    // ELASTIC_PREFILL_ORDER=plain keeps the items in the order they are made (tiles in sequence
    // order), the baseline a benchmark compares the longest-first order with.
    static const bool plain = [] {
        const char* e = std::getenv("ELASTIC_PREFILL_ORDER");
        return e && std::string(e) == "plain";
    }();
    return plain;
}

// Items of one sequence in the host's making order (tile, KV head, query head of the group), with
// their costs from the device lists.
__global__ void item_costs_kernel(const HeadMeta* meta, const int32_t* xa_off, int n_kv, int group, int L, int bm,
                                  int sink, int local, int xa_block, int n_items, int32_t* cost, WorkItem* items) {
    const int i = int(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n_items) return;
    const int hh = i % group, g = (i / group) % n_kv, mt = i / (group * n_kv);
    const HeadMeta hm = meta[g];
    const int m0 = mt * bm, m1 = min(m0 + bm, L);
    const TileRange tr = tile_range(hm.mode, m0, m1, 64, sink, local, xa_block, xa_off, hm.xa_base);
    cost[i] = tr.count;
    items[i] = WorkItem{0, g * group + hh, mt, tr.count};
}

void build_items_device(const DevicePlan& plan, int n_head, int bm, int sink, int local, cudaStream_t s) {
    ELASTIC_ASSERT(plan.n_seq == 1);
    const int group = n_head / plan.n_kv, L = plan.h_cu[1];
    const int64_t n64 = int64_t((L + bm - 1) / bm) * n_head;
    ELASTIC_ASSERT(n64 < (int64_t(1) << 30));
    const int n = int(n64);
    plan.n_items = n;
    if (n == 0) return;
    ensure_capacity(plan.d_items, plan.cap_items, size_t(n), "an attention work list");
    const bool sort = !plain_order();
    WorkItem* made = plan.d_items;
    int32_t* cost = nullptr;
    if (sort) {
        ensure_capacity(plan.d_items_in, plan.cap_items_in, size_t(n), "an attention work list");
        ensure_capacity(plan.d_cost, plan.cap_cost, size_t(2 * n), "an attention work list");
        made = plan.d_items_in;
    } else {
        ensure_capacity(plan.d_cost, plan.cap_cost, size_t(n), "an attention work list");
    }
    cost = plan.d_cost;
    const LaunchConsts lc{sink, local, int(plan.xa_block), 0.0f};
    item_costs_kernel<<<(n + 255) / 256, 256, 0, s>>>(plan.d_meta, plan.d_xa_off, plan.n_kv, group, L, bm, lc.sink,
                                                       lc.local, lc.xa_block, n, cost, made);
    CUDA_LAUNCH_CHECK();
    if (!sort) return;
    // Longest first: cub's radix sort is stable, so equal costs keep the making order, as the
    // host's std::stable_sort does.
    size_t bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, cost, cost + n, made, plan.d_items, n, 0, 32, s));
    ensure_capacity(plan.d_sort_tmp, plan.cap_sort_tmp, bytes, "an attention work list");
    CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(plan.d_sort_tmp, bytes, cost, cost + n, made, plan.d_items, n, 0,
                                                         32, s));
}

}  // namespace

void build_items(const DevicePlan& plan, int n_head, int bm, int sink, int local, cudaStream_t s) {
    if (plan.d_items && plan.key_head == n_head && plan.key_bm == bm && plan.key_sink == sink && plan.key_local == local)
        return;
    if (plan.xa_device || plan.modes_device) {
        build_items_device(plan, n_head, bm, sink, local, s);
        plan.key_head = n_head;
        plan.key_bm = bm;
        plan.key_sink = sink;
        plan.key_local = local;
        return;
    }
    const int group = n_head / plan.n_kv;
    std::vector<WorkItem> items;
    for (int b = 0; b < plan.n_seq; ++b) {
        const int L = plan.h_cu[size_t(b) + 1] - plan.h_cu[size_t(b)];
        for (int mt = 0; mt * bm < L; ++mt)
            for (int g = 0; g < plan.n_kv; ++g) {
                const HeadMeta hm = plan.h_meta[size_t(b) * size_t(plan.n_kv) + size_t(g)];
                const int m0 = mt * bm, m1 = std::min(m0 + bm, L);
                const TileRange tr = tile_range(hm.mode, m0, m1, 64, sink, local, int(plan.xa_block),
                                                plan.h_xa_off.data(), hm.xa_base);
                for (int hh = 0; hh < group; ++hh) items.push_back({b, g * group + hh, mt, tr.count});
            }
    }
    // Longest first (plain_order: as made).
    if (!plain_order())
        std::stable_sort(items.begin(), items.end(), [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
    upload_into(plan.d_items, plan.cap_items, items, s);
    plan.n_items = int(items.size());
    plan.key_head = n_head;
    plan.key_bm = bm;
    plan.key_sink = sink;
    plan.key_local = local;
}

void fill_plan_device_xa(DevicePlan& dp, const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s) {
    ELASTIC_ASSERT(!plan.mode.empty());
    ELASTIC_ASSERT(T >= 0 && T < (int64_t(1) << 31));
    dp.n_seq = 1;
    dp.n_kv = int(plan.mode.size());
    dp.xa_block = xa_block;
    dp.has_xa = false;
    dp.key_head = -1;
    dp.last_T = -1;  // not a host plan: refill_plan never takes it for the same
    dp.h_cu = {0, int32_t(T)};
    dp.h_meta.clear();
    dp.h_xa_off.clear();
    dp.h_xa_blocks.clear();
    const int64_t nb = (T + xa_block - 1) / xa_block;
    int j = 0;
    for (HeadMode m : plan.mode) {
        HeadMeta hm{int32_t(m), 0};
        if (m == HeadMode::XA) {
            ELASTIC_ASSERT_MSG(xa_block > 0 && xa_block % 64 == 0, "XA block must be a multiple of 64 on CUDA");
            hm.xa_base = int32_t(int64_t(j++) * (nb + 1));
            dp.has_xa = true;
        }
        dp.h_meta.push_back(hm);
    }
    dp.xa_device = dp.has_xa;
    dp.modes_device = false;
    dp.xa_heads = j;
    dp.xa_nb = nb;
    upload_into(dp.d_cu, dp.cap_cu, dp.h_cu, s);
    upload_into(dp.d_meta, dp.cap_meta, dp.h_meta, s);
    if (!dp.d_counter) dp.d_counter = device_alloc<int>(1, "an attention plan");
}

}  // namespace detail

using namespace detail;

void fill_batch_plan(DevicePlan& plan, const std::vector<LayerPlan>& plans, const std::vector<int64_t>& seqlens,
                     int64_t xa_block, cudaStream_t s) {
    DevicePlan* dp = &plan;
    ELASTIC_ASSERT(!plans.empty() && plans.size() == seqlens.size());
    dp->n_seq = int(plans.size());
    dp->has_xa = false;
    dp->h_cu.clear();
    dp->h_meta.clear();
    dp->h_xa_off.clear();
    dp->h_xa_blocks.clear();
    dp->key_head = -1;  // the work list is the old plan's
    dp->last_T = -1;
    dp->xa_device = false;
    dp->modes_device = false;
    dp->n_kv = int(plans[0].mode.size());
    dp->xa_block = xa_block;
    ELASTIC_ASSERT(dp->n_kv > 0);
    dp->h_cu.push_back(0);
    for (size_t b = 0; b < plans.size(); ++b) {
        const LayerPlan& lp = plans[b];
        const int64_t L = seqlens[b];
        ELASTIC_ASSERT(L >= 0 && int64_t(dp->h_cu.back()) + L < (int64_t(1) << 31));
        ELASTIC_ASSERT(int(lp.mode.size()) == dp->n_kv);
        dp->h_cu.push_back(int32_t(dp->h_cu.back() + L));
        for (int g = 0; g < dp->n_kv; ++g) {
            HeadMeta hm{int32_t(lp.mode[size_t(g)]), 0};
            if (lp.mode[size_t(g)] == HeadMode::XA) {
                ELASTIC_ASSERT_MSG(xa_block > 0 && xa_block % 64 == 0, "XA block must be a multiple of 64 on CUDA");
                ELASTIC_ASSERT(lp.xa.size() == size_t(dp->n_kv));
                const BlockList& bl = lp.xa[size_t(g)];
                const int64_t nqb = (L + xa_block - 1) / xa_block;
                ELASTIC_ASSERT(bl.n_query_blocks() == nqb);
                dp->has_xa = true;
                hm.xa_base = int32_t(dp->h_xa_off.size());
                const int64_t base = int64_t(dp->h_xa_blocks.size());
                for (int64_t qb = 0; qb < nqb; ++qb) {
                    const int64_t e0 = bl.offsets[size_t(qb)], e1 = bl.offsets[size_t(qb) + 1];
                    // The kernel relies on: ascending, all ≤ qb, diagonal last (so every other block is whole).
                    ELASTIC_ASSERT_MSG(e1 > e0 && bl.blocks[size_t(e1 - 1)] == qb, "XA list must end with its diagonal block");
                    for (int64_t x = e0; x < e1; ++x) {
                        ELASTIC_ASSERT(bl.blocks[size_t(x)] >= 0);
                        if (x > e0) ELASTIC_ASSERT_MSG(bl.blocks[size_t(x)] > bl.blocks[size_t(x - 1)], "XA list not ascending");
                    }
                    dp->h_xa_off.push_back(int32_t(base + e0 - bl.offsets[0]));
                }
                dp->h_xa_off.push_back(int32_t(base + bl.offsets[size_t(nqb)] - bl.offsets[0]));
                dp->h_xa_blocks.insert(dp->h_xa_blocks.end(), bl.blocks.begin() + std::ptrdiff_t(bl.offsets[0]),
                                       bl.blocks.begin() + std::ptrdiff_t(bl.offsets[size_t(nqb)]));
                ELASTIC_ASSERT(dp->h_xa_blocks.size() < (size_t(1) << 31));
            }
            dp->h_meta.push_back(hm);
        }
    }
    upload_into(dp->d_cu, dp->cap_cu, dp->h_cu, s);
    upload_into(dp->d_meta, dp->cap_meta, dp->h_meta, s);
    upload_into(dp->d_xa_off, dp->cap_xa_off, dp->h_xa_off, s);
    upload_into(dp->d_xa_blocks, dp->cap_xa_blocks, dp->h_xa_blocks, s);
    if (!dp->d_counter) dp->d_counter = device_alloc<int>(1, "an attention plan");
}

std::unique_ptr<DevicePlan> upload_batch_plan(const std::vector<LayerPlan>& plans, const std::vector<int64_t>& seqlens,
                                              int64_t xa_block, cudaStream_t s) {
    auto dp = std::unique_ptr<DevicePlan>(new DevicePlan);
    fill_batch_plan(*dp, plans, seqlens, xa_block, s);
    return dp;
}

void fill_plan_device_modes(DevicePlan& dp, int n_kv_head, int64_t T, int64_t xa_block, cudaStream_t s) {
    ELASTIC_ASSERT(n_kv_head >= 1 && T >= 0 && T < (int64_t(1) << 31));
    dp.n_seq = 1;
    dp.n_kv = n_kv_head;
    dp.xa_block = xa_block;
    dp.has_xa = false;
    dp.xa_device = false;
    dp.modes_device = true;
    dp.xa_heads = 0;
    dp.key_head = -1;  // the work list is rebuilt for these modes
    dp.last_T = -1;    // and refill_plan never takes the device's modes for a host plan's
    dp.h_cu = {0, int32_t(T)};
    dp.h_meta.assign(size_t(n_kv_head), HeadMeta{-1, 0});
    dp.h_xa_off.clear();
    dp.h_xa_blocks.clear();
    upload_into(dp.d_cu, dp.cap_cu, dp.h_cu, s);
    ensure_capacity(dp.d_meta, dp.cap_meta, size_t(n_kv_head), "an attention plan");
    if (!dp.d_counter) dp.d_counter = device_alloc<int>(1, "an attention plan");
}

int32_t* head_meta_words(DevicePlan& dp) {
    static_assert(sizeof(HeadMeta) == 2 * sizeof(int32_t), "router_decide writes two words per head");
    return reinterpret_cast<int32_t*>(dp.d_meta);
}

bool holds_device_modes(const DevicePlan& dp, int n_kv_head, int64_t T) {
    return dp.modes_device && dp.n_seq == 1 && dp.n_kv == n_kv_head && dp.h_cu.size() == 2 && dp.h_cu[1] == T;
}

bool holds_device_xa(const DevicePlan& dp, const LayerPlan& plan, int64_t T, int64_t xa_block) {
    if (!dp.xa_device || dp.n_seq != 1 || dp.h_cu.size() != 2 || dp.h_cu[1] != T || dp.xa_block != xa_block ||
        dp.n_kv != int(plan.mode.size()))
        return false;
    for (size_t g = 0; g < plan.mode.size(); ++g)
        if (dp.h_meta[g].mode != int32_t(plan.mode[g])) return false;
    return true;
}

std::vector<int32_t> work_list(const DevicePlan& dp, int n_head, int bm, const StreamingWindow& win, cudaStream_t s) {
    const LaunchConsts lc = launch_consts(win, dp, 1.0f);
    build_items(dp, n_head, bm, lc.sink, lc.local, s);
    std::vector<WorkItem> items(size_t(dp.n_items));
    if (!items.empty())
        CUDA_CHECK(cudaMemcpyAsync(items.data(), dp.d_items, items.size() * sizeof(WorkItem), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<int32_t> flat;
    for (const WorkItem& w : items) flat.insert(flat.end(), {w.seq, w.head, w.tile, w.cost});
    return flat;
}

std::unique_ptr<DevicePlan> new_plan() { return std::unique_ptr<DevicePlan>(new DevicePlan); }

std::unique_ptr<DevicePlan> upload_plan(const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s) {
    return upload_batch_plan(std::vector<LayerPlan>{plan}, std::vector<int64_t>{T}, xa_block, s);
}

void refill_plan(DevicePlan& dp, const LayerPlan& plan, int64_t T, int64_t xa_block, cudaStream_t s) {
    // The same plan again (all-FA or all-SSA layers, a benchmark's repeats): the device copy and
    // the work list stand.
    const bool xa = std::find(plan.mode.begin(), plan.mode.end(), HeadMode::XA) != plan.mode.end();
    if (dp.last_T == T && dp.xa_block == xa_block && dp.last.mode == plan.mode) {
        bool same = true;
        for (size_t g = 0; xa && same && g < plan.mode.size(); ++g)
            same = plan.mode[g] != HeadMode::XA ||
                   (plan.xa[g].offsets == dp.last.xa[g].offsets && plan.xa[g].blocks == dp.last.xa[g].blocks);
        if (same) return;
    }
    fill_batch_plan(dp, std::vector<LayerPlan>{plan}, std::vector<int64_t>{T}, xa_block, s);
    dp.last = plan;
    dp.last_T = T;
}

}  // namespace elastic::cuda
