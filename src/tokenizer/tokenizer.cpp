// Tokenizer::from_path: the one entry point tools use (`elastic tokenize --tokenizer ...`).
#include "tokenizer/tokenizer.h"

#include "formats/gguf.h"

namespace elastic {

std::unique_ptr<Tokenizer> Tokenizer::from_path(const std::string& path) {
    auto ends_with = [&](const char* suf) {
        std::string s(suf);
        return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
    };
    if (ends_with(".gguf") || ends_with(".GGUF")) return from_gguf(*GGUFFile::open(path));
    return from_json_file(path);
}

}  // namespace elastic
