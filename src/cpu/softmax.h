// Base-2 softmax pieces shared by the CPU attention loops (prefill, decode, XAttention).
#pragma once
#include <cstdint>

namespace elastic::cpu {

// 2^x for x <= 0 (x = -inf gives 0; results below 2^-126 flush to 0), relative error ~1e-7.
// Written so that loops over it vectorise (no libm call); shared by the softmax loops here.
inline float exp2_nonpos(float x) {
    // Clamped to [-127, 0] before anything is shifted: -inf and NaN map to -127 (result 0), so the
    // exponent below is never negative (a left shift of a negative value is undefined behaviour).
    const float xc = x >= -127.0f ? (x <= 0.0f ? x : 0.0f) : -127.0f;
    const float n = (xc + 12582912.0f) - 12582912.0f;        // round to nearest (1.5 * 2^23 trick)
    const float f = xc - n;                                   // [-0.5, 0.5]
    // Taylor series of 2^f = e^(f ln2) to degree 7: truncation error < 1e-8 on [-0.5, 0.5].
    float p = 1.5252734e-5f;
    p = p * f + 1.5403530e-4f;
    p = p * f + 1.3333558e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022651e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;           // 2^n; n = -127 gives +0
    return p * __builtin_bit_cast(float, bits);
}

// max(init, x[0..n)).
float row_max(const float* x, int64_t n, float init);
// x[j] = 2^(x[j] - m) in place (m >= every x[j]; -inf entries give 0); returns the sum.
float exp2_row(float* x, int64_t n, float m);

}  // namespace elastic::cpu
