// Quant block types: one hand-built block per type with values worked out independently of the
// code under test; quantise->dequantise error within the bound each quantiser guarantees; and
// dot_row / dot_row_ref equal to dequantise + a double-precision dot (fp32 rule: 1e-5 of sum |w x|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/quants.h"

using namespace elastic;

namespace {

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

const DType kAll[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K};

std::mt19937 fresh_rng(uint32_t* seed) {
    *seed = std::random_device{}();
    return std::mt19937(*seed);
}

// Normal data with a per-block offset and scale, so min/max quantisers see both signs and skew.
std::vector<float> skewed_data(std::mt19937& rng, size_t n) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> off(-1.5f, 1.5f), sc(0.01f, 3.f);
    std::vector<float> x(n);
    for (size_t b = 0; b < n; b += 32) {
        float o = off(rng), s = sc(rng);
        for (size_t i = b; i < std::min(n, b + 32); ++i) x[i] = o + s * nd(rng);
    }
    return x;
}

// Two rows of n values quantised as one tensor; `second` is the second row, which starts at a
// block offset that is only 2-byte aligned (as rows inside a GGUF), `deq` its dequantised values.
struct TwoRows {
    std::vector<uint8_t> q;
    const uint8_t* second = nullptr;
    std::vector<float> deq;
    TwoRows(DType t, const std::vector<float>& w, int64_t n) : q(dtype_nbytes(t, 2 * n)), deq(static_cast<size_t>(n)) {
        quantize(t, w.data(), q.data(), 2 * n);
        second = q.data() + dtype_nbytes(t, n);
        dequantize(t, second, deq.data(), n);
    }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Hand-built blocks.

TEST(Quant, Q8_0HandBlock) {
    uint8_t b[34];
    put16(b, 0x3800);  // d = 0.5
    for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(j - 16) * 3);  // q = 3 (j - 16)
    float y[32];
    dequantize(DType::Q8_0, b, y, 32);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 1.5f * float(j - 16)) << j;
    EXPECT_EQ(y[0], -24.0f);
    EXPECT_EQ(y[31], 22.5f);
}

TEST(Quant, Q4_0HandBlock) {
    uint8_t b[18];
    put16(b, 0x4000);  // d = 2
    // byte j: low nibble j (element j), high nibble 15 - j (element j + 16)
    for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
    float y[32];
    dequantize(DType::Q4_0, b, y, 32);
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(y[j], 2.0f * float(j - 8)) << j;
        EXPECT_EQ(y[j + 16], 2.0f * float(7 - j)) << j;
    }
    EXPECT_EQ(y[0], -16.0f);
    EXPECT_EQ(y[16], 14.0f);
}

TEST(Quant, Q4_1HandBlock) {
    uint8_t b[20];
    put16(b, 0x3400);      // d = 0.25
    put16(b + 2, 0xbc00);  // m = -1
    for (int j = 0; j < 16; ++j) b[4 + j] = uint8_t(j | ((j ^ 5) << 4));
    float y[32];
    dequantize(DType::Q4_1, b, y, 32);
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(y[j], 0.25f * float(j) - 1.0f) << j;
        EXPECT_EQ(y[j + 16], 0.25f * float(j ^ 5) - 1.0f) << j;
    }
    EXPECT_EQ(y[15], 2.75f);
    EXPECT_EQ(y[16], 0.25f);  // q = 0 ^ 5 = 5
}

