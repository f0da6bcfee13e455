// GGUF v2/v3 reader (bounds-checked parse of an mmapped file) and v3 writer.
// Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md. Every count read from the file is
// checked against the bytes that remain before anything is allocated for it, so a hostile header
// cannot make us reserve gigabytes; every problem is one elastic::Error line naming the file.
#include "formats/gguf.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace elastic {

namespace {

constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;  // nested arrays deeper than this are certainly hostile

const char* type_name(GGUFType t) {
    switch (t) {
        case GGUFType::UINT8: return "u8";
        case GGUFType::INT8: return "i8";
        case GGUFType::UINT16: return "u16";
        case GGUFType::INT16: return "i16";
        case GGUFType::UINT32: return "u32";
        case GGUFType::INT32: return "i32";
        case GGUFType::FLOAT32: return "f32";
        case GGUFType::BOOL: return "bool";
        case GGUFType::STRING: return "string";
        case GGUFType::ARRAY: return "array";
        case GGUFType::UINT64: return "u64";
        case GGUFType::INT64: return "i64";
        case GGUFType::FLOAT64: return "f64";
    }
    return "?";
}

bool valid_type(uint32_t t) { return t <= uint32_t(GGUFType::FLOAT64); }

// Smallest number of bytes one value of type t can occupy in the file (for count sanity checks).
size_t min_value_bytes(GGUFType t) {
    switch (t) {
        case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::BOOL: return 1;
        case GGUFType::UINT16: case GGUFType::INT16: return 2;
        case GGUFType::UINT32: case GGUFType::INT32: case GGUFType::FLOAT32: return 4;
        case GGUFType::UINT64: case GGUFType::INT64: case GGUFType::FLOAT64: return 8;
        case GGUFType::STRING: return 8;      // length
        case GGUFType::ARRAY: return 4 + 8;   // element type + count
    }
    return 1;
}

// ggml type id -> DType. Returns false for ids we do not (or cannot) represent.
bool dtype_from_ggml(uint32_t id, DType* out) {
    switch (id) {
        case 0: *out = DType::F32; return true;
        case 1: *out = DType::F16; return true;
        case 2: *out = DType::Q4_0; return true;
        case 3: *out = DType::Q4_1; return true;
        case 8: *out = DType::Q8_0; return true;
        case 12: *out = DType::Q4_K; return true;
        case 14: *out = DType::Q6_K; return true;
        case 24: *out = DType::I8; return true;
        case 26: *out = DType::I32; return true;
        case 27: *out = DType::I64; return true;
        case 30: *out = DType::BF16; return true;
        default: return false;
    }
}

const char* ggml_type_name(uint32_t id) {
    switch (id) {
        case 6: return " (Q5_0)";
        case 7: return " (Q5_1)";
        case 9: return " (Q8_1)";
        case 10: return " (Q2_K)";
        case 11: return " (Q3_K)";
        case 13: return " (Q5_K)";
        case 15: return " (Q8_K)";
        case 25: return " (I16)";
        case 28: return " (F64)";
        default: return "";
    }
}

int64_t ggml_type_id(DType t) {
    switch (t) {
        case DType::F32: return 0;
        case DType::F16: return 1;
        case DType::Q4_0: return 2;
        case DType::Q4_1: return 3;
        case DType::Q8_0: return 8;
        case DType::Q4_K: return 12;
        case DType::Q6_K: return 14;
        case DType::I8: return 24;
        case DType::I32: return 26;
        case DType::I64: return 27;
        case DType::BF16: return 30;
        default: return -1;
    }
}

class Parser {
public:
    Parser(const uint8_t* data, size_t size, const std::string& what) : data_(data), r_(data, size, what), what_(what) {}

    std::string read_string(const char* ctx) {
        uint64_t n = r_.read<uint64_t>();
        if (n > r_.remaining())
            fail("%s: %s string length %" PRIu64 " at offset %zu runs past the end of the file (%zu bytes)",
                 what_.c_str(), ctx, n, r_.pos() - 8, r_.size());
        return std::string(r_.string(size_t(n)));
    }

