// Read-only memory map of a whole file plus a bounds-checked cursor for parsing it.
// Every parser reads through ByteReader, so a truncated or hostile file raises elastic::Error
// ("<what>: truncated at offset N") instead of reading past the end.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"

namespace elastic {

class MappedFile {
public:
    // Throws Error when the path cannot be opened or mapped. An empty file maps to size 0.
    static std::shared_ptr<MappedFile> open(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

private:
    MappedFile() = default;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    std::string path_;
};

// Sequential little-endian reader over [data, data+size). `what` names the file in errors.
class ByteReader {
public:
    ByteReader(const uint8_t* data, size_t size, std::string what) : data_(data), size_(size), what_(std::move(what)) {}

    size_t pos() const { return pos_; }
    size_t size() const { return size_; }
    size_t remaining() const { return size_ - pos_; }
    const std::string& what() const { return what_; }

    void need(size_t n) const {
        if (n > size_ - pos_) fail("%s: truncated at offset %zu (need %zu more bytes, file has %zu)", what_.c_str(), pos_, n, size_);
    }
    template <typename T>
    T read() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    const uint8_t* bytes(size_t n) {
        need(n);
        const uint8_t* p = data_ + pos_;
        pos_ += n;
        return p;
    }
    std::string_view string(size_t n) {
        const uint8_t* p = bytes(n);
        return std::string_view(reinterpret_cast<const char*>(p), n);
    }
    void seek(size_t pos) {
        if (pos > size_) fail("%s: offset %zu is past the end (%zu bytes)", what_.c_str(), pos, size_);
        pos_ = pos;
    }
    void skip(size_t n) { need(n); pos_ += n; }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    std::string what_;
};

}  // namespace elastic
