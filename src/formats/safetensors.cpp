// safetensors reader (format: https://github.com/huggingface/safetensors).
// File layout: u64 little-endian header length N, N bytes of JSON header, then the data region.
// The header maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
// to the data region) plus an optional "__metadata__" string->string map.
// The reader never trusts the file: every size is checked before it is used, and nothing is
// allocated in proportion to a number read from the file (only to the header's own size, <= 100 MB).
// The writers are in safetensors-writer.cpp.
#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace elastic {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 64;                 // a valid header nests 3 deep

// Names from a hostile file may hold newlines or be huge; errors stay on one readable line.
std::string printable(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size() && i < 200; ++i) {
        unsigned char c = uint8_t(s[i]);
        if (c < 0x20 || c == 0x7f) out += strprintf("\\x%02x", c);
        else out += char(c);
    }
    if (s.size() > 200) out += "...";
    return out;
}

const char* json_type(const json& j) { return j.type_name(); }

// Parses JSON text; syntax errors, bad UTF-8 and excessive nesting become elastic::Error.
json parse_json(const char* begin, const char* end, const std::string& what, const char* kind) {
    json::parser_callback_t limit_depth = [&](int depth, json::parse_event_t, json&) {
        if (depth > kMaxJsonDepth) fail("%s: %s nests deeper than %d levels", what.c_str(), kind, kMaxJsonDepth);
        return true;
    };
    try {
        return json::parse(begin, end, limit_depth);
    } catch (const json::exception& e) {
        fail("%s: invalid JSON in %s: %s", what.c_str(), kind, e.what());
    }
}

bool json_to_u64(const json& j, uint64_t* out) {
    if (j.is_number_unsigned()) {
        *out = j.get<uint64_t>();
        return true;
    }
    if (j.is_number_integer() && j.get<int64_t>() >= 0) {
        *out = uint64_t(j.get<int64_t>());
        return true;
    }
    return false;
}

bool parse_dtype(const std::string& s, DType* t) {
    static const std::pair<const char*, DType> kTypes[] = {
        {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I32", DType::I32},
        {"I64", DType::I64}, {"I8", DType::I8},   {"U8", DType::U8},     {"BOOL", DType::U8},
    };
    for (const auto& [name, type] : kTypes) {
        if (s == name) {
            *t = type;
            return true;
        }
    }
    return false;
}

struct Entry {
    TensorRef ref;
    uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& what, const std::string& name, const json& j, uint64_t data_size) {
    const std::string n = printable(name);
    const char* w = what.c_str();
    if (!j.is_object()) fail("%s: tensor '%s': header entry is a JSON %s, not an object", w, n.c_str(), json_type(j));
    Entry e;
    e.ref.name = name;

    auto dt = j.find("dtype");
    if (dt == j.end() || !dt->is_string()) fail("%s: tensor '%s': missing or non-string \"dtype\"", w, n.c_str());
    const std::string& ds = dt->get_ref<const std::string&>();
    if (!parse_dtype(ds, &e.ref.type))
        fail("%s: tensor '%s' has dtype %s, which is not supported (supported: F32, F16, BF16, I32, I64, I8, U8, BOOL)",
             w, n.c_str(), printable(ds).c_str());

    auto sh = j.find("shape");
    if (sh == j.end() || !sh->is_array()) fail("%s: tensor '%s': missing or non-array \"shape\"", w, n.c_str());
    uint64_t numel = 1;
    for (const json& d : *sh) {
        uint64_t v;
        if (!json_to_u64(d, &v) || v > uint64_t(INT64_MAX))
            fail("%s: tensor '%s': shape %s has an entry that is not an integer in [0, 2^63)", w, n.c_str(),
                 printable(sh->dump()).c_str());
        if (__builtin_mul_overflow(numel, v, &numel) || numel > uint64_t(INT64_MAX))
            fail("%s: tensor '%s': shape %s has too many elements", w, n.c_str(), printable(sh->dump()).c_str());
        e.ref.shape.push_back(int64_t(v));
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_block_bytes(e.ref.type)), &nbytes))
        fail("%s: tensor '%s': shape %s is too large", w, n.c_str(), e.ref.shape_str().c_str());

    auto off = j.find("data_offsets");
    if (off == j.end() || !off->is_array() || off->size() != 2 || !json_to_u64((*off)[0], &e.begin) ||
        !json_to_u64((*off)[1], &e.end))
        fail("%s: tensor '%s': \"data_offsets\" must be [begin, end] with non-negative integers", w, n.c_str());
    if (e.begin > e.end)
        fail("%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", w, n.c_str(), (unsigned long long)e.begin,
             (unsigned long long)e.end);
    if (e.end > data_size)
        fail("%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data (%llu bytes)", w, n.c_str(),
             (unsigned long long)e.begin, (unsigned long long)e.end, (unsigned long long)data_size);
    if (e.end - e.begin != nbytes)
        fail("%s: tensor '%s': %s %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu", w, n.c_str(), ds.c_str(),
             e.ref.shape_str().c_str(), (unsigned long long)nbytes, (unsigned long long)e.begin,
             (unsigned long long)e.end, (unsigned long long)(e.end - e.begin));
    e.ref.nbytes = size_t(nbytes);
    return e;
}

}  // namespace

