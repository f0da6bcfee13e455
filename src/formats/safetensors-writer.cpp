// safetensors writers: the stream writer (bytes produced chunk by chunk while the file is written)
// and the in-memory writer built on it. The header is written as the reference implementation
// writes it: "__metadata__" first, then the tensors with contiguous offsets, compact JSON padded
// with spaces so the data region starts 8-byte aligned. Every file goes to "<name>.tmp", is synced
// and renamed into place, so a reader sees the old file or the complete new one.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/safetensors.h"

namespace elastic {

namespace fs = std::filesystem;

namespace {

const char* safetensors_dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I32: return "I32";
        case DType::I64: return "I64";
        case DType::I8: return "I8";
        case DType::U8: return "U8";
        default: return nullptr;
    }
}

// Writes all of buf to fd or throws.
void write_all(int fd, const void* buf, size_t n, const std::string& path) {
    const uint8_t* p = static_cast<const uint8_t*>(buf);
    while (n > 0) {
        ssize_t k = ::write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) fail("%s: write failed: %s", path.c_str(), std::strerror(errno));
        p += k;
        n -= size_t(k);
    }
}

std::string dump_json(const nlohmann::ordered_json& j, int indent, const std::string& what) {
    try {
        return j.dump(indent);
    } catch (const nlohmann::ordered_json::exception& e) {  // e.g. a name that is not valid UTF-8
        fail("%s: cannot encode header: %s", what.c_str(), e.what());
    }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Opens "<path>.tmp", lets body write to it, syncs it and renames it over path; on any failure the
// temporary file is removed and the error passed on.
template <typename Body>
void write_file_atomic(const std::string& path, Body&& body) {
    const std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("%s: cannot create: %s", tmp.c_str(), std::strerror(errno));
    try {
        body(fd, tmp);
        if (::fsync(fd) != 0) fail("%s: fsync failed: %s", tmp.c_str(), std::strerror(errno));
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    if (::close(fd) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        fail("%s: close failed: %s", tmp.c_str(), std::strerror(e));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        fail("%s: cannot rename into place: %s", path.c_str(), std::strerror(e));
    }
}

}  // namespace

// ---- stream writer -----------------------------------------------------------------------------

void SafetensorsStreamWriter::set_metadata(const std::string& key, const std::string& value) { meta_[key] = value; }

size_t SafetensorsStreamWriter::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape) {
    if (!safetensors_dtype_name(type))
        fail("safetensors writer: tensor '%s': dtype %s cannot be stored in safetensors", name.c_str(), dtype_name(type));
    if (name == "__metadata__") fail("safetensors writer: \"__metadata__\" is reserved, not a tensor name");
    if (names_.count(name)) fail("safetensors writer: tensor '%s' added twice", name.c_str());
    uint64_t numel = 1;
    for (int64_t d : shape) {
        if (d < 0) fail("safetensors writer: tensor '%s' has a negative dimension", name.c_str());
        if (__builtin_mul_overflow(numel, uint64_t(d), &numel) || numel > uint64_t(INT64_MAX))
            fail("safetensors writer: tensor '%s' has too many elements", name.c_str());
    }
    names_.insert(name);
    specs_.push_back({name, type, shape, uint64_t(dtype_nbytes(type, int64_t(numel)))});
    return specs_.size() - 1;
}

uint64_t SafetensorsStreamWriter::total_bytes() const {
    uint64_t n = 0;
    for (const Spec& s : specs_) n += s.nbytes;
    return n;
}

