// Block (de)quantisation for the GGUF types we load, and dot_row, the inner loop of CPU
// matrix-vector products with stored weights. Block layouts and element order are ggml's
// (ggml-quants.c: dequantize_row_q4_0/q4_1/q8_0/q4_K/q6_K). Scalar code is the reference; the AVX2
// paths of dot_row sit beside it and are compared with dequantize+dot in tests/test-quants.cpp.
#include "formats/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <atomic>
#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define ELASTIC_X86 1
#endif

#include "core/error.h"

namespace elastic {

namespace {

constexpr int QK = 32;    // elements per Q8_0/Q4_0/Q4_1 block
constexpr int QK_K = 256;  // elements per K-quant superblock

struct BlockQ8_0 { uint16_t d; int8_t qs[QK]; };
struct BlockQ4_0 { uint16_t d; uint8_t qs[QK / 2]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[QK / 2]; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct BlockQ6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20, "block sizes");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ6_K) == 210, "k-block sizes");

// Blocks in a mapped file are only 2-byte aligned, so they are read through these pointer casts
// (all members are u8/u16 arrays: alignment 2 is all they need).

// ---------------------------------------------------------------------------------------------
// Dequantisation of one block (reference).

void deq_q8_0(const BlockQ8_0& b, float* y) {
    float d = fp16_to_f32(b.d);
    for (int j = 0; j < QK; ++j) y[j] = d * float(b.qs[j]);
}

void deq_q4_0(const BlockQ4_0& b, float* y) {
    float d = fp16_to_f32(b.d);
    for (int j = 0; j < QK / 2; ++j) {
        y[j] = d * float((b.qs[j] & 0xF) - 8);
        y[j + QK / 2] = d * float((b.qs[j] >> 4) - 8);
    }
}

void deq_q4_1(const BlockQ4_1& b, float* y) {
    float d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
    for (int j = 0; j < QK / 2; ++j) {
        y[j] = d * float(b.qs[j] & 0xF) + m;
        y[j + QK / 2] = d * float(b.qs[j] >> 4) + m;
    }
}

// 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes (ggml get_scale_min_k4).
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// 256 elements = 8 sub-blocks of 32; each 64 elements share 32 bytes of qs: low nibbles first.
void deq_q4_k(const BlockQ4_K& b, float* y) {
    float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
    const uint8_t* q = b.qs;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
        uint8_t sc, m;
        scale_min_k4(is, b.scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        scale_min_k4(is + 1, b.scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; ++l) y[j + l] = d1 * float(q[l] & 0xF) - m1;
        for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * float(q[l] >> 4) - m2;
    }
}

// 256 elements = 2 halves of 128; in a half, quarter g (32 elements) takes its low 4 bits from
// ql[l + 32 (g odd)] (low nibble for g < 2, high for g >= 2) and its high 2 bits from bits 2g, 2g+1
// of qh[l]; each 16 elements share one int8 scale. Same values as ggml's loop, written per
// 16-element run so the compiler vectorises it (3x faster than the interleaved form).
template <int G>
inline void deq_q6_k_quarter(const uint8_t* ql, const uint8_t* qh, const int8_t* sc, float d, float* y) {
    const uint8_t* lo = ql + 32 * (G & 1);
    constexpr int shift = G < 2 ? 0 : 4;
    for (int r = 0; r < 2; ++r) {
        float s = d * float(sc[2 * G + r]);
        for (int l = 16 * r; l < 16 * r + 16; ++l) {
            int q = (((lo[l] >> shift) & 0xF) | (((qh[l] >> (2 * G)) & 3) << 4)) - 32;
            y[32 * G + l] = s * float(q);
        }
    }
}

