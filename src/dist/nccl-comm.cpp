// NcclCommunicator: see nccl-comm.h. Built only with ELASTIC_NCCL (CMakeLists.txt).
#include "dist/nccl-comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "core/error.h"

namespace elastic::dist {

namespace {

void check_cuda(cudaError_t e, const char* what) {
    if (e != cudaSuccess) fail("NCCL communicator: %s: %s", what, cudaGetErrorString(e));
}
void check_nccl(ncclResult_t r, const char* what) {
    if (r != ncclSuccess) fail("NCCL communicator: %s: %s", what, ncclGetErrorString(r));
}

}  // namespace

struct NcclCommunicator::Impl {
    ncclComm_t comm = nullptr;
    int device = 0;
    void* staging = nullptr;  // device buffer for host-memory reductions
    size_t staging_bytes = 0;
};

std::string nccl_unique_id() {
    ncclUniqueId id;
    check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    return std::string(id.internal, sizeof(id.internal));
}

NcclCommunicator::NcclCommunicator(int rank, int world, const std::string& unique_id, int device)
    : impl_(std::make_unique<Impl>()), rank_(rank), world_(world) {
    if (world < 1 || rank < 0 || rank >= world) fail("NCCL communicator: rank %d of %d", rank, world);
    ncclUniqueId id;
    if (unique_id.size() != sizeof(id.internal))
        fail("NCCL communicator: the unique id has %zu bytes, NCCL's has %zu", unique_id.size(), sizeof(id.internal));
    std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
    disable_nvlink_multicast();  // NCCL reads NCCL_NVLS_ENABLE when the communicator is made
    impl_->device = device;
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    check_nccl(ncclCommInitRank(&impl_->comm, world, id, rank), "ncclCommInitRank");
}

NcclCommunicator::~NcclCommunicator() {
    cudaSetDevice(impl_->device);
    if (impl_->staging) cudaFree(impl_->staging);
    if (impl_->comm) ncclCommDestroy(impl_->comm);
}

void NcclCommunicator::reduce(void* x, size_t n, size_t elem_bytes, bool is_double) {
    check_cuda(cudaSetDevice(impl_->device), "cudaSetDevice");
    cudaPointerAttributes attr{};
    check_cuda(cudaPointerGetAttributes(&attr, x), "cudaPointerGetAttributes");
    const bool on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
    if (on_device && attr.device != impl_->device)
        fail("NCCL communicator: a buffer on device %d given to the rank of device %d", attr.device, impl_->device);
    const size_t bytes = n * elem_bytes;
    void* buf = x;
    if (!on_device) {
        if (impl_->staging_bytes < bytes) {
            if (impl_->staging) check_cuda(cudaFree(impl_->staging), "cudaFree");
            impl_->staging = nullptr;
            check_cuda(cudaMalloc(&impl_->staging, bytes), "cudaMalloc");
            impl_->staging_bytes = bytes;
        }
        buf = impl_->staging;
        check_cuda(cudaMemcpy(buf, x, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    check_nccl(ncclAllReduce(buf, buf, n, is_double ? ncclFloat64 : ncclFloat32, ncclSum, impl_->comm, cudaStreamLegacy),
               "ncclAllReduce");
    if (!on_device) check_cuda(cudaMemcpy(x, buf, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
    check_cuda(cudaStreamSynchronize(cudaStreamLegacy), "cudaStreamSynchronize");
}

void NcclCommunicator::all_reduce_sum(double* x, size_t n) { reduce(x, n, sizeof(double), true); }
void NcclCommunicator::all_reduce_sum(float* x, size_t n) { reduce(x, n, sizeof(float), false); }

void NcclCommunicator::barrier() {
    float one = 1.0f;  // an all-reduce of one value: returns when every rank has reached it
    all_reduce_sum(&one, 1);
}

}  // namespace elastic::dist
