#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"

using namespace elastic;

TEST(DType, Fp16RoundTripAllFinite) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        uint16_t v = uint16_t(h);
        if (((v >> 10) & 0x1f) == 0x1f) continue;  // inf/nan
        EXPECT_EQ(f32_to_fp16(fp16_to_f32(v)), v) << std::hex << h;
    }
}

TEST(DType, Fp16KnownValues) {
    EXPECT_EQ(fp16_to_f32(0x3c00), 1.0f);
    EXPECT_EQ(fp16_to_f32(0xc000), -2.0f);
    EXPECT_EQ(fp16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_EQ(fp16_to_f32(0x7bff), 65504.0f);
    EXPECT_EQ(f32_to_fp16(1.0f + 1.0f / 4096.0f), 0x3c00);  // ties to even (down)
    EXPECT_EQ(f32_to_fp16(1e6f), 0x7c00);                   // overflow to inf
}

TEST(DType, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-100.f, 100.f);
    for (int i = 0; i < 10000; ++i) {
        float x = u(rng);
        float y = bf16_to_f32(f32_to_bf16(x));
        EXPECT_LE(std::fabs(x - y), std::fabs(x) * (1.0f / 256.0f));
    }
}

TEST(DType, BlockSizes) {
    EXPECT_EQ(dtype_nbytes(DType::Q4_1, 64), 40u);
    EXPECT_EQ(dtype_nbytes(DType::Q4_K, 512), 288u);
    EXPECT_EQ(dtype_nbytes(DType::Q6_K, 256), 210u);
    EXPECT_EQ(dtype_nbytes(DType::BF16, 3), 6u);
}
