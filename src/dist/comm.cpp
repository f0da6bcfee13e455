// Communicators: see comm.h.
#include "dist/comm.h"

#include <algorithm>
#include <cstdlib>

#include "core/error.h"

namespace elastic::dist {

namespace {

class SingleRank final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    void all_reduce_sum(double*, size_t) override {}
    void all_reduce_sum(float*, size_t) override {}
    void barrier() override {}
};

bool env_int(const char* name, int& out) {
    const char* v = std::getenv(name);
    if (!v || !*v) return false;
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 20) fail("%s=%s is not a rank count or index", name, v);
    out = int(x);
    return true;
}

}  // namespace

std::unique_ptr<Communicator> single_rank() { return std::make_unique<SingleRank>(); }

class LocalRank final : public Communicator {
public:
    LocalRank(LocalGroup& g, int r) : g_(g), r_(r) {}
    int rank() const override { return r_; }
    int size() const override { return g_.n_; }
    void all_reduce_sum(double* x, size_t n) override { reduce(x, n); }
    void all_reduce_sum(float* x, size_t n) override { reduce(x, n); }
    void barrier() override { g_.arrive(); }

private:
    template <class T>
    void reduce(T* x, size_t n) {
        {
            std::lock_guard<std::mutex> lk(g_.mu_);
            g_.posted_[size_t(r_)] = x;
            g_.sizes_[size_t(r_)] = n;
            g_.types_[size_t(r_)] = int(sizeof(T));
        }
        g_.arrive();  // every rank has posted
        for (int k = 0; k < g_.n_; ++k)
            if (g_.sizes_[size_t(k)] != n || g_.types_[size_t(k)] != int(sizeof(T)))
                fail("all_reduce_sum: rank %d gave %zu values of %d bytes, rank %d %zu of %d", k, g_.sizes_[size_t(k)],
                     g_.types_[size_t(k)], r_, n, int(sizeof(T)));
        std::vector<T> sum(n, T(0));
        for (int k = 0; k < g_.n_; ++k) {  // rank order: the same bits on every rank
            const T* y = static_cast<const T*>(g_.posted_[size_t(k)]);
            for (size_t i = 0; i < n; ++i) sum[i] += y[i];
        }
        g_.arrive();  // every rank has read every buffer
        std::copy(sum.begin(), sum.end(), x);
    }

    LocalGroup& g_;
    int r_;
};

LocalGroup::LocalGroup(int n)
    : n_(n), posted_(size_t(std::max(n, 1)), nullptr), sizes_(size_t(std::max(n, 1)), 0), types_(size_t(std::max(n, 1)), 0) {
    if (n < 1) fail("a group needs at least one rank (got %d)", n);
}

std::unique_ptr<Communicator> LocalGroup::rank(int r) {
    if (r < 0 || r >= n_) fail("rank %d outside a group of %d", r, n_);
    return std::make_unique<LocalRank>(*this, r);
}

void LocalGroup::arrive() {
    std::unique_lock<std::mutex> lk(mu_);
    if (aborted_) fail("another rank of the group failed");
    const long gen = generation_;
    if (++waiting_ == n_) {
        waiting_ = 0;
        ++generation_;
        cv_.notify_all();
        return;
    }
    cv_.wait(lk, [&] { return generation_ != gen || aborted_; });
    if (generation_ == gen) fail("another rank of the group failed");
}

void LocalGroup::abort() {
    std::lock_guard<std::mutex> lk(mu_);
    aborted_ = true;
    cv_.notify_all();
}

RankEnv rank_from_env() {
    RankEnv e;
    struct Source {
        const char *rank, *world, *local, *name;
    };
    static const Source sources[] = {{"RANK", "WORLD_SIZE", "LOCAL_RANK", "torchrun"},
                                     {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"},
                                     {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "srun"}};
    for (const Source& s : sources) {
        int r = 0, w = 0;
        if (!env_int(s.rank, r) || !env_int(s.world, w)) continue;
        if (w < 1 || r >= w) fail("%s=%d and %s=%d do not fit (rank must be below the world size)", s.rank, r, s.world, w);
        e.rank = r;
        e.world = w;
        if (!env_int(s.local, e.local_rank)) e.local_rank = r;
        e.source = s.name;
        return e;
    }
    return e;
}

void disable_nvlink_multicast() {
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    setenv("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1", 1);
    setenv("NVSHMEM_DISABLE_NVLS", "1", 1);
}

}  // namespace elastic::dist
