// Element conversions between fp32 and the 16-bit activation types on the device, and a switch that
// turns a runtime DType into a template type (FlashAttention's BOOL_SWITCH habit).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/dtype.h"
#include "core/error.h"

namespace elastic::cuda {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

}  // namespace elastic::cuda

// Runs the statements with `T` bound to the element type of dtype (F32, BF16 or F16).
#define ELASTIC_TYPE_SWITCH(dtype, T, ...)                                                   \
    do {                                                                                      \
        switch (dtype) {                                                                      \
        case ::elastic::DType::F32: { using T = float; __VA_ARGS__; break; }                  \
        case ::elastic::DType::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; }         \
        case ::elastic::DType::F16: { using T = __half; __VA_ARGS__; break; }                 \
        default: ELASTIC_ASSERT_MSG(false, "activation type must be F32, BF16 or F16");       \
        }                                                                                     \
    } while (0)
