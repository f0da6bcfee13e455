// GGUF reader/writer: round trips of every metadata type and several tensor types, corrupt and
// hostile files (each must give elastic::Error, never a crash), and the real SmolLM2 file when present
// (values cross-checked with the Python `gguf` package 0.19, committed below as constants).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sys/stat.h>

#include "formats/gguf.h"
#include "formats/quants.h"

using namespace elastic;

namespace {

// One file per process: ctest runs the tests of this file as parallel processes, and two of them
// writing and reading one shared path saw each other's half-written file.
std::string tmp_path(const std::string& name) {
    return std::string(ELASTIC_BINARY_DIR) + "/test-gguf-" + name + "-" + std::to_string(getpid()) + ".gguf";
}

std::vector<uint8_t> read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

bool file_exists(const std::string& p) {
    struct stat st;
    return !p.empty() && stat(p.c_str(), &st) == 0;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

// Expect parse to throw elastic::Error whose message contains `needle`.
void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
    try {
        GGUFFile::parse(bytes.data(), bytes.size(), "bad.gguf");
        ADD_FAILURE() << "parsed without error; expected '" << needle << "'";
    } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
        EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
    }
}

// Minimal hand-assembled GGUF byte builder for hostile inputs.
struct Raw {
    std::vector<uint8_t> b;
    template <typename X>
    Raw& put(X x) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(&x);
        b.insert(b.end(), p, p + sizeof(X));
        return *this;
    }
    Raw& str(const std::string& s) {
        put<uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    Raw& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
        b.insert(b.end(), {'G', 'G', 'U', 'F'});
        return put(version).put(n_tensors).put(n_kv);
    }
    Raw& pad(size_t a = 32) {
        b.resize((b.size() + a - 1) / a * a, 0);
        return *this;
    }
};

// One tensor info: name, ggml ne[] (innermost first), type id, offset.
Raw& tensor_info(Raw& r, const std::string& name, std::vector<int64_t> ne, uint32_t type, uint64_t off) {
    r.str(name).put(uint32_t(ne.size()));
    for (int64_t d : ne) r.put(d);
    return r.put(type).put(off);
}

}  // namespace