void deq_q6_k(const BlockQ6_K& b, float* y) {
    float d = fp16_to_f32(b.d);
    for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = b.ql + 64 * h;
        const uint8_t* qh = b.qh + 32 * h;
        const int8_t* sc = b.scales + 8 * h;
        float* out = y + 128 * h;
        deq_q6_k_quarter<0>(ql, qh, sc, d, out);
        deq_q6_k_quarter<1>(ql, qh, sc, d, out);
        deq_q6_k_quarter<2>(ql, qh, sc, d, out);
        deq_q6_k_quarter<3>(ql, qh, sc, d, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Round-to-nearest quantisation of one block.

inline int nearest(float x) { return int(std::lrintf(x)); }

void quant_q8_0(const float* x, BlockQ8_0& b) {
    float amax = 0;
    for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
    b.d = f32_to_fp16(amax / 127.0f);
    float d = fp16_to_f32(b.d);
    float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; ++j) b.qs[j] = int8_t(std::clamp(nearest(x[j] * id), -127, 127));
}

// As ggml: the element of largest magnitude maps to -8 exactly, the rest round into [-8, 7].
void quant_q4_0(const float* x, BlockQ4_0& b) {
    float amax = 0, vmax = 0;
    for (int j = 0; j < QK; ++j)
        if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); vmax = x[j]; }
    b.d = f32_to_fp16(vmax / -8.0f);
    float d = fp16_to_f32(b.d);
    float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK / 2; ++j) {
        int q0 = std::clamp(nearest(x[j] * id) + 8, 0, 15);
        int q1 = std::clamp(nearest(x[j + QK / 2] * id) + 8, 0, 15);
        b.qs[j] = uint8_t(q0 | (q1 << 4));
    }
}

void quant_q4_1(const float* x, BlockQ4_1& b) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < QK; ++j) { lo = std::min(lo, x[j]); hi = std::max(hi, x[j]); }
    b.d = f32_to_fp16((hi - lo) / 15.0f);
    b.m = f32_to_fp16(lo);
    float d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
    float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK / 2; ++j) {
        int q0 = std::clamp(nearest((x[j] - m) * id), 0, 15);
        int q1 = std::clamp(nearest((x[j + QK / 2] - m) * id), 0, 15);
        b.qs[j] = uint8_t(q0 | (q1 << 4));
    }
}

// Min-max per 32-element sub-block (offset clamped so the minimum is <= 0, as the format subtracts
// dmin*m with m >= 0); the sub-block scales and mins are then quantised to 6 bits against the
// superblock's d and dmin, and the elements re-quantised with those final values.
void quant_q4_k(const float* x, BlockQ4_K& b) {
    float scale[8], mn[8];
    float max_scale = 0, max_min = 0;
    for (int s = 0; s < 8; ++s) {
        float lo = 0, hi = 0;
        for (int l = 0; l < 32; ++l) { lo = std::min(lo, x[32 * s + l]); hi = std::max(hi, x[32 * s + l]); }
        scale[s] = (hi - lo) / 15.0f;
        mn[s] = -lo;
        max_scale = std::max(max_scale, scale[s]);
        max_min = std::max(max_min, mn[s]);
    }
    b.d = f32_to_fp16(max_scale / 63.0f);
    b.dmin = f32_to_fp16(max_min / 63.0f);
    float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
    uint8_t ls[8], lm[8];
    for (int s = 0; s < 8; ++s) {
        ls[s] = uint8_t(d ? std::clamp(nearest(scale[s] / d), 0, 63) : 0);
        lm[s] = uint8_t(dmin ? std::clamp(nearest(mn[s] / dmin), 0, 63) : 0);
    }
    std::memset(b.scales, 0, sizeof(b.scales));
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            b.scales[j] = ls[j];
            b.scales[j + 4] = lm[j];
        } else {
            b.scales[j + 4] = uint8_t((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            b.scales[j - 4] |= uint8_t((ls[j] >> 4) << 6);
            b.scales[j] |= uint8_t((lm[j] >> 4) << 6);
        }
    }
    uint8_t L[QK_K];
    for (int s = 0; s < 8; ++s) {
        float ds = d * ls[s], ms = dmin * lm[s];
        for (int l = 0; l < 32; ++l)
            L[32 * s + l] = uint8_t(ds ? std::clamp(nearest((x[32 * s + l] + ms) / ds), 0, 15) : 0);
    }
    uint8_t* q = b.qs;
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

// Max-abs per 16-element sub-block: scale = amax/31 so every element lands in [-31, 31]; the
// sub-block scales are int8 against the superblock d.
void quant_q6_k(const float* x, BlockQ6_K& b) {
    float scale[16], max_scale = 0;
    for (int s = 0; s < 16; ++s) {
        float amax = 0;
        for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * s + l]));
        scale[s] = amax / 31.0f;
        max_scale = std::max(max_scale, scale[s]);
    }
    b.d = f32_to_fp16(max_scale / 127.0f);
    float d = fp16_to_f32(b.d);
    uint8_t L[QK_K];
    for (int s = 0; s < 16; ++s) {
        int sc = d ? std::clamp(nearest(scale[s] / d), 0, 127) : 0;
        b.scales[s] = int8_t(sc);
        float ds = d * float(sc);
        for (int l = 0; l < 16; ++l)
            L[16 * s + l] = uint8_t(ds ? std::clamp(nearest(x[16 * s + l] / ds), -32, 31) + 32 : 32);
    }
    uint8_t* ql = b.ql;
    uint8_t* qh = b.qh;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            ql[l] = uint8_t((L[j + l] & 0xF) | ((L[j + l + 64] & 0xF) << 4));
            ql[l + 32] = uint8_t((L[j + l + 32] & 0xF) | ((L[j + l + 96] & 0xF) << 4));
            qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
    }
}

