#include "formats/tokenizer-meta.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf.h"

namespace elastic {

namespace {

using json = nlohmann::ordered_json;

// Pre-tokeniser regexes (facts of the public tokenizers, as HF writes them).
const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json byte_level(bool use_regex) {
    return json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split(const char* pattern) {
    return json{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
}

json pre_tokenizer_for(const std::string& pre, const std::string& what) {
    if (pre == "smollm")
        return json{{"type", "Sequence"},
                    {"pretokenizers", json::array({json{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)})}};
    if (pre == "gpt2" || pre == "default") return byte_level(true);
    if (pre == "llama-bpe" || pre == "llama3")
        return json{{"type", "Sequence"}, {"pretokenizers", json::array({split(kLlama3Pattern), byte_level(false)})}};
    if (pre == "qwen2")
        return json{{"type", "Sequence"}, {"pretokenizers", json::array({split(kQwen2Pattern), byte_level(false)})}};
    fail("%s: tokenizer pre-tokenizer '%s' cannot be converted (supported: smollm, gpt2, llama-bpe, qwen2)", what.c_str(),
         pre.c_str());
}

std::string detect_pre(const json& pt) {
    const std::string s = pt.dump();
    if (s.find("\"Digits\"") != std::string::npos) return "smollm";
    if (s.find("\\\\p{N}{1,3}") != std::string::npos) return "llama-bpe";
    if (s.find("\"Split\"") != std::string::npos) return "qwen2";
    if (pt.is_object() && pt.value("type", "") == "ByteLevel") return "gpt2";
    return "";
}

}  // namespace

std::string tokenizer_json_from_gguf(const GGUFFile& f) {
    const std::string what = f.path();
    const std::string model = f.get_string("tokenizer.ggml.model");
    if (model != "gpt2") fail("%s: tokenizer model '%s' cannot be converted (only byte-level BPE 'gpt2')", what.c_str(), model.c_str());
    std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
    std::vector<std::string> merges = f.get_string_array("tokenizer.ggml.merges");
    std::vector<double> types = f.get_number_array("tokenizer.ggml.token_type");
    if (tokens.empty()) fail("%s: no tokenizer.ggml.tokens", what.c_str());
    json vocab = json::object();
    json added = json::array();
    for (size_t i = 0; i < tokens.size(); ++i) {
        int type = i < types.size() ? int(types[i]) : 1;
        if (type == 5) continue;  // UNUSED: a placeholder that pads the list to the embedding, no token
        vocab[tokens[i]] = i;
        if (type == 3 || type == 4)
            added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                             {"normalized", false}, {"special", type == 3}});
    }
    json j;
    j["version"] = "1.0";
    j["truncation"] = nullptr;
    j["padding"] = nullptr;
    j["added_tokens"] = added;
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = pre_tokenizer_for(f.get_string("tokenizer.ggml.pre", "gpt2"), what);
    j["post_processor"] = nullptr;
    j["decoder"] = byte_level(true);
    j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                  {"vocab", vocab}, {"merges", merges}};
    return j.dump(2, ' ', false, json::error_handler_t::replace);
}

void tokenizer_to_gguf(const std::string& path, GGUFWriter& w, int64_t vocab_size) {
    std::ifstream in(path);
    if (!in) fail("%s: cannot open", path.c_str());
    json j;
    try {
        j = json::parse(in);
    } catch (const json::exception& e) {
        fail("%s: invalid JSON: %s", path.c_str(), e.what());
    }
    try {
        const json& m = j.at("model");
        if (m.value("type", "") != "BPE") fail("%s: only BPE tokenizers can be converted", path.c_str());
        const json& vocab = m.at("vocab");
        std::vector<std::string> tokens(vocab.size());
        std::vector<int32_t> types(vocab.size(), 1);
        auto put = [&](const std::string& s, size_t id) {
            if (id >= tokens.size()) {
                tokens.resize(id + 1);
                types.resize(id + 1, 1);
            }
            tokens[id] = s;
        };
        for (auto it = vocab.begin(); it != vocab.end(); ++it) put(it.key(), it.value().get<size_t>());
        for (const json& a : j.value("added_tokens", json::array())) {
            size_t id = a.at("id").get<size_t>();
            put(a.at("content").get<std::string>(), id);
            types[id] = a.value("special", false) ? 3 : 4;
        }
        // The model's embedding may have more rows than the tokenizer has tokens (Qwen3: 151936
        // against 151669); llama.cpp takes the vocabulary size from this list, so ids without a
        // token get a placeholder "[PAD<id>]" of type UNUSED (5), as Hugging Face's converter does.
        if (vocab_size > int64_t(tokens.size())) {
            tokens.resize(size_t(vocab_size));
            types.resize(size_t(vocab_size), 1);
        }
        for (size_t i = 0; i < tokens.size(); ++i)
            if (tokens[i].empty()) {
                tokens[i] = "[PAD" + std::to_string(i) + "]";
                types[i] = 5;
            }
        std::vector<std::string> merges;
        for (const json& mg : m.at("merges")) {
            if (mg.is_string()) merges.push_back(mg.get<std::string>());
            else merges.push_back(mg.at(0).get<std::string>() + " " + mg.at(1).get<std::string>());
        }
        std::string pre = detect_pre(j.value("pre_tokenizer", json()));
        if (pre.empty()) fail("%s: unrecognised pre-tokenizer; cannot name it in GGUF", path.c_str());
        w.set_string("tokenizer.ggml.model", "gpt2");
        w.set_string("tokenizer.ggml.pre", pre);
        w.set_string_array("tokenizer.ggml.tokens", tokens);
        w.set_i32_array("tokenizer.ggml.token_type", types);
        w.set_string_array("tokenizer.ggml.merges", merges);
        // Special ids and chat template from tokenizer_config.json beside tokenizer.json, if any.
        std::string dir = path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
        std::ifstream cin(dir + "tokenizer_config.json");
        if (cin) {
            json c = json::parse(cin, nullptr, false);
            auto id_of = [&](const char* key) -> int64_t {
                if (!c.contains(key)) return -1;
                const json& v = c[key];
                std::string s = v.is_string() ? v.get<std::string>() : v.is_object() ? v.value("content", "") : "";
                for (size_t i = 0; i < tokens.size(); ++i)
                    if (tokens[i] == s) return int64_t(i);
                return -1;
            };
            if (!c.is_discarded()) {
                if (int64_t b = id_of("bos_token"); b >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(b));
                if (int64_t e = id_of("eos_token"); e >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(e));
                if (c.contains("chat_template") && c["chat_template"].is_string())
                    w.set_string("tokenizer.chat_template", c["chat_template"].get<std::string>());
            }
        }
    } catch (const json::exception& e) {
        fail("%s: unexpected tokenizer.json structure: %s", path.c_str(), e.what());
    }
}

}  // namespace elastic