TEST(Gguf, RoundTripAllMetadataTypes) {
    GGUFWriter w;
    auto sc = [](GGUFType t, int64_t i, double f = 0) {
        GGUFValue v;
        v.type = t;
        v.i = i;
        v.f = f;
        return v;
    };
    w.set("t.u8", sc(GGUFType::UINT8, 250));
    w.set("t.i8", sc(GGUFType::INT8, -100));
    w.set("t.u16", sc(GGUFType::UINT16, 65000));
    w.set("t.i16", sc(GGUFType::INT16, -32000));
    w.set_u32("t.u32", 4000000000u);
    w.set_i32("t.i32", -2000000000);
    w.set("t.u64", sc(GGUFType::UINT64, int64_t(0xFFFFFFFFFFFFFFF0ull)));
    w.set("t.i64", sc(GGUFType::INT64, -(int64_t(1) << 60)));
    w.set_f32("t.f32", 0.1f);
    w.set("t.f64", sc(GGUFType::FLOAT64, 0, 0.1));
    w.set_bool("t.bool", true);
    w.set_string("t.str", "héllo\n");
    w.set_string("t.empty", "");
    w.set_string_array("t.strs", {"a", "", "ccc"});
    w.set_f32_array("t.f32s", {1.5f, -2.25f});
    w.set_i32_array("t.i32s", {});
    GGUFValue nested;
    nested.type = GGUFType::ARRAY;
    nested.elem_type = GGUFType::ARRAY;
    for (int k = 0; k < 3; ++k) {
        GGUFValue inner;
        inner.type = GGUFType::ARRAY;
        inner.elem_type = GGUFType::UINT16;
        for (int j = 0; j <= k; ++j) inner.arr.push_back(sc(GGUFType::UINT16, 10 * k + j));
        nested.arr.push_back(inner);
    }
    w.set("t.nested", nested);
    w.set_u32("t.u32", 7);  // overwrite keeps one entry
    std::string path = tmp_path("meta");
    w.write(path);

    auto g = GGUFFile::open(path);
    EXPECT_EQ(g->version(), 3u);
    EXPECT_EQ(g->alignment(), 32u);
    EXPECT_EQ(g->metadata().size(), 17u);
    EXPECT_EQ(g->get_int("t.u8", 0), 250);
    EXPECT_EQ(g->get_int("t.i8", 0), -100);
    EXPECT_EQ(g->get_int("t.u16", 0), 65000);
    EXPECT_EQ(g->get_int("t.i16", 0), -32000);
    EXPECT_EQ(g->get_int("t.u32", 0), 7);
    EXPECT_EQ(g->get_int("t.i32", 0), -2000000000);
    EXPECT_EQ(uint64_t(g->get_int("t.u64", 0)), 0xFFFFFFFFFFFFFFF0ull);
    EXPECT_EQ(g->get_int("t.i64", 0), -(int64_t(1) << 60));
    EXPECT_EQ(float(g->get_float("t.f32", 0)), 0.1f);
    EXPECT_EQ(g->get_float("t.f64", 0), 0.1);
    EXPECT_EQ(g->get_float("t.i32", 0), -2000000000.0);
    EXPECT_TRUE(g->get_bool("t.bool", false));
    EXPECT_EQ(g->get_string("t.str"), "héllo\n");
    EXPECT_EQ(g->req_string("t.empty"), "");
    EXPECT_EQ(g->get_string_array("t.strs"), (std::vector<std::string>{"a", "", "ccc"}));
    EXPECT_EQ(g->get_number_array("t.f32s"), (std::vector<double>{1.5, -2.25}));
    EXPECT_TRUE(g->get_number_array("t.i32s").empty());
    EXPECT_TRUE(g->has("t.i32s"));
    const GGUFValue* n = g->find("t.nested");
    ASSERT_NE(n, nullptr);
    ASSERT_EQ(n->arr.size(), 3u);
    EXPECT_EQ(n->elem_type, GGUFType::ARRAY);
    EXPECT_EQ(n->arr[2].elem_type, GGUFType::UINT16);
    ASSERT_EQ(n->arr[2].arr.size(), 3u);
    EXPECT_EQ(n->arr[2].arr[1].i, 21);
    EXPECT_EQ(n->to_string(), "[[0], [10, 11], [20, 21, 22]]");

    // Missing keys give defaults; wrong types and missing required keys throw.
    EXPECT_EQ(g->get_int("nope", 5), 5);
    EXPECT_EQ(g->get_string("nope", "d"), "d");
    EXPECT_THROW(g->get_int("t.str", 0), Error);
    EXPECT_THROW(g->get_string("t.u8"), Error);
    EXPECT_THROW(g->get_bool("t.u8", false), Error);
    EXPECT_THROW(g->get_string_array("t.f32s"), Error);
    EXPECT_THROW(g->get_number_array("t.strs"), Error);
    EXPECT_THROW(g->req_int("nope"), Error);
    EXPECT_THROW(g->req_string("nope"), Error);
    std::remove(path.c_str());
}

