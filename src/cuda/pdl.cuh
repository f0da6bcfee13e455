// Programmatic dependent launch (sm_90): a kernel launched with the
// cudaLaunchAttributeProgrammaticStreamSerialization attribute may start while the previous kernel
// of the stream is still running, once that kernel's CTAs have all executed
// pdl_launch_dependents() (or exited); it must call pdl_wait() before it reads anything the
// previous kernel writes. Both are no-ops before sm_90 and in kernels launched without the attribute.
#pragma once
#include <cuda_runtime.h>

namespace elastic::cuda {

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Whether launches ask for it: on where the device is sm_90 or newer, unless ELASTIC_PDL=0 (gemv.cu).
bool pdl_enabled();

}  // namespace elastic::cuda
