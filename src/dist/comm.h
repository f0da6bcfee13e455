// Collectives between ranks (DESIGN.md §2, issue 14): data-parallel router training sums the
// router and λ gradients of every rank's share of the batch (fp64); tensor-parallel inference sums
// the ranks' partial attention and FFN outputs of every layer (fp32, dist/tensor-parallel.h).
// `Communicator` is the interface; `LocalGroup` runs N ranks as threads of one process, reducing in
// host memory in rank order (the same bits on every rank). Router gradients are a few MB, so a host
// reduction costs little next to a training step; NcclCommunicator (nccl-comm.h, built with
// ELASTIC_NCCL) implements the same interface over NCCL for ranks on GPUs.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace elastic::dist {

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    // x[i] = Σ over ranks of x[i], in place; every rank gets the same values (summed in rank order).
    virtual void all_reduce_sum(double* x, size_t n) = 0;
    virtual void all_reduce_sum(float* x, size_t n) = 0;
    virtual void barrier() = 0;
};

// The one-rank communicator: all_reduce_sum leaves x as it is.
std::unique_ptr<Communicator> single_rank();

// N ranks in one process (threads). rank(r) hands out rank r's communicator; every rank must call
// each collective the same number of times with the same n and element type.
class LocalGroup {
public:
    explicit LocalGroup(int n);
    int size() const { return n_; }
    std::unique_ptr<Communicator> rank(int r);
    // For a rank that failed: the others would wait for it forever, so every collective waiting
    // now, and every later one, throws elastic::Error instead.
    void abort();

private:
    friend class LocalRank;
    void arrive();  // a reusable barrier
    int n_;
    std::mutex mu_;
    std::condition_variable cv_;
    int waiting_ = 0;
    long generation_ = 0;
    bool aborted_ = false;
    std::vector<void*> posted_;
    std::vector<size_t> sizes_;
    std::vector<int> types_;  // element size of each rank's posted buffer (4 or 8)
};

// Rank and world size as launchers set them: torchrun (RANK, WORLD_SIZE, LOCAL_RANK), Open MPI
// (OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK), Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID);
// rank 0 of 1 when none is set. Error for values that do not fit (rank >= world).
struct RankEnv {
    int rank = 0, world = 1, local_rank = 0;
    std::string source = "none";  // which launcher's variables were read
};
RankEnv rank_from_env();

// NVLink multicast stays off in every process we start (NCCL_NVLS_ENABLE=0,
// TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1), whatever the environment said.
void disable_nvlink_multicast();

}  // namespace elastic::dist