template <typename B, void (*F)(const B&, float*)>
void deq_blocks(const void* src, float* dst, int64_t nb, int bs) {
    const B* b = static_cast<const B*>(src);
    for (int64_t i = 0; i < nb; ++i) F(b[i], dst + i * bs);
}

template <typename B, void (*F)(const float*, B&)>
void quant_blocks(const float* src, void* dst, int64_t nb, int bs) {
    B* b = static_cast<B*>(dst);
    for (int64_t i = 0; i < nb; ++i) F(src + i * bs, b[i]);
}

void check_n(DType t, int64_t n, const char* fn) {
    ELASTIC_ASSERT_MSG(n >= 0 && n % dtype_block_size(t) == 0, fn);
}

// ---------------------------------------------------------------------------------------------
// dot_row: scalar reference kernels.

float dot_f32_scalar(const float* a, const float* x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; ++i) s += a[i] * x[i];
    return s;
}

// Dequantise each block into a stack buffer and dot it: the generic path for every block type.
template <typename B, void (*F)(const B&, float*), int BS>
float dot_blocks_scalar(const void* row, const float* x, int64_t n) {
    const B* b = static_cast<const B*>(row);
    float buf[BS];
    float s = 0;
    for (int64_t i = 0; i < n / BS; ++i) {
        F(b[i], buf);
        s += dot_f32_scalar(buf, x + i * BS, BS);
    }
    return s;
}

#ifdef __AVX2__
// ---------------------------------------------------------------------------------------------
// dot_row: AVX2/FMA kernels. Decode is bandwidth-bound: each kernel reads the row once and keeps
// the arithmetic in 8-wide fp32 FMAs (weights widened in registers, never written back).

// Block scales: one fp16 each, converted with F16C where present (the branchy portable version
// costs more than the 32 FMAs of a Q8_0 block).
inline float h2f(uint16_t h) {
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return fp16_to_f32(h);
#endif
}

inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// 8 int8 / uint8 at p -> 8 floats.
inline __m256 i8x8(const int8_t* p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))); }
inline __m256 u8x8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }

float dot_f32_avx2(const float* a, const float* x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), s0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; ++i) s += a[i] * x[i];
    return s;
}

