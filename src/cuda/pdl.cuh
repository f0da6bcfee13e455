// Programmatic dependent launch (sm_90): a kernel launched with the
// cudaLaunchAttributeProgrammaticStreamSerialization attribute may start while the previous kernel
// of the stream is still running, once that kernel's CTAs have all executed
// pdl_launch_dependents() (or exited); it must call pdl_wait() before it reads anything the
// previous kernel writes. Both are no-ops before sm_90 and in kernels launched without the attribute.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "cuda/cuda-check.h"

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

// Whether launches ask for it: opt-in, ELASTIC_PDL=1, where the device is sm_90 or newer (gemv.cu).
// History (docs/performance.md, "The regression's cause"): on by default from 2026-12-03 (+3.8 %
// decode tok/s, GEMVs only); then the q/k norms + RoPE and cache-append kernels were launched this way too
// and the decode kernel let its successor be scheduled at its entry, and an H200 run (2026-12-06)
// put the 8B shape's decode at 32K at 137.8 tok/s against 154.4 without programmatic launch, so it
// was made opt-in. The next run (H100, 2026-12-06, 23:56 UTC) found the cause: the decode kernel's
// early trigger (122.9 tok/s off, 115.8 with it, 124.8 with the GEMVs alone). The decode kernel
// now triggers at its exit by default (attention-decode.cu, ELASTIC_DECODE_TRIGGER). Programmatic
// launch stays opt-in until the CUDA tests have run with it in this form (they passed with the
// GEMVs, the small kernels and the entry trigger all on, 2026-12-06; no device time was left to run
// them with the GEMVs alone).
bool pdl_enabled();
// The same for the decode step's small kernels between the QKV product and the attention (the q/k
// norms + RoPE with the cache append, or the two apart): ELASTIC_DECODE_SMALL_PDL=1 as well as
// pdl_enabled(); not measured alone since they were fused.
bool small_pdl_enabled();

// kernel<<<grid, block, smem, s>>>(args...), with the programmatic attribute where pdl_enabled().
// The kernel must call pdl_wait() before it reads what earlier kernels of the stream write.
template <typename... KArgs, typename... Args>
void launch_pdl_if(bool on, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                   Args&&... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = on ? 1 : 0;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args&&... args) {
    launch_pdl_if(pdl_enabled(), kernel, grid, block, smem, s, std::forward<Args>(args)...);
}

}  // namespace elastic::cuda
