// NCCL communicator (issue 14): the Communicator interface over NCCL, for ranks on GPUs of one
// host or several. Compiled only with -DELASTIC_NCCL=ON (and the CUDA build); defines
// ELASTIC_HAVE_NCCL. NVLink multicast (NVLS) stays off: the constructor calls
// disable_nvlink_multicast() before ncclCommInitRank, whatever the environment said.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "dist/comm.h"

namespace elastic::dist {

// The 128-byte id rank 0 makes (ncclGetUniqueId) and hands to the other ranks by whatever channel
// the launcher offers (a shared file, MPI, a TCP store), as bytes.
std::string nccl_unique_id();

class NcclCommunicator final : public Communicator {
public:
    // Joins `world` ranks as `rank`, on CUDA device `device`, with the id from nccl_unique_id().
    // elastic::Error when CUDA or NCCL fails (the message names the NCCL error).
    NcclCommunicator(int rank, int world, const std::string& unique_id, int device);
    ~NcclCommunicator() override;
    NcclCommunicator(const NcclCommunicator&) = delete;
    NcclCommunicator& operator=(const NcclCommunicator&) = delete;

    int rank() const override { return rank_; }
    int size() const override { return world_; }
    // x may be device memory of this rank's device (the tensor-parallel forward's activations:
    // reduced in place) or host memory (the trainer's gradients: staged through a device buffer).
    // Runs on the legacy default stream, which orders itself after and before the work of the CUDA
    // backend's blocking stream, and returns when the sum is in x. Every rank gets the same bits
    // (NCCL reduces each chunk once and copies it to all), though not summed in rank order.
    void all_reduce_sum(double* x, size_t n) override;
    void all_reduce_sum(float* x, size_t n) override;
    void barrier() override;

private:
    void reduce(void* x, size_t n, size_t elem_bytes, bool is_double);
    struct Impl;
    std::unique_ptr<Impl> impl_;
    int rank_, world_;
};

}  // namespace elastic::dist