// 8 half or bf16 values at p -> 8 floats.
inline __m256 f16x8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256 bf16x8(const uint16_t* p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

template <__m256 (*LOAD)(const uint16_t*), float (*CVT)(uint16_t)>
float dot_u16_avx2(const uint16_t* a, const float* x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(LOAD(a + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(LOAD(a + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(LOAD(a + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(LOAD(a + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(LOAD(a + i), _mm256_loadu_ps(x + i), s0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; ++i) s += CVT(a[i]) * x[i];
    return s;
}

float dot_q8_0_avx2(const BlockQ8_0* b, const float* x, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, x += QK) {
        const int8_t* q = b[i].qs;
        __m256 s = _mm256_mul_ps(i8x8(q), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8(q + 8), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8(q + 16), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8(q + 24), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].d)), s, acc);
    }
    return hsum(acc);
}

// Sum over one 32-element nibble block of q[j] * x[j] with q the raw nibble (0..15): low nibbles
// are elements 0..15, high nibbles 16..31. Also returns sum(x) in *sx for the offset terms.
inline __m256 nibble_dot(const uint8_t* qs, const float* x, __m256* sx) {
    __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    __m128i m4 = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_and_si128(raw, m4);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
    __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
    __m256 s = _mm256_mul_ps(u8x8(lo), x0);
    s = _mm256_fmadd_ps(u8x8(_mm_srli_si128(lo, 8)), x1, s);
    s = _mm256_fmadd_ps(u8x8(hi), x2, s);
    s = _mm256_fmadd_ps(u8x8(_mm_srli_si128(hi, 8)), x3, s);
    *sx = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
    return s;
}

// Q4_0: d * sum((q - 8) x) = d * (sum(q x) - 8 sum(x)).
float dot_q4_0_avx2(const BlockQ4_0* b, const float* x, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    const __m256 eight = _mm256_set1_ps(8.0f);
    for (int64_t i = 0; i < nb; ++i, x += QK) {
        __m256 sx;
        __m256 s = nibble_dot(b[i].qs, x, &sx);
        s = _mm256_fnmadd_ps(eight, sx, s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].d)), s, acc);
    }
    return hsum(acc);
}

// Q4_1: sum((d q + m) x) = d sum(q x) + m sum(x).
float dot_q4_1_avx2(const BlockQ4_1* b, const float* x, int64_t nb) {
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, x += QK) {
        __m256 sx;
        __m256 s = nibble_dot(b[i].qs, x, &sx);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].d)), s, acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].m)), sx, accm);
    }
    return hsum(_mm256_add_ps(acc, accm));
}

template <typename B, void (*F)(const B&, float*), int BS>
float dot_blocks_avx2(const void* row, const float* x, int64_t n) {
    const B* b = static_cast<const B*>(row);
    alignas(32) float buf[BS];
    float s = 0;
    for (int64_t i = 0; i < n / BS; ++i) {
        F(b[i], buf);
        s += dot_f32_avx2(buf, x + i * BS, BS);
    }
    return s;
}
#endif  // __AVX2__

}  // namespace

void dequantize(DType t, const void* src, float* dst, int64_t n) {
    check_n(t, n, "dequantize: n must be a multiple of the block size");
    switch (t) {
        case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
        case DType::F16: {
            const uint16_t* h = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(h[i]);
            return;
        }
        case DType::BF16: {
            const uint16_t* h = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
            return;
        }
        case DType::Q8_0: deq_blocks<BlockQ8_0, deq_q8_0>(src, dst, n / QK, QK); return;
        case DType::Q4_0: deq_blocks<BlockQ4_0, deq_q4_0>(src, dst, n / QK, QK); return;
        case DType::Q4_1: deq_blocks<BlockQ4_1, deq_q4_1>(src, dst, n / QK, QK); return;
        case DType::Q4_K: deq_blocks<BlockQ4_K, deq_q4_k>(src, dst, n / QK_K, QK_K); return;
        case DType::Q6_K: deq_blocks<BlockQ6_K, deq_q6_k>(src, dst, n / QK_K, QK_K); return;
        case DType::I32: {
            const int32_t* v = static_cast<const int32_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = float(v[i]);
            return;
        }
        case DType::I64: {
            const int64_t* v = static_cast<const int64_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = float(v[i]);
            return;
        }
        case DType::I8: {
            const int8_t* v = static_cast<const int8_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = float(v[i]);
            return;
        }
        case DType::U8: {
            const uint8_t* v = static_cast<const uint8_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = float(v[i]);
            return;
        }
        case DType::COUNT: break;
    }
    fail("dequantize: unsupported dtype %s", dtype_name(t));
}

