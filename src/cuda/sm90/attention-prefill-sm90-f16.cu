// The Hopper prefill kernel's f16 instances (attention-prefill-sm90.cuh).
#include "cuda/sm90/attention-prefill-sm90.cuh"

namespace elastic::cuda::sm90::detail90 {

void launch_f16(const PrefillKernelParams& kp, int head_dim, Variant variant, int total_rows, int n_head,
                 const DevicePlan& plan, cudaStream_t s) {
    launch_type<cutlass::half_t>(kp, head_dim, variant, total_rows, n_head, plan, s);
}

}  // namespace elastic::cuda::sm90::detail90