    GGUFValue read_value(GGUFType t, int depth) {
        GGUFValue v;
        v.type = t;
        switch (t) {
            case GGUFType::UINT8: v.i = r_.read<uint8_t>(); break;
            case GGUFType::INT8: v.i = r_.read<int8_t>(); break;
            case GGUFType::UINT16: v.i = r_.read<uint16_t>(); break;
            case GGUFType::INT16: v.i = r_.read<int16_t>(); break;
            case GGUFType::UINT32: v.i = r_.read<uint32_t>(); break;
            case GGUFType::INT32: v.i = r_.read<int32_t>(); break;
            case GGUFType::UINT64: v.i = int64_t(r_.read<uint64_t>()); break;
            case GGUFType::INT64: v.i = r_.read<int64_t>(); break;
            case GGUFType::FLOAT32: v.f = r_.read<float>(); break;
            case GGUFType::FLOAT64: v.f = r_.read<double>(); break;
            case GGUFType::BOOL: v.i = r_.read<uint8_t>() != 0; break;
            case GGUFType::STRING: v.s = read_string("value"); break;
            case GGUFType::ARRAY: {
                if (depth >= kMaxArrayDepth) fail("%s: arrays nested deeper than %d at offset %zu", what_.c_str(), kMaxArrayDepth, r_.pos());
                uint32_t et = r_.read<uint32_t>();
                if (!valid_type(et)) fail("%s: unknown array element type %u at offset %zu", what_.c_str(), et, r_.pos() - 4);
                v.elem_type = GGUFType(et);
                uint64_t n = r_.read<uint64_t>();
                if (n > r_.remaining() / min_value_bytes(v.elem_type))
                    fail("%s: array of %" PRIu64 " %s elements at offset %zu cannot fit in the %zu bytes left",
                         what_.c_str(), n, type_name(v.elem_type), r_.pos() - 12, r_.remaining());
                v.arr.reserve(size_t(n));
                for (uint64_t k = 0; k < n; ++k) v.arr.push_back(read_value(v.elem_type, depth + 1));
                break;
            }
        }
        return v;
    }