TEST(Gguf, RoundTripTensors) {
    struct Case { std::string name; DType t; std::vector<int64_t> shape; };
    std::vector<Case> cases = {
        {"a.f32", DType::F32, {3, 5}},       {"b.f16", DType::F16, {7}},         {"c.bf16", DType::BF16, {2, 3, 4}},
        {"d.q8_0", DType::Q8_0, {3, 64}},    {"e.q4_0", DType::Q4_0, {2, 32}},   {"f.q4_1", DType::Q4_1, {1, 2, 2, 96}},
        {"g.q4_k", DType::Q4_K, {2, 256}},   {"h.q6_k", DType::Q6_K, {512}},     {"i.i32", DType::I32, {5}},
    };
    GGUFWriter w;
    w.set_string("general.architecture", "test");
    std::vector<std::vector<uint8_t>> bytes;
    for (size_t k = 0; k < cases.size(); ++k) {
        const Case& c = cases[k];
        int64_t numel = 1;
        for (int64_t d : c.shape) numel *= d;
        std::vector<uint8_t> b(dtype_nbytes(c.t, numel));
        if (c.t == DType::I32) {
            for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 7 + k);
        } else {
            auto x = random_floats(size_t(numel), uint32_t(k + 1));
            quantize(c.t, x.data(), b.data(), numel);
        }
        w.add_tensor(c.name, c.t, c.shape, b.data());
        bytes.push_back(b);
    }
    EXPECT_THROW(w.add_tensor("a.f32", DType::F32, {1}, bytes[0].data()), Error);
    EXPECT_THROW(w.add_tensor("bad", DType::Q8_0, {32, 3}, bytes[0].data()), Error);
    std::string path = tmp_path("tensors");
    w.write(path);

    auto g = GGUFFile::open(path);
    ASSERT_EQ(g->tensors().size(), cases.size());
    for (size_t k = 0; k < cases.size(); ++k) {
        const TensorRef& t = g->tensors()[k];
        EXPECT_EQ(t.name, cases[k].name);
        EXPECT_EQ(t.type, cases[k].t);
        EXPECT_EQ(t.shape, cases[k].shape);
        ASSERT_EQ(t.nbytes, bytes[k].size());
        EXPECT_EQ(std::memcmp(t.data, bytes[k].data(), t.nbytes), 0) << t.name;
        EXPECT_EQ((t.data - g->tensors()[0].data) % 32, 0) << t.name;
        EXPECT_EQ(g->find_tensor(t.name), &t);
    }
    EXPECT_EQ(g->find_tensor("missing"), nullptr);
    std::remove(path.c_str());
}

// A small valid file used by the corruption tests: two KVs (one array) and two tensors.
static std::vector<uint8_t> small_valid_file() {
    GGUFWriter w;
    w.set_string("general.name", "tiny");
    w.set_string_array("tokenizer.ggml.tokens", {"a", "bc"});
    std::vector<float> x = random_floats(64, 3);
    std::vector<uint8_t> q(dtype_nbytes(DType::Q8_0, 64));
    quantize(DType::Q8_0, x.data(), q.data(), 64);
    w.add_tensor("w", DType::Q8_0, {2, 32}, q.data());
    w.add_tensor("b", DType::F32, {3}, x.data());
    std::string path = tmp_path("small");
    w.write(path);
    auto b = read_all(path);
    std::remove(path.c_str());
    return b;
}

TEST(Gguf, EveryTruncationIsAnError) {
    std::vector<uint8_t> full = small_valid_file();
    // Every cut before the end of the last tensor's data must fail (the padding after it may go).
    size_t data_end = 0;
    {
        auto g = GGUFFile::parse(full.data(), full.size(), "ok.gguf");
        for (const TensorRef& t : g->tensors()) data_end = std::max(data_end, size_t(t.data - full.data()) + t.nbytes);
    }
    ASSERT_GT(data_end, 100u);
    for (size_t len = 0; len < data_end; ++len) {
        // Copy to an exact-size heap buffer so ASan catches any read past the cut.
        std::vector<uint8_t> cut(full.begin(), full.begin() + long(len));
        EXPECT_THROW(GGUFFile::parse(cut.data(), cut.size(), "bad.gguf"), Error) << "prefix " << len;
    }
}

TEST(Gguf, BadMagicAndVersion) {
    std::vector<uint8_t> b = small_valid_file();
    b[0] = 'X';
    expect_error(b, "bad magic");
    b = small_valid_file();
    b[4] = 1;
    expect_error(b, "version 1");
    b = small_valid_file();
    b[4] = 2;  // v2 has the same layout
    EXPECT_EQ(GGUFFile::parse(b.data(), b.size(), "v2.gguf")->version(), 2u);
}