// Q4_K superblock: value e = d * sc[s] * q - dmin * m[s], s = e / 32 the sub-block; each 64
// elements share 32 qs bytes, the even sub-block in the low nibbles, the odd one in the high.
// 12 scale bytes: [0..3] sc[0..3] | top 2 bits of sc[4..7] in bits 6-7; [4..7] m[0..3] | top 2 bits
// of m[4..7]; [8..11] low 4 bits of sc[4..7] | low 4 bits of m[4..7] << 4.
TEST(Quant, Q4_KHandBlock) {
    const uint8_t sc[8] = {1, 2, 3, 63, 17, 32, 48, 5};
    const uint8_t mn[8] = {0, 1, 7, 63, 16, 33, 40, 2};
    uint8_t b[144] = {};
    put16(b, 0x3800);      // d = 0.5
    put16(b + 2, 0x3400);  // dmin = 0.25
    uint8_t* s = b + 4;
    for (int j = 0; j < 4; ++j) {
        s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = uint8_t((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
    uint8_t* qs = b + 16;
    for (int i = 0; i < 128; ++i) qs[i] = uint8_t(i * 7 + 3);
    float y[256];
    dequantize(DType::Q4_K, b, y, 256);
    for (int e = 0; e < 256; ++e) {
        int sub = e / 32, byte = (e / 64) * 32 + e % 32;
        int q = (sub % 2 == 0) ? (qs[byte] & 0xF) : (qs[byte] >> 4);
        EXPECT_EQ(y[e], 0.5f * float(sc[sub] * q) - 0.25f * float(mn[sub])) << e;
    }
    EXPECT_EQ(y[0], 1.5f);     // qs[0] = 3: low 3 -> 0.5*1*3 - 0
    EXPECT_EQ(y[32], -0.25f);  // high nibble of qs[0] = 0 -> 0 - 0.25*1
    EXPECT_EQ(y[200], 254.0f); // sub 6, low nibble of qs[104] = 0xDB -> 11: 0.5*48*11 - 0.25*40
    EXPECT_EQ(y[255], 17.0f);  // sub 7, high nibble of qs[127] = 0x7C -> 7: 0.5*5*7 - 0.25*2
}

// Q6_K superblock: ql[128], qh[64], scales int8[16], d. Element e: half h = e / 128, r = e % 128,
// quarter g = r / 32, l = r % 32. Low 4 bits: ql[64h + l + 32 (g odd)], low nibble for g < 2 else
// high; high 2 bits: bits 2g..2g+1 of qh[32h + l]. q = (low | high << 4) - 32, value d*scales[e/16]*q.
TEST(Quant, Q6_KHandBlock) {
    uint8_t b[210] = {};
    uint8_t* ql = b;
    uint8_t* qh = b + 128;
    int8_t sc[16];
    for (int i = 0; i < 128; ++i) ql[i] = uint8_t(i * 37 + 11);
    for (int i = 0; i < 64; ++i) qh[i] = uint8_t(i * 101 + 7);
    for (int i = 0; i < 16; ++i) sc[i] = int8_t((i % 2 ? -1 : 1) * (3 * i + 1));
    std::memcpy(b + 192, sc, 16);
    put16(b + 208, 0x3800);  // d = 0.5
    float y[256];
    dequantize(DType::Q6_K, b, y, 256);
    for (int e = 0; e < 256; ++e) {
        int h = e / 128, r = e % 128, g = r / 32, l = r % 32;
        uint8_t lb = ql[64 * h + l + (g % 2 ? 32 : 0)];
        int low = g < 2 ? (lb & 0xF) : (lb >> 4);
        int high = (qh[32 * h + l] >> (2 * g)) & 3;
        int q = (low | (high << 4)) - 32;
        EXPECT_EQ(y[e], 0.5f * float(sc[e / 16] * q)) << e;
    }
    // e = 0: ql[0] = 11 -> low 0xB, qh[0] = 7 -> bits 0-1 = 3: q = 0x3B - 32 = 27, scale 1.
    EXPECT_EQ(y[0], 13.5f);
    // e = 255: h 1, g 3, l 31: ql[127] = 4710 & 255 = 0x66 -> high nibble 6; qh[63] = 6370 & 255
    // = 0xE2 -> bits 6-7 = 3: q = 0x36 - 32 = 22, scale sc[15] = -46.
    EXPECT_EQ(y[255], 0.5f * -46.0f * 22.0f);
}

TEST(Quant, PlainTypesHandValues) {
    uint16_t h[4] = {0x3c00, 0xc000, 0x3555, 0x0001};
    float y[4];
    dequantize(DType::F16, h, y, 4);
    EXPECT_EQ(y[0], 1.0f);
    EXPECT_EQ(y[1], -2.0f);
    EXPECT_EQ(y[2], 1365.0f / 4096.0f);  // 0x3555: 2^-2 * (1 + 341/1024)
    EXPECT_EQ(y[3], std::ldexp(1.0f, -24));
    uint16_t bf[2] = {0x3f80, 0xc0a0};
    dequantize(DType::BF16, bf, y, 2);
    EXPECT_EQ(y[0], 1.0f);
    EXPECT_EQ(y[1], -5.0f);
}

// ---------------------------------------------------------------------------------------------
// Quantise -> dequantise error, against the bound each quantiser guarantees.

namespace {

// Largest |x - deq(q(x))| allowed for element i of x (bounds derived in each quantiser's comment:
// half a step, plus what 6-bit / int8 sub-block scales and fp16 block scales can add).
std::vector<float> error_bounds(DType t, const std::vector<float>& x) {
    size_t n = x.size();
    std::vector<float> bound(n);
    const float h = 1.0f / 1024.0f;  // slack for fp16 rounding of the block constants
    auto amax_of = [&](size_t b, size_t len) {
        float a = 0;
        for (size_t i = b; i < b + len; ++i) a = std::max(a, std::fabs(x[i]));
        return a;
    };
    switch (t) {
        case DType::F32: std::fill(bound.begin(), bound.end(), 0.f); break;
        case DType::F16:  // half an ulp; below 2^-14 the subnormal spacing 2^-24
            for (size_t i = 0; i < n; ++i) bound[i] = std::max(std::fabs(x[i]) * (1.0f / 2048.0f), std::ldexp(1.0f, -25));
            break;
        case DType::BF16: for (size_t i = 0; i < n; ++i) bound[i] = std::fabs(x[i]) * (1.0f / 256.0f); break;
        case DType::Q8_0:
            for (size_t b = 0; b < n; b += 32) {
                float a = amax_of(b, 32);
                std::fill(bound.begin() + long(b), bound.begin() + long(b + 32), a / 127.0f * 0.5f + a * h);
            }
            break;
        case DType::Q4_0:  // the far side of the extreme element clamps at 7: up to a whole step
            for (size_t b = 0; b < n; b += 32) {
                float a = amax_of(b, 32);
                std::fill(bound.begin() + long(b), bound.begin() + long(b + 32), a / 8.0f + a * h);
            }
            break;
        case DType::Q4_1:
            for (size_t b = 0; b < n; b += 32) {
                float lo = *std::min_element(x.begin() + long(b), x.begin() + long(b + 32));
                float hi = *std::max_element(x.begin() + long(b), x.begin() + long(b + 32));
                std::fill(bound.begin() + long(b), bound.begin() + long(b + 32), (hi - lo) / 30.0f + amax_of(b, 32) * h);
            }
            break;
        case DType::Q4_K:
            for (size_t b = 0; b < n; b += 256) {
                float scale[8], max_scale = 0, max_min = 0;
                for (int s = 0; s < 8; ++s) {
                    float lo = 0, hi = 0;
                    for (size_t i = b + 32 * s; i < b + 32 * s + 32; ++i) { lo = std::min(lo, x[i]); hi = std::max(hi, x[i]); }
                    scale[s] = (hi - lo) / 15.0f;
                    max_scale = std::max(max_scale, scale[s]);
                    max_min = std::max(max_min, -lo);
                }
                float d = max_scale / 63.0f, dmin = max_min / 63.0f, a = amax_of(b, 256);
                // half a step + 15 elements' worth of the 6-bit scale error + the 6-bit min error
                for (int s = 0; s < 8; ++s)
                    std::fill(bound.begin() + long(b + 32 * s), bound.begin() + long(b + 32 * s + 32),
                              0.5f * scale[s] + 8.25f * d + 0.5f * dmin + 16.0f * a * h);
            }
            break;
        case DType::Q6_K:
            for (size_t b = 0; b < n; b += 256) {
                float scale[16], max_scale = 0;
                for (int s = 0; s < 16; ++s) {
                    scale[s] = amax_of(b + 16 * s, 16) / 31.0f;
                    max_scale = std::max(max_scale, scale[s]);
                }
                float d = max_scale / 127.0f, a = amax_of(b, 256);
                for (int s = 0; s < 16; ++s)
                    std::fill(bound.begin() + long(b + 16 * s), bound.begin() + long(b + 16 * s + 16),
                              0.5f * scale[s] + 16.0f * d + 32.0f * a * h);
            }
            break;
        default: break;
    }
    return bound;
}

}  // namespace

TEST(Quant, QuantizeDequantizeErrorBound) {
    uint32_t seed;
    std::mt19937 rng = fresh_rng(&seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (DType t : kAll) {
        SCOPED_TRACE(dtype_name(t));
        const size_t n = 256 * 16;
        std::vector<float> x = skewed_data(rng, n);
        std::vector<uint8_t> q(dtype_nbytes(t, int64_t(n)), 0xAB);
        quantize(t, x.data(), q.data(), int64_t(n));
        std::vector<float> y(n, NAN);
        dequantize(t, q.data(), y.data(), int64_t(n));
        std::vector<float> bound = error_bounds(t, x);
        double se = 0, sx = 0;
        size_t worst = 0;
        float worst_excess = -1;
        for (size_t i = 0; i < n; ++i) {
            float err = std::fabs(x[i] - y[i]);
            se += double(err) * err;
            sx += double(x[i]) * x[i];
            if (!(err <= bound[i]) && err - bound[i] > worst_excess) { worst_excess = err - bound[i]; worst = i; }
        }
        EXPECT_LT(worst_excess, 0.f) << "worst element " << worst << ": x " << x[worst] << " y " << y[worst] << " bound "
                                     << bound[worst];
        // Overall relative RMS error, for the record.
        RecordProperty(std::string("rel_rms_") + dtype_name(t), std::to_string(std::sqrt(se / sx)));
    }
}

TEST(Quant, QuantizeExactlyRepresentableBlocks) {
    // Values d*q (+m) on the grid come back exactly.
    std::vector<float> x(32);
    for (int j = 0; j < 32; ++j) x[size_t(j)] = 0.25f * float((j * 5) % 16);  // Q4_1 grid: d 0.25, m 0
    std::vector<uint8_t> q(20);
    quantize(DType::Q4_1, x.data(), q.data(), 32);
    std::vector<float> y(32);
    dequantize(DType::Q4_1, q.data(), y.data(), 32);
    EXPECT_EQ(x, y);
    for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j - 16);  // Q8_0 grid: amax 127 gives d = 1
    x[0] = -127;
    q.resize(34);
    quantize(DType::Q8_0, x.data(), q.data(), 32);
    dequantize(DType::Q8_0, q.data(), y.data(), 32);
    EXPECT_EQ(x, y);
}

TEST(Quant, ZeroBlocksStayZero) {
    for (DType t : kAll) {
        std::vector<float> x(256, 0.f), y(256, NAN);
        std::vector<uint8_t> q(dtype_nbytes(t, 256));
        quantize(t, x.data(), q.data(), 256);
        dequantize(t, q.data(), y.data(), 256);
        for (float v : y) ASSERT_EQ(v, 0.f) << dtype_name(t);
    }
}

// ---------------------------------------------------------------------------------------------
// dot_row against dequantise + double dot.

TEST(Quant, DotRowMatchesDequantizedDot) {
    uint32_t seed;
    std::mt19937 rng = fresh_rng(&seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::uniform_int_distribution<int> nblocks(1, 40);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (DType t : kAll) {
        SCOPED_TRACE(dtype_name(t));
        int64_t bs = dtype_block_size(t);
        for (int trial = 0; trial < 25; ++trial) {
            // Plain types: any length (exercises the vector tails); blocks: a random number of them.
            int64_t n = bs == 1 ? int64_t(nblocks(rng)) * 37 + trial : int64_t(nblocks(rng)) * bs;
            if (bs > 1 && trial == 0) n = bs;
            std::vector<float> w = skewed_data(rng, size_t((n + 31) / 32 * 32));
            w.resize(size_t(n));
            std::vector<float> x(static_cast<size_t>(n));
            for (auto& v : x) v = nd(rng);
            std::vector<uint8_t> q(dtype_nbytes(t, n));
            quantize(t, w.data(), q.data(), n);
            std::vector<float> deq(size_t(n), NAN);
            dequantize(t, q.data(), deq.data(), n);
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < n; ++i) {
                ref += double(deq[size_t(i)]) * x[size_t(i)];
                mag += std::fabs(double(deq[size_t(i)]) * x[size_t(i)]);
            }
            double tol = 1e-5 * mag + 1e-6;
            float fast = dot_row(t, q.data(), x.data(), n);
            float slow = dot_row_ref(t, q.data(), x.data(), n);
            EXPECT_NEAR(fast, ref, tol) << "n " << n;
            EXPECT_NEAR(slow, ref, tol) << "n " << n;
        }
    }
}

TEST(Quant, DotRowOnUnalignedRows) {
    // Rows inside a GGUF tensor start at any multiple of the block size (e.g. 34 bytes for Q8_0).
    uint32_t seed;
    std::mt19937 rng = fresh_rng(&seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (DType t : kAll) {
        const int64_t n = 512;
        std::vector<float> w = skewed_data(rng, size_t(2 * n)), x = skewed_data(rng, size_t(n));
        const TwoRows tr(t, w, n);
        const uint8_t* row1 = tr.second;
        const std::vector<float>& deq = tr.deq;
        double mag = 0;
        for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(deq[size_t(i)]) * x[size_t(i)]);
        EXPECT_NEAR(dot_row(t, row1, x.data(), n), dot_row_ref(t, row1, x.data(), n), 2e-5 * mag) << dtype_name(t);
    }
}

// ---------------------------------------------------------------------------------------------
// Integer dot products with Q8 activations (decode).

TEST(QuantQ8, ActivationHandBlock) {
    std::vector<float> x(32, 0.0f);
    x[0] = 2.54f;  // amax: d = 0.02, q = 127
    x[1] = -1.0f;  // -50
    x[2] = 0.011f; // 0.55 -> 1
    x[17] = 0.5f;  // 25 (second half)
    Q8Act a;
    quantize_act_q8(x.data(), 32, a);
    EXPECT_FLOAT_EQ(a.d[0], 0.02f);
    EXPECT_EQ(a.q[0], 127);
    EXPECT_EQ(a.q[1], -50);
    EXPECT_EQ(a.q[2], 1);
    EXPECT_EQ(a.q[17], 25);
    EXPECT_EQ(a.sum16(0), 127 - 50 + 1);
    EXPECT_EQ(a.sum16(1), 25);
    EXPECT_EQ(a.sum32(0), 127 - 50 + 1 + 25);
    std::vector<float> zero(64, 0.0f);
    quantize_act_q8(zero.data(), 64, a);
    EXPECT_EQ(a.d[1], 0.0f);
    EXPECT_EQ(a.sum32(1), 0);
}

// The reference integer dot equals dequantise(w) · dequantise(activation) in double; every kernel
// set the processor has equals the reference (fp32 rule); and the result is within the
// activation's rounding (Σ |w|·d/2) of the fp32 dot_row.
TEST(QuantQ8, DotMatchesDequantizedAndEveryKernelSet) {
    uint32_t seed;
    std::mt19937 rng = fresh_rng(&seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::uniform_int_distribution<int> nblocks(1, 6);
    const CpuKernels saved = cpu_kernels();
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
        SCOPED_TRACE(dtype_name(t));
        ASSERT_TRUE(q8_dot_supported(t));
        for (int trial = 0; trial < 20; ++trial) {
            const int64_t n = int64_t(nblocks(rng)) * 256;
            // Two rows: the second starts at an odd block offset (unaligned, as inside a GGUF).
            std::vector<float> w = skewed_data(rng, size_t(2 * n)), x = skewed_data(rng, size_t(n));
            const TwoRows tr(t, w, n);
            const uint8_t* row = tr.second;
            const std::vector<float>& deq = tr.deq;
            Q8Act a;
            quantize_act_q8(x.data(), n, a);
            double exact = 0, mag = 0, bound = 0;
            for (int64_t i = 0; i < n; ++i) {
                const double xa = double(a.d[size_t(i / 32)]) * a.q[size_t(i)];
                exact += double(deq[size_t(i)]) * xa;
                mag += std::fabs(double(deq[size_t(i)]) * xa);
                bound += std::fabs(double(deq[size_t(i)])) * a.d[size_t(i / 32)] / 2;
            }
            const double tol = 1e-5 * mag + 1e-6;
            const float ref = dot_row_q8_ref(t, row, a);
            EXPECT_NEAR(ref, exact, tol) << "n " << n;
            for (CpuKernels k : {CpuKernels::Scalar, CpuKernels::Avx2, CpuKernels::AvxVnni}) {
                if (!cpu_kernels_supported(k)) continue;
                set_cpu_kernels(k);
                EXPECT_NEAR(dot_row_q8(t, row, a), ref, tol) << cpu_kernels_name(k) << " n " << n;
            }
            EXPECT_NEAR(ref, dot_row(t, row, x.data(), n), bound + tol) << "against fp32, n " << n;
        }
    }
    set_cpu_kernels(saved);
}

TEST(QuantQ8, KernelSetsAreNamedAndChecked) {
    EXPECT_TRUE(cpu_kernels_supported(CpuKernels::Scalar));
    EXPECT_TRUE(cpu_kernels_supported(CpuKernels::F32));
    EXPECT_STREQ(cpu_kernels_name(CpuKernels::AvxVnni), "vnni");
    // VNNI implies AVX2 here: the sets form a ladder.
    if (cpu_kernels_supported(CpuKernels::AvxVnni)) {
        EXPECT_TRUE(cpu_kernels_supported(CpuKernels::Avx2));
    }
    std::printf("CPU kernels: %s (best supported here)\n", cpu_kernels_name(cpu_kernels()));
}
