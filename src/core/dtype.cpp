#include "core/dtype.h"

namespace elastic {

namespace {
struct Info { const char* name; int64_t block; size_t bytes; };
// Block layouts follow ggml: Q8_0 = f16 d + 32 int8; Q4_0 = f16 d + 16 nibble bytes;
// Q4_1 = f16 d, f16 m + 16; Q4_K = 256 elems: f16 d, f16 dmin, 12 scale bytes, 128 nibbles;
// Q6_K = 256 elems: 128 low nibbles, 64 high 2-bit, 16 int8 scales, f16 d.
constexpr Info kInfo[] = {
    {"F32", 1, 4},    {"F16", 1, 2},    {"BF16", 1, 2},   {"Q8_0", 32, 34}, {"Q4_0", 32, 18}, {"Q4_1", 32, 20},
    {"Q4_K", 256, 144}, {"Q6_K", 256, 210}, {"I32", 1, 4}, {"I64", 1, 8}, {"I8", 1, 1}, {"U8", 1, 1},
};
static_assert(sizeof(kInfo) / sizeof(kInfo[0]) == size_t(DType::COUNT), "dtype table");
}  // namespace

const char* dtype_name(DType t) { return kInfo[size_t(t)].name; }
int64_t dtype_block_size(DType t) { return kInfo[size_t(t)].block; }
size_t dtype_block_bytes(DType t) { return kInfo[size_t(t)].bytes; }
bool dtype_is_quantized(DType t) { return kInfo[size_t(t)].block > 1; }

}  // namespace elastic
