// safetensors reader (single file or sharded via model.safetensors.index.json) and writers.
// Reader: mmap, 8-byte header length, JSON header parsed with nlohmann-json, every offset and
// shape validated against the file (elastic::Error on anything inconsistent). dtypes F32/F16/BF16
// (plus I32/I64/I8/U8 for completeness; BOOL reads as U8); anything else is a clear error.
// TensorRef::data points into the mapping and need not be aligned for its type: copy, don't cast.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <set>
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

// Writes tensors whose bytes are produced while the file is written. The header needs only names,
// types and shapes, so memory stays at two chunk buffers however large the model (`elastic
// random-model` writes 16 GB this way): `fill(i, offset, out, n)` puts bytes [offset, offset + n)
// of tensor i (the index add_tensor returned) into out, on the calling thread, while another thread
// writes the previous chunk. Offsets are multiples of chunk_bytes, so whole elements.
class SafetensorsStreamWriter {
public:
    using Fill = std::function<void(size_t tensor, uint64_t offset, uint8_t* out, size_t n)>;
    // Called after each file is complete (synced and renamed): its name without directory, its
    // size in bytes and the seconds it took.
    using FileDone = std::function<void(const std::string& file, uint64_t bytes, double seconds)>;

    void set_metadata(const std::string& key, const std::string& value);
    // type must be a plain type (F32/F16/BF16/I32/I64/I8/U8); names are unique. Returns the index.
    size_t add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape);
    size_t size() const { return specs_.size(); }
    uint64_t nbytes(size_t tensor) const { return specs_[tensor].nbytes; }
    uint64_t total_bytes() const;

    // One file at path, written to "<path>.tmp", synced and renamed into place.
    void write(const std::string& path, const Fill& fill, const FileDone& done = nullptr) const;
    // model-0000i-of-0000N.safetensors shards of at most max_shard_bytes of tensor data (greedy in
    // insertion order, as transformers does; a larger tensor gets a shard of its own) plus
    // model.safetensors.index.json into dir (created if missing); each file as in write(), the
    // index last.
    void write_sharded(const std::string& dir, uint64_t max_shard_bytes, const Fill& fill,
                       const FileDone& done = nullptr) const;

    size_t chunk_bytes = size_t(64) << 20;  // a multiple of 8

private:
    void write_subset(const std::string& path, const std::vector<size_t>& which, const Fill& fill,
                      const FileDone& done) const;

    struct Spec { std::string name; DType type; std::vector<int64_t> shape; uint64_t nbytes; };
    std::map<std::string, std::string> meta_;
    std::vector<Spec> specs_;
    std::set<std::string> names_;
};

// The in-memory writer: tensors are copied in by add_tensor, then written as by the stream writer.
class SafetensorsWriter {
public:
    void set_metadata(const std::string& key, const std::string& value) { stream_.set_metadata(key, value); }
    // type must be a plain type (F32/F16/BF16/I32/I64/I8/U8). Copies the bytes.
    // data_bytes: the size of data, which must be exactly the tensor's (an Error otherwise).
    void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape, const void* data, size_t data_bytes);
    void write(const std::string& path) const;
    // As SafetensorsStreamWriter::write_sharded.
    void write_sharded(const std::string& dir, size_t max_shard_bytes) const;

private:
    SafetensorsStreamWriter::Fill copy_fill() const;

    SafetensorsStreamWriter stream_;
    std::vector<std::vector<uint8_t>> bytes_;  // [tensor]
};

}  // namespace elastic
