// GGUF v3 (also reads v2) reader and writer.
// Reader: mmaps the file, parses header, metadata and tensor infos with bounds checks; every
// problem (bad magic, truncation, absurd counts, offsets past the end, unknown type) is an
// elastic::Error naming the file. Tensor data stays in the map (TensorRef points into it).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped-file.h"
#include "formats/tensor-ref.h"

namespace elastic {

// GGUF metadata value types (numbering from the GGUF spec).
enum class GGUFType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

struct GGUFValue {
    GGUFType type = GGUFType::UINT32;
    // Scalars: integers in i (u64 values above INT64_MAX keep their bits), floats in f, bools in i.
    int64_t i = 0;
    double f = 0;
    std::string s;
    // Arrays: element type and elements (nested arrays allowed).
    GGUFType elem_type = GGUFType::UINT32;
    std::vector<GGUFValue> arr;

    bool is_int() const;     // any integer or bool type
    bool is_float() const;   // FLOAT32/FLOAT64
    std::string to_string(size_t max_elems = 8) const;  // for `elastic inspect`
};

class GGUFFile {
public:
    static std::unique_ptr<GGUFFile> open(const std::string& path);
    // Parse from memory (used by the fuzzer). The bytes must outlive the object.
    static std::unique_ptr<GGUFFile> parse(const uint8_t* data, size_t size, const std::string& what);

    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    const std::string& path() const { return what_; }

    const std::map<std::string, GGUFValue>& metadata() const { return kv_; }
    const GGUFValue* find(const std::string& key) const;
    bool has(const std::string& key) const { return find(key) != nullptr; }
    // Typed getters: throw Error when the key exists with the wrong type; return def when missing.
    std::string get_string(const std::string& key, const std::string& def = "") const;
    int64_t get_int(const std::string& key, int64_t def) const;
    double get_float(const std::string& key, double def) const;  // accepts ints too
    bool get_bool(const std::string& key, bool def) const;
    std::vector<std::string> get_string_array(const std::string& key) const;  // empty if missing
    std::vector<double> get_number_array(const std::string& key) const;       // ints or floats
    // Required variants: throw Error "<file>: missing metadata key X".
    std::string req_string(const std::string& key) const;
    int64_t req_int(const std::string& key) const;

    const std::vector<TensorRef>& tensors() const { return tensors_; }
    const TensorRef* find_tensor(const std::string& name) const;

private:
    std::shared_ptr<MappedFile> file_;  // null when parsed from caller-owned memory
    std::string what_;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    std::map<std::string, GGUFValue> kv_;
    std::vector<TensorRef> tensors_;
    std::map<std::string, size_t> index_;
};

// Writes a GGUF v3 file. Tensor shapes are given row-major (PyTorch order), like TensorRef.
class GGUFWriter {
public:
    void set(const std::string& key, const GGUFValue& v);
    void set_string(const std::string& key, const std::string& v);
    void set_u32(const std::string& key, uint32_t v);
    void set_i32(const std::string& key, int32_t v);
    void set_f32(const std::string& key, float v);
    void set_bool(const std::string& key, bool v);
    void set_string_array(const std::string& key, const std::vector<std::string>& v);
    void set_f32_array(const std::string& key, const std::vector<float>& v);
    void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
    // Copies nbytes (= dtype_nbytes(type, numel)) from data.
    void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape, const void* data);
    void write(const std::string& path) const;  // throws Error on I/O failure

private:
    std::vector<std::pair<std::string, GGUFValue>> kv_;
    struct T { std::string name; DType type; std::vector<int64_t> shape; std::vector<uint8_t> bytes; };
    std::vector<T> tensors_;
};

}  // namespace elastic
