// Dispatch of the Hopper prefill kernel (the kernel and its design: attention-prefill-sm90.cuh).
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "cuda/attention-plan.cuh"
#include "cuda/attention-prefill-kernels.cuh"
#include "cuda/sm90/attention-sm90.h"

namespace elastic::cuda::sm90 {

namespace detail90 {
// attention-prefill-sm90-{bf16,f16}.cu: every instance of one element type.
void launch_bf16(const elastic::cuda::detail::PrefillKernelParams& kp, int head_dim, Variant variant, int total_rows,
                 int n_head, const DevicePlan& plan, cudaStream_t s);
void launch_f16(const elastic::cuda::detail::PrefillKernelParams& kp, int head_dim, Variant variant, int total_rows,
                int n_head, const DevicePlan& plan, cudaStream_t s);
}  // namespace detail90

namespace {

bool device_is_sm90() {
    int dev = 0, major = 0, minor = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    return major == 9 && minor == 0;  // sm_90a code runs on sm_90 only
}

}  // namespace

bool supported(DType t, int head_dim, const DevicePlan& plan) {
    if (t != DType::BF16 && t != DType::F16) return false;
    if (head_dim != 64 && head_dim != 128) return false;
    if (plan.has_xa && plan.xa_block % 128 != 0) return false;  // 128-key tiles inside XA blocks
    return device_is_sm90();
}

void hybrid_prefill(const elastic::cuda::detail::PrefillKernelParams& kp, DType t, int head_dim, int total_rows,
                    int n_head, const DevicePlan& plan, cudaStream_t s) {
    ELASTIC_ASSERT(head_dim == 64 || head_dim == 128);
    // ELASTIC_SM90_VARIANT=deep|simple: the other variants, for comparison (attention-prefill-sm90.cuh).
    static const Variant variant = [] {
        const char* e = std::getenv("ELASTIC_SM90_VARIANT");
        if (!e || !*e || std::string(e) == "overlap") return Variant::Overlap;
        if (std::string(e) == "deep") return Variant::Deep;
        if (std::string(e) == "simple") return Variant::Simple;
        fail("ELASTIC_SM90_VARIANT=%s: expected overlap, deep or simple", e);
    }();
    if (t == DType::BF16) {
        detail90::launch_bf16(kp, head_dim, variant, total_rows, n_head, plan, s);
    } else {
        ELASTIC_ASSERT(t == DType::F16);
        detail90::launch_f16(kp, head_dim, variant, total_rows, n_head, plan, s);
    }
}

}  // namespace elastic::cuda::sm90