TEST(Gguf, HugeCountsFailBeforeAllocating) {
    expect_error(Raw().header(uint64_t(1) << 60, 0).b, "tensors");
    expect_error(Raw().header(0, ~uint64_t(0)).b, "metadata entries");
    expect_error(Raw().header(0, 1).str("k").put(uint32_t(GGUFType::STRING)).put(~uint64_t(0) - 3).b, "string length");
    expect_error(Raw().header(0, 1).put(uint64_t(1) << 62).put(uint64_t(0)).put(uint64_t(0)).b, "string length");
    expect_error(Raw().header(0, 1).str("k").put(uint32_t(GGUFType::ARRAY)).put(uint32_t(GGUFType::UINT64)).put(uint64_t(1) << 61).b,
                 "array of");
    expect_error(Raw().header(0, 1).str("k").put(uint32_t(GGUFType::ARRAY)).put(uint32_t(GGUFType::ARRAY)).put(uint64_t(1) << 40).b,
                 "array of");
    // Deeply nested arrays are refused instead of recursing without bound.
    Raw deep;
    deep.header(0, 1).str("k").put(uint32_t(GGUFType::ARRAY));
    for (int k = 0; k < 100; ++k) deep.put(uint32_t(GGUFType::ARRAY)).put(uint64_t(1));
    expect_error(deep.b, "nested");
}

TEST(Gguf, BadMetadata) {
    expect_error(Raw().header(0, 1).str("k").put(uint32_t(13)).put(uint32_t(0)).b, "unknown value type 13");
    expect_error(Raw().header(0, 2).str("k").put(uint32_t(GGUFType::UINT8)).put(uint8_t(1)).str("k").put(uint32_t(GGUFType::UINT8)).put(uint8_t(2)).b,
                 "duplicate metadata key 'k'");
    expect_error(Raw().header(0, 1).str("general.alignment").put(uint32_t(GGUFType::UINT32)).put(uint32_t(48)).b, "general.alignment");
    expect_error(Raw().header(0, 1).str("general.alignment").put(uint32_t(GGUFType::UINT32)).put(uint32_t(0)).b, "general.alignment");
    // A custom alignment of 64 is honoured for the data section and offsets.
    Raw r;
    r.header(1, 1).str("general.alignment").put(uint32_t(GGUFType::UINT32)).put(uint32_t(64));
    tensor_info(r, "t", {16}, 0, 0).pad(64);
    size_t data_start = r.b.size();
    r.b.resize(data_start + 64, 0);
    auto g = GGUFFile::parse(r.b.data(), r.b.size(), "a64.gguf");
    EXPECT_EQ(g->alignment(), 64u);
    EXPECT_EQ(g->tensors()[0].data, r.b.data() + data_start);
}

TEST(Gguf, BadTensorInfos) {
    auto file = [](const std::string& name, std::vector<int64_t> ne, uint32_t type, uint64_t off, size_t data_bytes) {
        Raw r;
        r.header(1, 0);
        tensor_info(r, name, ne, type, off).pad();
        r.b.resize(r.b.size() + data_bytes, 0);
        return r.b;
    };
    auto ok = file("t", {32, 2}, 8, 0, 68);
    auto g = GGUFFile::parse(ok.data(), ok.size(), "ok.gguf");
    EXPECT_EQ(g->tensors()[0].shape, (std::vector<int64_t>{2, 32}));
    EXPECT_EQ(g->tensors()[0].type, DType::Q8_0);

    expect_error(file("t", {32, 2}, 8, 0, 67), "past the end");
    expect_error(file("t", {32, 2}, 8, 32, 68), "past the end");
    expect_error(file("t", {32, 2}, 8, 16, 200), "not aligned");
    expect_error(file("t", {32, 2}, 8, ~uint64_t(0) - 31, 68), "past the end");
    expect_error(file("t", {32, 2}, 99, 0, 68), "unsupported ggml type id 99");
    expect_error(file("t", {32, 2}, 28, 0, 68), "type id 28 (F64)");
    expect_error(file("t", {16, 2}, 8, 0, 68), "not a multiple of the block size");
    expect_error(file("t", {1, 2, 3, 4, 5}, 0, 0, 480), "5 dimensions");
    expect_error(file("t", {-1}, 0, 0, 32), "negative");
    expect_error(file("t", {int64_t(1) << 32, int64_t(1) << 32}, 0, 0, 32), "overflows");
    expect_error(file("t", {int64_t(1) << 61}, 0, 0, 32), "past the end");

    Raw dup;
    dup.header(2, 0);
    tensor_info(dup, "w", {8}, 0, 0);
    tensor_info(dup, "w", {8}, 0, 32).pad();
    dup.b.resize(dup.b.size() + 64, 0);
    expect_error(dup.b, "duplicate tensor name 'w'");
}