// ---- reader ----------------------------------------------------------------------------------

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
    std::shared_ptr<MappedFile> file = MappedFile::open(path);
    std::unique_ptr<SafetensorsFile> f = parse(file->data(), file->size(), path);
    f->file_ = std::move(file);
    return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size, const std::string& what) {
    const char* w = what.c_str();
    ByteReader r(data, size, what);
    if (size < 8) fail("%s: too small for a safetensors file (%zu bytes)", w, size);
    uint8_t len_bytes[8];
    std::memcpy(len_bytes, r.bytes(8), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | len_bytes[i];
    if (n > kMaxHeaderBytes)
        fail("%s: header length %llu exceeds the %llu-byte limit (not a safetensors file?)", w, (unsigned long long)n,
             (unsigned long long)kMaxHeaderBytes);
    if (n > r.remaining())
        fail("%s: header length %llu runs past the end of the file (%zu bytes)", w, (unsigned long long)n, size);
    if (n < 2) fail("%s: header of %llu bytes is too short to hold a JSON object", w, (unsigned long long)n);
    const char* text = reinterpret_cast<const char*>(r.bytes(size_t(n)));
    if (text[0] != '{') fail("%s: header does not start with '{' (not a safetensors file?)", w);
    // nlohmann-json stops at a NUL as if the text ended there; the format allows none.
    if (std::memchr(text, 0, size_t(n))) fail("%s: header contains a NUL byte", w);

    json header = parse_json(text, text + n, what, "header");
    if (!header.is_object()) fail("%s: header is a JSON %s, not an object", w, json_type(header));

    const uint8_t* base = data + r.pos();
    const uint64_t data_size = r.remaining();
    std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
    std::vector<Entry> entries;
    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            if (value.is_null()) continue;
            if (!value.is_object()) fail("%s: \"__metadata__\" is a JSON %s, not an object", w, json_type(value));
            for (const auto& [mk, mv] : value.items()) {
                if (!mv.is_string())
                    fail("%s: \"__metadata__\" value for '%s' is a JSON %s, not a string", w, printable(mk).c_str(),
                         json_type(mv));
                f->meta_[mk] = mv.get<std::string>();
            }
            continue;
        }
        entries.push_back(parse_entry(what, key, value, data_size));
    }

    // File order; also lets us reject tensors whose bytes overlap (a corrupt or crafted header).
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t prev_end = 0;
    size_t prev = 0;  // index in tensors_ of the non-empty tensor ending at prev_end
    for (Entry& e : entries) {
        if (e.begin < e.end) {
            if (e.begin < prev_end)
                fail("%s: tensors '%s' and '%s' overlap in the data region", w, printable(f->tensors_[prev].name).c_str(),
                     printable(e.ref.name).c_str());
            prev_end = e.end;
            prev = f->tensors_.size();
        }
        e.ref.data = base + e.begin;
        f->index_[e.ref.name] = f->tensors_.size();
        f->tensors_.push_back(std::move(e.ref));
    }
    return f;
}

const TensorRef* SafetensorsFile::find_tensor(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- checkpoint (single file or shards) -------------------------------------------------------

std::unique_ptr<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& path) {
    std::error_code ec;
    std::string single, index_path;
    if (fs::is_directory(path, ec)) {
        fs::path dir(path);
        if (fs::exists(dir / "model.safetensors", ec)) single = (dir / "model.safetensors").string();
        else if (fs::exists(dir / "model.safetensors.index.json", ec))
            index_path = (dir / "model.safetensors.index.json").string();
        else fail("%s: directory holds neither model.safetensors nor model.safetensors.index.json", path.c_str());
    } else if (path.size() >= 11 && path.compare(path.size() - 11, 11, ".index.json") == 0) {
        index_path = path;
    } else {
        single = path;  // MappedFile::open reports a missing file
    }

    std::unique_ptr<SafetensorsCheckpoint> c(new SafetensorsCheckpoint());
    if (!single.empty()) {
        c->shards_.push_back(SafetensorsFile::open(single));
        for (const TensorRef& t : c->shards_[0]->tensors()) c->index_[t.name] = &t;
        return c;
    }

    const char* w = index_path.c_str();
    std::shared_ptr<MappedFile> file = MappedFile::open(index_path);
    if (file->size() > kMaxHeaderBytes) fail("%s: index is larger than %llu bytes", w, (unsigned long long)kMaxHeaderBytes);
    const char* text = reinterpret_cast<const char*>(file->data());
    json index = parse_json(text, text + file->size(), index_path, "index");
    if (!index.is_object()) fail("%s: index is a JSON %s, not an object", w, json_type(index));
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) fail("%s: missing or non-object \"weight_map\"", w);

    fs::path dir = fs::path(index_path).parent_path();
    std::map<std::string, SafetensorsFile*> shard_by_name;
    for (const auto& [tensor, shard_json] : wm->items()) {
        if (!shard_json.is_string())
            fail("%s: weight_map entry for '%s' is a JSON %s, not a file name", w, printable(tensor).c_str(),
                 json_type(shard_json));
        const std::string& shard = shard_json.get_ref<const std::string&>();
        if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
            shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos)
            fail("%s: shard name '%s' for tensor '%s' is not a plain file name in the checkpoint directory", w,
                 printable(shard).c_str(), printable(tensor).c_str());
        auto it = shard_by_name.find(shard);
        if (it == shard_by_name.end()) {
            c->shards_.push_back(SafetensorsFile::open((dir / shard).string()));
            it = shard_by_name.emplace(shard, c->shards_.back().get()).first;
        }
        const TensorRef* t = it->second->find_tensor(tensor);
        if (!t)
            fail("%s: tensor '%s' is mapped to shard %s, which does not contain it", w, printable(tensor).c_str(),
                 printable(shard).c_str());
        c->index_[tensor] = t;
    }
    return c;
}

const TensorRef* SafetensorsCheckpoint::find_tensor(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
}

std::vector<const TensorRef*> SafetensorsCheckpoint::tensors() const {
    std::vector<const TensorRef*> out;
    out.reserve(index_.size());
    for (const auto& kv : index_) out.push_back(kv.second);
    return out;
}

}  // namespace elastic