    void parse(uint32_t* version, size_t* alignment, std::map<std::string, GGUFValue>* kv, std::vector<TensorRef>* tensors,
               std::map<std::string, size_t>* index) {
        if (r_.size() < 4 || std::memcmp(r_.bytes(4), "GGUF", 4) != 0) fail("%s: not a GGUF file (bad magic)", what_.c_str());
        *version = r_.read<uint32_t>();
        if (*version != 2 && *version != 3) fail("%s: unsupported GGUF version %u (need 2 or 3)", what_.c_str(), *version);
        uint64_t n_tensors = r_.read<uint64_t>();
        uint64_t n_kv = r_.read<uint64_t>();
        // Minimum sizes: a KV is key length + type + 1 value byte; a tensor info is name length + n_dims
        // + type + offset. Together they must fit in what is left.
        const uint64_t min_kv = 8 + 4 + 1, min_tensor = 8 + 4 + 4 + 8;
        if (n_kv > r_.remaining() / min_kv)
            fail("%s: header claims %" PRIu64 " metadata entries, more than the file can hold", what_.c_str(), n_kv);
        if (n_tensors > r_.remaining() / min_tensor)
            fail("%s: header claims %" PRIu64 " tensors, more than the file can hold", what_.c_str(), n_tensors);

        for (uint64_t k = 0; k < n_kv; ++k) {
            size_t at = r_.pos();
            std::string key = read_string("key");
            uint32_t t = r_.read<uint32_t>();
            if (!valid_type(t)) fail("%s: metadata key '%s' has unknown value type %u", what_.c_str(), key.c_str(), t);
            GGUFValue v = read_value(GGUFType(t), 0);
            if (kv->count(key)) fail("%s: duplicate metadata key '%s' at offset %zu", what_.c_str(), key.c_str(), at);
            kv->emplace(std::move(key), std::move(v));
        }

        *alignment = 32;
        auto al = kv->find("general.alignment");
        if (al != kv->end()) {
            const GGUFValue& v = al->second;
            // Below 8, tensor data (and block scales) could sit at addresses their element types
            // cannot be read from; no real file does that (ggml writes 32).
            if (!v.is_int() || v.type == GGUFType::BOOL || v.i < 8 || v.i > (1 << 24) || (v.i & (v.i - 1)) != 0)
                fail("%s: general.alignment must be a power of two between 8 and 2^24, got %s", what_.c_str(), v.to_string().c_str());
            *alignment = size_t(v.i);
        }

        std::vector<uint64_t> offsets;
        tensors->reserve(size_t(n_tensors));
        offsets.reserve(size_t(n_tensors));
        for (uint64_t k = 0; k < n_tensors; ++k) {
            TensorRef t;
            t.name = read_string("tensor name");
            const char* nm = t.name.c_str();
            uint32_t n_dims = r_.read<uint32_t>();
            if (n_dims > kMaxDims) fail("%s: tensor '%s' has %u dimensions (at most %u)", what_.c_str(), nm, n_dims, kMaxDims);
            int64_t ne[kMaxDims] = {1, 1, 1, 1};
            int64_t numel = 1;
            for (uint32_t d = 0; d < n_dims; ++d) {
                ne[d] = r_.read<int64_t>();
                if (ne[d] < 0) fail("%s: tensor '%s' has negative dimension %" PRId64, what_.c_str(), nm, ne[d]);
                if (ne[d] != 0 && numel > INT64_MAX / ne[d])
                    fail("%s: tensor '%s' element count overflows", what_.c_str(), nm);
                numel *= ne[d];
            }
            uint32_t type_id = r_.read<uint32_t>();
            if (!dtype_from_ggml(type_id, &t.type))
                fail("%s: tensor '%s' has unsupported ggml type id %u%s", what_.c_str(), nm, type_id, ggml_type_name(type_id));
            int64_t bs = dtype_block_size(t.type);
            if (ne[0] % bs != 0)
                fail("%s: tensor '%s' (%s) row length %" PRId64 " is not a multiple of the block size %" PRId64, what_.c_str(), nm,
                     dtype_name(t.type), ne[0], bs);
            uint64_t off = r_.read<uint64_t>();
            if (off % *alignment != 0)
                fail("%s: tensor '%s' data offset %" PRIu64 " is not aligned to %zu", what_.c_str(), nm, off, *alignment);
            // numel / bs * block_bytes cannot overflow size_t by much: numel < 2^63 and block_bytes/bs <= 8.
            if (uint64_t(numel / bs) > uint64_t(SIZE_MAX) / dtype_block_bytes(t.type))
                fail("%s: tensor '%s' byte size overflows", what_.c_str(), nm);
            t.nbytes = dtype_nbytes(t.type, numel);
            for (uint32_t d = 0; d < n_dims; ++d) t.shape.push_back(ne[n_dims - 1 - d]);
            if (index->count(t.name)) fail("%s: duplicate tensor name '%s'", what_.c_str(), nm);
            index->emplace(t.name, tensors->size());
            tensors->push_back(std::move(t));
            offsets.push_back(off);
        }

        // Data section starts at the next multiple of the alignment.
        size_t pos = r_.pos();
        size_t data_start = pos + (*alignment - pos % *alignment) % *alignment;
        for (size_t k = 0; k < tensors->size(); ++k) {
            TensorRef& t = (*tensors)[k];
            uint64_t off = offsets[k];
            if (data_start > r_.size() || off > r_.size() - data_start || t.nbytes > r_.size() - data_start - off)
                fail("%s: tensor '%s' data [%" PRIu64 ", +%zu) at data offset %zu lies past the end of the file (%zu bytes)",
                     what_.c_str(), t.name.c_str(), off, t.nbytes, data_start, r_.size());
            t.data = data_ + data_start + size_t(off);
        }
    }

private:
    const uint8_t* data_;
    ByteReader r_;
    const std::string& what_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// GGUFValue

bool GGUFValue::is_int() const {
    switch (type) {
        case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::UINT16: case GGUFType::INT16: case GGUFType::UINT32:
        case GGUFType::INT32: case GGUFType::UINT64: case GGUFType::INT64: case GGUFType::BOOL: return true;
        default: return false;
    }
}

bool GGUFValue::is_float() const { return type == GGUFType::FLOAT32 || type == GGUFType::FLOAT64; }

std::string GGUFValue::to_string(size_t max_elems) const {
    switch (type) {
        case GGUFType::BOOL: return i ? "true" : "false";
        case GGUFType::UINT64: return std::to_string(uint64_t(i));
        case GGUFType::FLOAT32: case GGUFType::FLOAT64: return strprintf("%g", f);
        case GGUFType::STRING: {
            const size_t max_chars = 60;
            if (s.size() <= max_chars) return "\"" + s + "\"";
            return "\"" + s.substr(0, max_chars) + "...\"";
        }
        case GGUFType::ARRAY: {
            std::string out = "[";
            for (size_t k = 0; k < arr.size() && k < max_elems; ++k) {
                if (k) out += ", ";
                out += arr[k].to_string(max_elems);
            }
            if (arr.size() > max_elems) out += strprintf(", ... (%zu %s)", arr.size(), type_name(elem_type));
            return out + "]";
        }
        default: return std::to_string(i);
    }
}

// ---------------------------------------------------------------------------------------------
// GGUFFile

std::unique_ptr<GGUFFile> GGUFFile::open(const std::string& path) {
    auto file = MappedFile::open(path);
    auto g = parse(file->data(), file->size(), path);
    g->file_ = std::move(file);
    return g;
}

std::unique_ptr<GGUFFile> GGUFFile::parse(const uint8_t* data, size_t size, const std::string& what) {
    std::unique_ptr<GGUFFile> g(new GGUFFile());
    g->what_ = what;
    Parser p(data, size, g->what_);
    p.parse(&g->version_, &g->alignment_, &g->kv_, &g->tensors_, &g->index_);
    return g;
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
}

const TensorRef* GGUFFile::find_tensor(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
[[noreturn]] void wrong_type(const std::string& what, const std::string& key, const GGUFValue& v, const char* want) {
    fail("%s: metadata key '%s' is %s, expected %s", what.c_str(), key.c_str(), type_name(v.type), want);
}
}  // namespace

std::string GGUFFile::get_string(const std::string& key, const std::string& def) const {
    const GGUFValue* v = find(key);
    if (!v) return def;
    if (v->type != GGUFType::STRING) wrong_type(what_, key, *v, "string");
    return v->s;
}

int64_t GGUFFile::get_int(const std::string& key, int64_t def) const {
    const GGUFValue* v = find(key);
    if (!v) return def;
    if (!v->is_int() || v->type == GGUFType::BOOL) wrong_type(what_, key, *v, "an integer");
    return v->i;
}

double GGUFFile::get_float(const std::string& key, double def) const {
    const GGUFValue* v = find(key);
    if (!v) return def;
    if (v->is_float()) return v->f;
    if (v->type == GGUFType::UINT64) return double(uint64_t(v->i));
    if (v->is_int() && v->type != GGUFType::BOOL) return double(v->i);
    wrong_type(what_, key, *v, "a number");
}

bool GGUFFile::get_bool(const std::string& key, bool def) const {
    const GGUFValue* v = find(key);
    if (!v) return def;
    if (v->type != GGUFType::BOOL) wrong_type(what_, key, *v, "bool");
    return v->i != 0;
}

std::vector<std::string> GGUFFile::get_string_array(const std::string& key) const {
    std::vector<std::string> out;
    const GGUFValue* v = find(key);
    if (!v) return out;
    if (v->type != GGUFType::ARRAY || v->elem_type != GGUFType::STRING) wrong_type(what_, key, *v, "an array of strings");
    out.reserve(v->arr.size());
    for (const GGUFValue& e : v->arr) out.push_back(e.s);
    return out;
}

std::vector<double> GGUFFile::get_number_array(const std::string& key) const {
    std::vector<double> out;
    const GGUFValue* v = find(key);
    if (!v) return out;
    GGUFValue probe;
    probe.type = v->elem_type;
    if (v->type != GGUFType::ARRAY || !(probe.is_int() || probe.is_float())) wrong_type(what_, key, *v, "an array of numbers");
    out.reserve(v->arr.size());
    for (const GGUFValue& e : v->arr) {
        if (e.is_float()) out.push_back(e.f);
        else if (e.type == GGUFType::UINT64) out.push_back(double(uint64_t(e.i)));
        else out.push_back(double(e.i));
    }
    return out;
}

std::string GGUFFile::req_string(const std::string& key) const {
    if (!has(key)) fail("%s: missing metadata key %s", what_.c_str(), key.c_str());
    return get_string(key);
}

int64_t GGUFFile::req_int(const std::string& key) const {
    if (!has(key)) fail("%s: missing metadata key %s", what_.c_str(), key.c_str());
    return get_int(key, 0);
}

// ---------------------------------------------------------------------------------------------
// GGUFWriter

void GGUFWriter::set(const std::string& key, const GGUFValue& v) {
    for (auto& kv : kv_) {
        if (kv.first == key) {
            kv.second = v;
            return;
        }
    }
    kv_.emplace_back(key, v);
}

namespace {
GGUFValue scalar(GGUFType t, int64_t i, double f = 0) {
    GGUFValue v;
    v.type = t;
    v.i = i;
    v.f = f;
    return v;
}
}  // namespace

void GGUFWriter::set_string(const std::string& key, const std::string& s) {
    GGUFValue v;
    v.type = GGUFType::STRING;
    v.s = s;
    set(key, v);
}
void GGUFWriter::set_u32(const std::string& key, uint32_t x) { set(key, scalar(GGUFType::UINT32, x)); }
void GGUFWriter::set_i32(const std::string& key, int32_t x) { set(key, scalar(GGUFType::INT32, x)); }
void GGUFWriter::set_f32(const std::string& key, float x) { set(key, scalar(GGUFType::FLOAT32, 0, x)); }
void GGUFWriter::set_bool(const std::string& key, bool x) { set(key, scalar(GGUFType::BOOL, x ? 1 : 0)); }

void GGUFWriter::set_string_array(const std::string& key, const std::vector<std::string>& xs) {
    GGUFValue v;
    v.type = GGUFType::ARRAY;
    v.elem_type = GGUFType::STRING;
    for (const auto& s : xs) {
        GGUFValue e;
        e.type = GGUFType::STRING;
        e.s = s;
        v.arr.push_back(std::move(e));
    }
    set(key, v);
}

void GGUFWriter::set_f32_array(const std::string& key, const std::vector<float>& xs) {
    GGUFValue v;
    v.type = GGUFType::ARRAY;
    v.elem_type = GGUFType::FLOAT32;
    for (float x : xs) v.arr.push_back(scalar(GGUFType::FLOAT32, 0, x));
    set(key, v);
}

void GGUFWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& xs) {
    GGUFValue v;
    v.type = GGUFType::ARRAY;
    v.elem_type = GGUFType::INT32;
    for (int32_t x : xs) v.arr.push_back(scalar(GGUFType::INT32, x));
    set(key, v);
}

void GGUFWriter::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape, const void* data) {
    if (ggml_type_id(type) < 0) fail("GGUF writer: tensor '%s': dtype %s has no GGUF type", name.c_str(), dtype_name(type));
    if (shape.size() > kMaxDims) fail("GGUF writer: tensor '%s' has %zu dimensions (at most %u)", name.c_str(), shape.size(), kMaxDims);
    for (const T& t : tensors_)
        if (t.name == name) fail("GGUF writer: duplicate tensor name '%s'", name.c_str());
    int64_t numel = 1;
    for (int64_t d : shape) {
        if (d < 0) fail("GGUF writer: tensor '%s' has a negative dimension", name.c_str());
        numel *= d;
    }
    int64_t row = shape.empty() ? 1 : shape.back();
    if (row % dtype_block_size(type) != 0)
        fail("GGUF writer: tensor '%s' (%s) row length %" PRId64 " is not a multiple of the block size %" PRId64, name.c_str(),
             dtype_name(type), row, dtype_block_size(type));
    size_t nbytes = dtype_nbytes(type, numel);
    const uint8_t* p = static_cast<const uint8_t*>(data);
    tensors_.push_back(T{name, type, shape, std::vector<uint8_t>(p, p + nbytes)});
}

