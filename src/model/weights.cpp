#include "model/weights.h"

#include <cstring>

#include "core/error.h"
#include "formats/quants.h"
#include "formats/tensor-ref.h"

namespace elastic {

size_t ModelWeights::bytes() const {
    size_t n = tok_embd.nbytes() + (output.data == tok_embd.data ? 0 : output.nbytes());
    for (const LayerWeights& l : layers)
        n += l.wq.nbytes() + l.wk.nbytes() + l.wv.nbytes() + l.wo.nbytes() + l.w_gate.nbytes() + l.w_up.nbytes() +
             l.w_down.nbytes();
    return n;
}

Weight weight_from_tensor(const TensorRef& t, int64_t rows, int64_t cols, const std::string& what) {
    if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
        fail("%s: tensor %s has shape %s, expected [%lld, %lld]", what.c_str(), t.name.c_str(), t.shape_str().c_str(),
             (long long)rows, (long long)cols);
    if (cols % dtype_block_size(t.type) != 0)
        fail("%s: tensor %s: row of %lld is not a whole number of %s blocks", what.c_str(), t.name.c_str(),
             (long long)cols, dtype_name(t.type));
    switch (t.type) {
        case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
        case DType::Q4_1: case DType::Q4_K: case DType::Q6_K: break;
        default: fail("%s: tensor %s has unsupported type %s for a weight", what.c_str(), t.name.c_str(), dtype_name(t.type));
    }
    Weight w;
    w.type = t.type;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = dtype_nbytes(t.type, cols);
    if (w.row_bytes * size_t(rows) != t.nbytes)
        fail("%s: tensor %s: %zu bytes stored, %zu expected", what.c_str(), t.name.c_str(), t.nbytes, w.row_bytes * size_t(rows));
    w.data = t.data;
    return w;
}

std::vector<float> vector_from_tensor(const TensorRef& t, int64_t n, const std::string& what) {
    if (t.numel() != n || t.shape.size() != 1)
        fail("%s: tensor %s has shape %s, expected [%lld]", what.c_str(), t.name.c_str(), t.shape_str().c_str(), (long long)n);
    if (n % dtype_block_size(t.type) != 0 || dtype_nbytes(t.type, n) != t.nbytes)
        fail("%s: tensor %s: size does not match its type %s", what.c_str(), t.name.c_str(), dtype_name(t.type));
    std::vector<float> v(static_cast<size_t>(n));
    dequantize(t.type, t.data, v.data(), n);
    return v;
}

namespace {
// GGUF row h*hd + 2*i + j holds HF row h*hd + j*hd/2 + i  (i < hd/2, j in {0,1}).
Weight reorder_qk_rows(const Weight& w, int n_heads, int head_dim, bool to_hf) {
    ELASTIC_ASSERT(w.rows == int64_t(n_heads) * head_dim);
    Weight out = w;
    out.owned = std::make_shared<std::vector<uint8_t>>(w.nbytes());
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; ++h)
        for (int i = 0; i < half; ++i)
            for (int j = 0; j < 2; ++j) {
                int64_t gguf_row = int64_t(h) * head_dim + 2 * i + j;
                int64_t hf_row = int64_t(h) * head_dim + j * half + i;
                int64_t src = to_hf ? gguf_row : hf_row, dst = to_hf ? hf_row : gguf_row;
                std::memcpy(out.owned->data() + size_t(dst) * w.row_bytes, w.row(src), w.row_bytes);
            }
    out.data = out.owned->data();
    return out;
}
}  // namespace

Weight unpermute_qk_rows(const Weight& w, int n_heads, int head_dim) { return reorder_qk_rows(w, n_heads, head_dim, true); }
Weight permute_qk_rows(const Weight& w, int n_heads, int head_dim) { return reorder_qk_rows(w, n_heads, head_dim, false); }

std::vector<float> weight_to_f32(const Weight& w) {
    std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
    for (int64_t r = 0; r < w.rows; ++r) dequantize(w.type, w.row(r), out.data() + r * w.cols, w.cols);
    return out;
}

Weight weight_rows(const Weight& w, int64_t r0, int64_t n) {
    ELASTIC_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= w.rows);
    Weight out = w;
    out.rows = n;
    out.data = w.data + size_t(r0) * w.row_bytes;
    return out;
}

Weight weight_cols(const Weight& w, int64_t c0, int64_t n) {
    ELASTIC_ASSERT(c0 >= 0 && n > 0 && c0 + n <= w.cols);
    const int64_t blk = dtype_block_size(w.type);
    const bool aligned = c0 % blk == 0 && n % blk == 0;
    Weight out = w;
    out.type = aligned ? w.type : DType::F32;
    out.cols = n;
    out.row_bytes = dtype_nbytes(out.type, n);
    out.owned = std::make_shared<std::vector<uint8_t>>(out.row_bytes * size_t(w.rows));
    std::vector<float> row;
    if (!aligned) row.resize(size_t(w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
        uint8_t* dst = out.owned->data() + size_t(r) * out.row_bytes;
        if (aligned) {
            std::memcpy(dst, w.row(r) + dtype_nbytes(w.type, c0), out.row_bytes);
        } else {
            dequantize(w.type, w.row(r), row.data(), w.cols);
            std::memcpy(dst, row.data() + c0, out.row_bytes);
        }
    }
    out.data = out.owned->data();
    return out;
}

}  // namespace elastic
