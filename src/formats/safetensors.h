// safetensors reader (single file or sharded via model.safetensors.index.json) and writer.
// Reader: mmap, 8-byte header length, JSON header parsed with nlohmann-json, every offset and
// shape validated against the file (elastic::Error on anything inconsistent). dtypes F32/F16/BF16
// (plus I32/I64/I8/U8 for completeness; BOOL reads as U8); anything else is a clear error.
// TensorRef::data points into the mapping and need not be aligned for its type: copy, don't cast.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped-file.h"
#include "formats/tensor-ref.h"

namespace elastic {

class SafetensorsFile {
public:
    static std::unique_ptr<SafetensorsFile> open(const std::string& path);
    static std::unique_ptr<SafetensorsFile> parse(const uint8_t* data, size_t size, const std::string& what);

    const std::vector<TensorRef>& tensors() const { return tensors_; }
    const TensorRef* find_tensor(const std::string& name) const;
    const std::map<std::string, std::string>& metadata() const { return meta_; }  // "__metadata__"

private:
    std::shared_ptr<MappedFile> file_;
    std::vector<TensorRef> tensors_;
    std::map<std::string, size_t> index_;
    std::map<std::string, std::string> meta_;
};

// A checkpoint directory or file: `path` is a .safetensors file, a directory holding
// model.safetensors, or a directory with model.safetensors.index.json naming shards.
class SafetensorsCheckpoint {
public:
    static std::unique_ptr<SafetensorsCheckpoint> open(const std::string& path);
    const TensorRef* find_tensor(const std::string& name) const;
    // All tensors, sorted by name; for a sharded checkpoint, those named by weight_map.
    std::vector<const TensorRef*> tensors() const;

private:
    std::vector<std::unique_ptr<SafetensorsFile>> shards_;
    std::map<std::string, const TensorRef*> index_;
};

class SafetensorsWriter {
public:
    void set_metadata(const std::string& key, const std::string& value);
    // type must be a plain type (F32/F16/BF16/I32/I64/I8/U8). Copies the bytes.
    void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape, const void* data);
    void write(const std::string& path) const;
    // Writes model-0000i-of-0000N.safetensors shards of at most max_shard_bytes of tensor data (a
    // larger tensor gets a shard of its own) plus model.safetensors.index.json into dir (created if
    // missing). Every file goes to "<name>.tmp" first and is renamed into place; the index comes last.
    void write_sharded(const std::string& dir, size_t max_shard_bytes) const;

private:
    void write_subset(const std::string& path, const std::vector<size_t>& which) const;

    std::map<std::string, std::string> meta_;
    struct T { std::string name; DType type; std::vector<int64_t> shape; std::vector<uint8_t> bytes; };
    std::vector<T> tensors_;
};

}  // namespace elastic