namespace {

constexpr size_t kWriteAlignment = 32;

struct Out {
    std::vector<uint8_t> b;
    template <typename X>
    void put(X x) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(&x);
        b.insert(b.end(), p, p + sizeof(X));
    }
    void str(const std::string& s) {
        put<uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
    }
    void pad() { b.resize(b.size() + (kWriteAlignment - b.size() % kWriteAlignment) % kWriteAlignment, 0); }

    void value(const GGUFValue& v) {
        switch (v.type) {
            case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::BOOL: put(uint8_t(v.i)); break;
            case GGUFType::UINT16: case GGUFType::INT16: put(uint16_t(v.i)); break;
            case GGUFType::UINT32: case GGUFType::INT32: put(uint32_t(v.i)); break;
            case GGUFType::UINT64: case GGUFType::INT64: put(uint64_t(v.i)); break;
            case GGUFType::FLOAT32: put(float(v.f)); break;
            case GGUFType::FLOAT64: put(double(v.f)); break;
            case GGUFType::STRING: str(v.s); break;
            case GGUFType::ARRAY:
                put(uint32_t(v.elem_type));
                put(uint64_t(v.arr.size()));
                for (const GGUFValue& e : v.arr) {
                    if (e.type != v.elem_type) fail("GGUF writer: array element of type %s in an array of %s", type_name(e.type), type_name(v.elem_type));
                    value(e);
                }
                break;
        }
    }
};

}  // namespace