TEST(Gguf, OpenReportsMissingFile) {
    try {
        GGUFFile::open("/nonexistent/x.gguf");
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/x.gguf"), std::string::npos) << e.what();
    }
}

// The fuzz seed corpus is written by the Python gguf package (fuzz/make-gguf-corpus.py), so reading
// it checks us against another writer; the sums are gguf.dequantize's, in float64.
TEST(Gguf, SeedCorpusMatchesPythonGguf) {
    const std::string dir = std::string(ELASTIC_SOURCE_DIR) + "/fuzz/corpus-gguf/";
    auto meta = GGUFFile::open(dir + "meta.gguf");
    EXPECT_EQ(meta->get_string("general.architecture"), "llama");
    EXPECT_EQ(meta->get_int("llama.block_count", 0), 2);
    EXPECT_EQ(meta->get_float("llama.rope.freq_base", 0), 10000.0);
    EXPECT_TRUE(meta->get_bool("general.flag", false));
    EXPECT_EQ(meta->get_int("t.i8", 0), -3);
    EXPECT_EQ(meta->get_int("t.u64", 0), int64_t(1) << 40);
    EXPECT_EQ(meta->get_float("t.f64", 0), 0.125);
    EXPECT_EQ(meta->get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"<s>", "a", "bc"}));
    EXPECT_EQ(meta->get_number_array("tokenizer.ggml.scores"), (std::vector<double>{0.0, -1.5, 2.0}));
    EXPECT_EQ(meta->find("t.nested")->to_string(), "[[1, 2], [3]]");
    auto kq = GGUFFile::open(dir + "kquants.gguf");
    const GGUFFile* files[] = {meta.get(), kq.get()};

    struct Ref { const char* name; DType type; std::vector<int64_t> shape; double sum, abs_sum; };
    const Ref refs[] = {
        {"f32", DType::F32, {2, 4}, 28.0, 28.0},           {"f16", DType::F16, {16}, 0.0, 8.533203125},
        {"q8_0", DType::Q8_0, {2, 32}, 206.5, 2006.5},      {"q4_1", DType::Q4_1, {1, 32}, 126.0, 126.0},
        {"q4_0", DType::Q4_0, {1, 32}, 16.5, 75.5},         {"q4_k", DType::Q4_K, {1, 256}, 38512.5, 38884.0},
        {"q6_k", DType::Q6_K, {1, 256}, 25280.5, 128600.5}, {"bf16", DType::BF16, {4}, -2.0, 8.0},
    };
    for (const Ref& r : refs) {
        SCOPED_TRACE(r.name);
        const TensorRef* t = nullptr;
        for (const GGUFFile* f : files)
            if (!t) t = f->find_tensor(r.name);
        ASSERT_NE(t, nullptr);
        EXPECT_EQ(t->type, r.type);
        EXPECT_EQ(t->shape, r.shape);
        std::vector<float> y(size_t(t->numel()));
        dequantize(t->type, t->data, y.data(), t->numel());
        double s = 0, a = 0;
        for (float v : y) { s += v; a += std::fabs(v); }
        EXPECT_EQ(s, r.sum);
        EXPECT_EQ(a, r.abs_sum);
    }
    const TensorRef* i32 = kq->find_tensor("i32");
    ASSERT_NE(i32, nullptr);
    EXPECT_EQ(i32->type, DType::I32);
    int32_t v[3];
    std::memcpy(v, i32->data, 12);
    EXPECT_EQ(v[1], -2);
}