void quantize(DType t, const float* src, void* dst, int64_t n) {
    check_n(t, n, "quantize: n must be a multiple of the block size");
    switch (t) {
        case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
        case DType::F16: {
            uint16_t* h = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) h[i] = f32_to_fp16(src[i]);
            return;
        }
        case DType::BF16: {
            uint16_t* h = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]);
            return;
        }
        case DType::Q8_0: quant_blocks<BlockQ8_0, quant_q8_0>(src, dst, n / QK, QK); return;
        case DType::Q4_0: quant_blocks<BlockQ4_0, quant_q4_0>(src, dst, n / QK, QK); return;
        case DType::Q4_1: quant_blocks<BlockQ4_1, quant_q4_1>(src, dst, n / QK, QK); return;
        case DType::Q4_K: quant_blocks<BlockQ4_K, quant_q4_k>(src, dst, n / QK_K, QK_K); return;
        case DType::Q6_K: quant_blocks<BlockQ6_K, quant_q6_k>(src, dst, n / QK_K, QK_K); return;
        default: break;
    }
    fail("quantize: unsupported dtype %s", dtype_name(t));
}

float dot_row_ref(DType t, const void* row, const float* x, int64_t n) {
    check_n(t, n, "dot_row: n must be a multiple of the block size");
    switch (t) {
        case DType::F32: return dot_f32_scalar(static_cast<const float*>(row), x, n);
        case DType::Q8_0: return dot_blocks_scalar<BlockQ8_0, deq_q8_0, QK>(row, x, n);
        case DType::Q4_0: return dot_blocks_scalar<BlockQ4_0, deq_q4_0, QK>(row, x, n);
        case DType::Q4_1: return dot_blocks_scalar<BlockQ4_1, deq_q4_1, QK>(row, x, n);
        case DType::Q4_K: return dot_blocks_scalar<BlockQ4_K, deq_q4_k, QK_K>(row, x, n);
        case DType::Q6_K: return dot_blocks_scalar<BlockQ6_K, deq_q6_k, QK_K>(row, x, n);
        default: break;
    }
    // Plain types: dequantise in chunks and dot.
    float buf[256];
    float s = 0;
    size_t esz = dtype_block_bytes(t);
    for (int64_t i = 0; i < n; i += 256) {
        int64_t m = std::min<int64_t>(256, n - i);
        dequantize(t, static_cast<const uint8_t*>(row) + size_t(i) * esz, buf, m);
        s += dot_f32_scalar(buf, x + i, m);
    }
    return s;
}

float dot_row(DType t, const void* row, const float* x, int64_t n) {
#ifdef __AVX2__
    check_n(t, n, "dot_row: n must be a multiple of the block size");
    switch (t) {
        case DType::F32: return dot_f32_avx2(static_cast<const float*>(row), x, n);
        case DType::F16: return dot_u16_avx2<f16x8, fp16_to_f32>(static_cast<const uint16_t*>(row), x, n);
        case DType::BF16: return dot_u16_avx2<bf16x8, bf16_to_f32>(static_cast<const uint16_t*>(row), x, n);
        case DType::Q8_0: return dot_q8_0_avx2(static_cast<const BlockQ8_0*>(row), x, n / QK);
        case DType::Q4_0: return dot_q4_0_avx2(static_cast<const BlockQ4_0*>(row), x, n / QK);
        case DType::Q4_1: return dot_q4_1_avx2(static_cast<const BlockQ4_1*>(row), x, n / QK);
        case DType::Q4_K: return dot_blocks_avx2<BlockQ4_K, deq_q4_k, QK_K>(row, x, n);
        case DType::Q6_K: return dot_blocks_avx2<BlockQ6_K, deq_q6_k, QK_K>(row, x, n);
        default: break;
    }
#endif
    return dot_row_ref(t, row, x, n);
}

}  // namespace elastic

// ---------------------------------------------------------------------------------------------
// Integer dot products with Q8 activations (decode).

namespace elastic {

void quantize_act_q8(const float* x, int64_t n, Q8Act& a) {
    ELASTIC_ASSERT_MSG(n >= 0 && n % QK == 0, "quantize_act_q8: n must be a multiple of 32");
    a.n = n;
    a.q.resize(size_t(n));
    a.d.resize(size_t(n / QK));
    a.s16.resize(size_t(n / 16));
    for (int64_t b = 0; b < n / QK; ++b) {
        const float* xb = x + b * QK;
        float amax = 0;
        for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(xb[j]));
        const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        a.d[size_t(b)] = d;
        int8_t* q = a.q.data() + b * QK;
        for (int j = 0; j < QK; ++j) q[j] = int8_t(std::lrintf(xb[j] * id));  // |x·id| <= 127
        for (int h = 0; h < 2; ++h) {
            int32_t s = 0;
            for (int j = 0; j < 16; ++j) s += q[16 * h + j];
            a.s16[size_t(2 * b + h)] = s;
        }
    }
}