void SafetensorsStreamWriter::write(const std::string& path, const Fill& fill, const FileDone& done) const {
    std::vector<size_t> all(specs_.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    write_subset(path, all, fill, done);
}

void SafetensorsStreamWriter::write_subset(const std::string& path, const std::vector<size_t>& which, const Fill& fill,
                                           const FileDone& done) const {
    ELASTIC_ASSERT(chunk_bytes > 0 && chunk_bytes % 8 == 0);
    const auto t0 = std::chrono::steady_clock::now();
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!meta_.empty()) header["__metadata__"] = meta_;
    uint64_t offset = 0, largest = 0;
    for (size_t i : which) {
        const Spec& t = specs_[i];
        nlohmann::ordered_json e;
        e["dtype"] = safetensors_dtype_name(t.type);
        e["shape"] = t.shape;
        e["data_offsets"] = {offset, offset + t.nbytes};
        offset += t.nbytes;
        largest = std::max(largest, t.nbytes);
        header[t.name] = std::move(e);
    }
    std::string text = dump_json(header, -1, path);
    text.append((8 - text.size() % 8) % 8, ' ');
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

    // Two buffers: fill one while the other is written.
    const size_t buf_bytes = size_t(std::min<uint64_t>(chunk_bytes, largest));
    std::vector<uint8_t> buf[2];
    write_file_atomic(path, [&](int fd, const std::string& tmp) {
        write_all(fd, len, 8, tmp);
        write_all(fd, text.data(), text.size(), tmp);
        std::future<void> pending;
        try {
            int b = 0;
            for (size_t i : which) {
                for (uint64_t off = 0; off < specs_[i].nbytes; off += chunk_bytes, b ^= 1) {
                    const size_t n = size_t(std::min<uint64_t>(chunk_bytes, specs_[i].nbytes - off));
                    if (buf[b].empty()) buf[b].resize(buf_bytes);
                    fill(i, off, buf[b].data(), n);
                    if (pending.valid()) pending.get();  // the write of the other buffer
                    const uint8_t* p = buf[b].data();
                    pending = std::async(std::launch::async, [fd, p, n, &tmp] { write_all(fd, p, n, tmp); });
                }
            }
            if (pending.valid()) pending.get();
        } catch (...) {
            if (pending.valid()) pending.wait();
            throw;
        }
    });
    if (done) done(fs::path(path).filename().string(), 8 + text.size() + offset, seconds_since(t0));
}

void SafetensorsStreamWriter::write_sharded(const std::string& dir, uint64_t max_shard_bytes, const Fill& fill,
                                            const FileDone& done) const {
    if (max_shard_bytes == 0) fail("%s: shard size limit must be positive", dir.c_str());
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("%s: cannot create directory: %s", dir.c_str(), ec.message().c_str());

    std::vector<std::vector<size_t>> shards;
    uint64_t cur = 0;
    for (size_t i = 0; i < specs_.size(); ++i) {
        const uint64_t n = specs_[i].nbytes;
        if (shards.empty() || (!shards.back().empty() && cur + n > max_shard_bytes)) {
            shards.emplace_back();
            cur = 0;
        }
        shards.back().push_back(i);
        cur += n;
    }
    if (shards.empty()) shards.emplace_back();

    std::map<std::string, std::string> weight_map;
    for (size_t s = 0; s < shards.size(); ++s) {
        std::string name = strprintf("model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
        write_subset((fs::path(dir) / name).string(), shards[s], fill, done);
        for (size_t i : shards[s]) weight_map[specs_[i].name] = name;
    }
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total_bytes()}};
    index["weight_map"] = std::move(weight_map);
    const std::string path = (fs::path(dir) / "model.safetensors.index.json").string();
    const std::string text = dump_json(index, 2, path) + "\n";
    write_file_atomic(path, [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
}

// ---- in-memory writer --------------------------------------------------------------------------

void SafetensorsWriter::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape,
                                   const void* data, size_t data_bytes) {
    uint64_t want = 1;
    bool valid = dtype_block_size(type) == 1;  // a bad shape or dtype gets the stream writer's own error below
    for (int64_t d : shape) valid = valid && d >= 0 && !__builtin_mul_overflow(want, uint64_t(d), &want);
    if (valid && want * dtype_block_bytes(type) != data_bytes)
        fail("safetensors writer: tensor '%s': %zu bytes given for a %s tensor of %llu elements (%llu bytes)", name.c_str(),
             data_bytes, dtype_name(type), (unsigned long long)want, (unsigned long long)(want * dtype_block_bytes(type)));
    const size_t i = stream_.add_tensor(name, type, shape);
    const uint8_t* p = static_cast<const uint8_t*>(data);
    bytes_.emplace_back();
    if (stream_.nbytes(i)) bytes_.back().assign(p, p + stream_.nbytes(i));
}

SafetensorsStreamWriter::Fill SafetensorsWriter::copy_fill() const {
    return [this](size_t i, uint64_t offset, uint8_t* out, size_t n) { std::memcpy(out, bytes_[i].data() + offset, n); };
}

void SafetensorsWriter::write(const std::string& path) const { stream_.write(path, copy_fill()); }

void SafetensorsWriter::write_sharded(const std::string& dir, size_t max_shard_bytes) const {
    stream_.write_sharded(dir, max_shard_bytes, copy_fill());
}

}  // namespace elastic