// ---------------------------------------------------------------------------------------------
// The real model. Reference numbers from the Python gguf package 0.19:
//   r = gguf.GGUFReader(path); d = gguf.dequantize(t.data, t.tensor_type).reshape(-1, ne0)
//   first 8 values of row 0, and float64 sum of row 1 (row 0 for 1-D tensors).

namespace {
std::string model_path() {
    if (const char* e = std::getenv("ELASTIC_MODEL")) return e;
    const std::string p = std::string(ELASTIC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    return file_exists(p) ? p : "";
}

struct RefTensor {
    const char* name;
    DType type;
    int64_t rows, cols;
    float first8[8];
    int64_t sum_row;
    double row_sum;
};

const RefTensor kRef[] = {
    {"token_embd.weight", DType::Q8_0, 49152, 576,
     {-0x1.b468p-4f, 0x1.0e28p-5f, 0x1.8ad8p-5f, -0x1.761p-6f, -0x1.188cp-4f, -0x1.761p-5f, 0x1.4c8p-6f, -0x1.f2cp-4f}, 1,
     0.35922718048095703},
    {"blk.0.attn_q.weight", DType::Q4_1, 576, 576,
     {-0x1.8a8p-4f, 0x1.424p-3f, -0x1.8a8p-4f, -0x1.76p-1f, 0x1.2c08p+0f, -0x1.8a8p-4f, 0x1.f4p-6f, 0x1.545p-1f}, 1,
     -0.71209716796875},
    {"blk.0.attn_norm.weight", DType::F32, 1, 576,
     {0x1.cap-7f, 0x1.86p-6f, -0x1.44p-6f, -0x1.fp-6f, -0x1.42p-6f, -0x1.2p-5f, 0x1.72p-6f, -0x1.48p-6f}, 0, 0.6129436492919922},
    {"blk.29.ffn_down.weight", DType::Q4_1, 576, 1536,
     {-0x1.17ep-2f, 0x1.7d8p-3f, 0x1.7d8p-3f, 0x1.8c8p-5f, 0x1.7d8p-3f, 0x1.7d8p-3f, -0x1.46fp-2f, -0x1.738p-3f}, 1,
     -3.201263427734375},
};
}  // namespace

TEST(Gguf, RealModelSmolLM2) {
    std::string path = model_path();
    if (!file_exists(path)) GTEST_SKIP() << "model not found (set ELASTIC_MODEL or run scripts/get-model.sh)";
    auto g = GGUFFile::open(path);
    EXPECT_EQ(g->version(), 3u);
    EXPECT_EQ(g->get_string("general.architecture"), "llama");
    EXPECT_EQ(g->req_int("llama.block_count"), 30);
    EXPECT_EQ(g->req_int("llama.embedding_length"), 576);
    EXPECT_EQ(g->tensors().size(), 272u);
    const TensorRef* emb = g->find_tensor("token_embd.weight");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(emb->type, DType::Q8_0);
    EXPECT_EQ(emb->shape, (std::vector<int64_t>{49152, 576}));

    for (const RefTensor& ref : kRef) {
        SCOPED_TRACE(ref.name);
        const TensorRef* t = g->find_tensor(ref.name);
        ASSERT_NE(t, nullptr);
        EXPECT_EQ(t->type, ref.type);
        EXPECT_EQ(t->numel(), ref.rows * ref.cols);
        EXPECT_EQ(t->shape.back(), ref.cols);
        size_t row_bytes = dtype_nbytes(t->type, ref.cols);
        std::vector<float> row(size_t(ref.cols));
        dequantize(t->type, t->data, row.data(), ref.cols);
        for (int k = 0; k < 8; ++k) EXPECT_FLOAT_EQ(row[size_t(k)], ref.first8[k]) << k;
        dequantize(t->type, t->data + size_t(ref.sum_row) * row_bytes, row.data(), ref.cols);
        double s = 0;
        for (float v : row) s += v;
        EXPECT_NEAR(s, ref.row_sum, 1e-5);
    }
}