bool q8_dot_supported(DType t) {
    return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q4_K || t == DType::Q6_K;
}

namespace {

// Σ over 32 (or 16) elements of w·x in integers, then the block's scales: the same formulas as the
// kernels, in plain loops. Weight integers come from the block layouts through the reference
// dequantisers' element order.
int32_t idot(const uint8_t* w, const int8_t* x, int n) {
    int32_t s = 0;
    for (int j = 0; j < n; ++j) s += int32_t(w[j]) * int32_t(x[j]);
    return s;
}

float dot_q8_ref(DType t, const void* row, const Q8Act& a) {
    double sum = 0;  // the order of the fp32 roundings differs from the kernels': keep this exact-ish
    const int8_t* xq = a.q.data();
    switch (t) {
        case DType::Q8_0: {
            const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
            for (int64_t i = 0; i < a.n / QK; ++i) {
                int32_t s = 0;
                for (int j = 0; j < QK; ++j) s += int32_t(b[i].qs[j]) * xq[i * QK + j];
                sum += double(fp16_to_f32(b[i].d)) * a.d[size_t(i)] * s;
            }
            return float(sum);
        }
        case DType::Q4_0:
        case DType::Q4_1: {
            for (int64_t i = 0; i < a.n / QK; ++i) {
                const uint8_t* qs;
                float d, m;
                if (t == DType::Q4_0) {
                    const BlockQ4_0& b = static_cast<const BlockQ4_0*>(row)[i];
                    qs = b.qs;
                    d = fp16_to_f32(b.d);
                    m = -8.0f * d;
                } else {
                    const BlockQ4_1& b = static_cast<const BlockQ4_1*>(row)[i];
                    qs = b.qs;
                    d = fp16_to_f32(b.d);
                    m = fp16_to_f32(b.m);
                }
                uint8_t w[QK];
                for (int j = 0; j < QK / 2; ++j) {
                    w[j] = qs[j] & 0xF;
                    w[j + QK / 2] = qs[j] >> 4;
                }
                const double dx = a.d[size_t(i)];
                sum += double(d) * dx * idot(w, xq + i * QK, QK) + double(m) * dx * a.sum32(i);
            }
            return float(sum);
        }
        case DType::Q4_K: {
            const BlockQ4_K* b = static_cast<const BlockQ4_K*>(row);
            for (int64_t i = 0; i < a.n / QK_K; ++i) {
                const double d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
                for (int s = 0; s < 8; ++s) {
                    uint8_t sc, m, w[32];
                    scale_min_k4(s, b[i].scales, &sc, &m);
                    const uint8_t* q = b[i].qs + 32 * (s / 2);
                    for (int l = 0; l < 32; ++l) w[l] = s % 2 ? q[l] >> 4 : q[l] & 0xF;
                    const int64_t xb = 8 * i + s;
                    const double dx = a.d[size_t(xb)];
                    sum += d * sc * dx * idot(w, xq + xb * QK, 32) - dmin * m * dx * a.sum32(xb);
                }
            }
            return float(sum);
        }
        case DType::Q6_K: {
            const BlockQ6_K* b = static_cast<const BlockQ6_K*>(row);
            for (int64_t i = 0; i < a.n / QK_K; ++i) {
                const double d = fp16_to_f32(b[i].d);
                for (int h = 0; h < 2; ++h)
                    for (int G = 0; G < 4; ++G) {
                        const uint8_t* lo = b[i].ql + 64 * h + 32 * (G & 1);
                        const uint8_t* qh = b[i].qh + 32 * h;
                        uint8_t w[32];
                        for (int l = 0; l < 32; ++l)
                            w[l] = uint8_t(((lo[l] >> (G < 2 ? 0 : 4)) & 0xF) | (((qh[l] >> (2 * G)) & 3) << 4));
                        const int64_t xb = 8 * i + 4 * h + G;
                        const double dx = a.d[size_t(xb)];
                        for (int r = 0; r < 2; ++r) {
                            const int32_t s = idot(w + 16 * r, xq + xb * QK + 16 * r, 16) - 32 * a.sum16(2 * xb + r);
                            sum += d * b[i].scales[8 * h + 2 * G + r] * dx * s;
                        }
                    }
            }
            return float(sum);
        }
        default: break;
    }
    fail("dot_row_q8: unsupported weight type %s", dtype_name(t));
}

#ifdef ELASTIC_X86
#define Q8_NS avx2
#define Q8_TARGET __attribute__((target("avx2,fma,f16c")))
#define Q8_UDOT(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#include "formats/quants-q8-kernels.inc"
#undef Q8_NS
#undef Q8_TARGET
#undef Q8_UDOT
#define Q8_NS vnni
#define Q8_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
#define Q8_UDOT(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))
#include "formats/quants-q8-kernels.inc"
#undef Q8_NS
#undef Q8_TARGET
#undef Q8_UDOT

struct X86Features {
    bool avx2 = false, vnni = false;
};
X86Features detect_x86() {
    X86Features f;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool fma = c & (1u << 12), f16c = c & (1u << 29), osxsave = c & (1u << 27), avx = c & (1u << 28);
    if (!(fma && f16c && osxsave && avx)) return f;
    uint32_t xlo, xhi;
    __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 6) != 6) return f;  // the OS saves XMM and YMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    f.avx2 = b & (1u << 5);
    if (f.avx2 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.vnni = a & (1u << 4);  // AVX-VNNI (VEX)
    return f;
}
#endif