void GGUFWriter::write(const std::string& path) const {
    Out o;
    o.b.insert(o.b.end(), {'G', 'G', 'U', 'F'});
    o.put<uint32_t>(3);
    o.put<uint64_t>(tensors_.size());
    o.put<uint64_t>(kv_.size());
    for (const auto& kv : kv_) {
        if (kv.first == "general.alignment" && !(kv.second.is_int() && kv.second.i == int64_t(kWriteAlignment)))
            fail("GGUF writer: general.alignment other than %zu is not supported", kWriteAlignment);
        o.str(kv.first);
        o.put(uint32_t(kv.second.type));
        o.value(kv.second);
    }
    uint64_t off = 0;
    for (const T& t : tensors_) {
        o.str(t.name);
        o.put(uint32_t(t.shape.size()));
        for (size_t d = t.shape.size(); d-- > 0;) o.put<int64_t>(t.shape[d]);
        o.put(uint32_t(ggml_type_id(t.type)));
        o.put(off);
        off += (t.bytes.size() + kWriteAlignment - 1) / kWriteAlignment * kWriteAlignment;
    }
    o.pad();
    for (const T& t : tensors_) {
        o.b.insert(o.b.end(), t.bytes.begin(), t.bytes.end());
        o.pad();
    }

    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) fail("%s: cannot open for writing: %s", path.c_str(), std::strerror(errno));
    size_t n = std::fwrite(o.b.data(), 1, o.b.size(), f);
    int rc = std::fclose(f);
    if (n != o.b.size() || rc != 0) fail("%s: write failed: %s", path.c_str(), std::strerror(errno));
}

}  // namespace elastic