std::atomic<int> g_kernels{-1};

CpuKernels best_kernels() {
#ifdef ELASTIC_X86
    static const X86Features f = detect_x86();
    if (f.vnni) return CpuKernels::AvxVnni;
    if (f.avx2) return CpuKernels::Avx2;
#endif
    return CpuKernels::F32;  // without SIMD integer kernels the fp32 dot_row is the faster path
}

CpuKernels parse_kernels(const std::string& s) {
    if (s == "vnni") return CpuKernels::AvxVnni;
    if (s == "avx2") return CpuKernels::Avx2;
    if (s == "scalar") return CpuKernels::Scalar;
    if (s == "f32") return CpuKernels::F32;
    fail("ELASTIC_CPU_KERNELS=%s: expected vnni, avx2, scalar or f32", s.c_str());
}

}  // namespace

const char* cpu_kernels_name(CpuKernels k) {
    switch (k) {
        case CpuKernels::F32: return "f32";
        case CpuKernels::Scalar: return "scalar";
        case CpuKernels::Avx2: return "avx2";
        case CpuKernels::AvxVnni: return "vnni";
    }
    return "?";
}

bool cpu_kernels_supported(CpuKernels k) {
    switch (k) {
        case CpuKernels::F32:
        case CpuKernels::Scalar: return true;
        case CpuKernels::Avx2: return best_kernels() >= CpuKernels::Avx2;
        case CpuKernels::AvxVnni: return best_kernels() == CpuKernels::AvxVnni;
    }
    return false;
}

void set_cpu_kernels(CpuKernels k) {
    if (!cpu_kernels_supported(k))
        fail("CPU kernels '%s': this processor lacks %s", cpu_kernels_name(k),
             k == CpuKernels::AvxVnni ? "AVX-VNNI" : "AVX2/FMA/F16C");
    g_kernels.store(int(k), std::memory_order_relaxed);
}

CpuKernels cpu_kernels() {
    int k = g_kernels.load(std::memory_order_relaxed);
    if (k >= 0) return CpuKernels(k);
    const char* env = std::getenv("ELASTIC_CPU_KERNELS");
    const CpuKernels want = env && *env ? parse_kernels(env) : best_kernels();
    set_cpu_kernels(want);
    return want;
}

float dot_row_q8_ref(DType t, const void* row, const Q8Act& a) { return dot_q8_ref(t, row, a); }

Q8DotFn q8_dot_kernel() {
    switch (cpu_kernels()) {
#ifdef ELASTIC_X86
        case CpuKernels::AvxVnni: return vnni::dot;
        case CpuKernels::Avx2: return avx2::dot;
#endif
        default: return dot_q8_ref;
    }
}

float dot_row_q8(DType t, const void* row, const Q8Act& a) { return q8_dot_kernel()(t, row, a); }

}  // namespace elastic
