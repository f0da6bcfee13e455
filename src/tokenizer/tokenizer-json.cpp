// Loads a Hugging Face tokenizer.json (byte-level BPE only) plus, when it sits beside it,
// tokenizer_config.json for the chat template and bos/eos tokens. Anything outside what
// byte-level BPE models use (other model types, normalizers, pre-tokenizers) is an Error that
// names the file and the unsupported piece.
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/stat.h>

#include "core/error.h"
#include "tokenizer/bpe-tokenizer.h"

namespace elastic {

namespace {

using nlohmann::json;

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("%s: cannot open tokenizer file", path.c_str());
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

bool is_dir(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string type_of(const json& j) { return j.is_object() && j.contains("type") ? j["type"].get<std::string>() : ""; }

bool get_bool(const json& j, const char* key, bool def) {
    if (!j.contains(key) || j[key].is_null()) return def;
    return j[key].get<bool>();
}

std::string regex_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (!(std::isalnum(uint8_t(c)) || uint8_t(c) >= 0x80)) out += '\\';
        out += c;
    }
    return out;
}

SplitBehavior parse_behavior(const std::string& b) {
    if (b == "Removed") return SplitBehavior::Removed;
    if (b == "Isolated") return SplitBehavior::Isolated;
    if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
    if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
    if (b == "Contiguous") return SplitBehavior::Contiguous;
    fail("unsupported Split behavior \"%s\"", b.c_str());
}

void parse_normalizer(const json& j, PreTokenizer& pre) {
    if (j.is_null()) return;
    std::string t = type_of(j);
    if (t == "NFC") { pre.nfc = true; return; }
    if (t == "Sequence") {
        for (const json& n : j.at("normalizers")) parse_normalizer(n, pre);
        return;
    }
    fail("unsupported normalizer \"%s\" (supported: null, NFC)", t.c_str());
}

void parse_pre(const json& j, PreTokenizer& pre, bool& byte_level) {
    if (j.is_null()) return;
    std::string t = type_of(j);
    if (t == "Sequence") {
        for (const json& p : j.at("pretokenizers")) parse_pre(p, pre, byte_level);
    } else if (t == "Split") {
        const json& pat = j.at("pattern");
        std::string re;
        if (pat.contains("Regex")) re = pat["Regex"].get<std::string>();
        else if (pat.contains("String")) re = regex_escape(pat["String"].get<std::string>());
        else fail("Split pre-tokenizer without a Regex or String pattern");
        pre.steps.push_back(PreTokenizer::split(re, parse_behavior(j.at("behavior").get<std::string>()), get_bool(j, "invert", false)));
    } else if (t == "Digits") {
        pre.steps.push_back(PreTokenizer::digits(get_bool(j, "individual_digits", false)));
    } else if (t == "ByteLevel") {
        pre.steps.push_back(PreTokenizer::byte_level(get_bool(j, "add_prefix_space", true), get_bool(j, "use_regex", true)));
        byte_level = true;
    } else {
        fail("unsupported pre-tokenizer \"%s\" (supported: Sequence, Split, Digits, ByteLevel)", t.c_str());
    }
}

void check_decoder(const json& j) {
    if (j.is_null()) return;
    std::string t = type_of(j);
    if (t == "ByteLevel") return;
    if (t == "Sequence") {
        for (const json& d : j.at("decoders")) check_decoder(d);
        return;
    }
    fail("unsupported decoder \"%s\" (supported: ByteLevel)", t.c_str());
}

// "content" of a token given as a string or as {"content": ...}.
std::string token_content(const json& j) {
    if (j.is_string()) return j.get<std::string>();
    if (j.is_object() && j.contains("content")) return j["content"].get<std::string>();
    return "";
}

int32_t lookup(const BpeTokenizerConfig& cfg, const std::string& s) {
    if (s.empty()) return -1;
    for (const AddedToken& t : cfg.added)
        if (t.content == s) return t.id;
    for (size_t i = 0; i < cfg.vocab.size(); ++i)
        if (cfg.vocab[i] == s) return int32_t(i);
    return -1;
}

BpeTokenizerConfig parse_tokenizer_json(const json& root) {
    BpeTokenizerConfig cfg;
    if (!root.is_object()) fail("top level is not a JSON object");
    const json& model = root.at("model");
    std::string mt = type_of(model);
    if (mt != "BPE" && !(mt.empty() && model.contains("merges")))
        fail("unsupported model type \"%s\" (only byte-level BPE is supported)", mt.c_str());
    if (get_bool(model, "byte_fallback", false)) fail("BPE with byte_fallback (SentencePiece style) is not supported");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty())
            fail("BPE %s is not supported", k);

    const json& vocab = model.at("vocab");
    if (!vocab.is_object()) fail("model.vocab is not an object");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        int64_t id = it.value().get<int64_t>();
        if (id < 0 || id >= (int64_t(1) << 24)) fail("vocab id %lld of \"%s\" is out of range", (long long)id, it.key().c_str());
        if (size_t(id) >= cfg.vocab.size()) cfg.vocab.resize(size_t(id) + 1);
        if (!cfg.vocab[size_t(id)].empty()) fail("vocab id %lld is used twice", (long long)id);
        cfg.vocab[size_t(id)] = it.key();
    }
    for (const json& m : model.at("merges")) {
        if (m.is_string()) {  // "a b"
            const std::string s = m.get<std::string>();
            size_t sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                fail("merge \"%s\" is not two tokens separated by one space", s.c_str());
            cfg.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (m.is_array() && m.size() == 2) {  // ["a", "b"]
            cfg.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        } else {
            fail("merge %s is neither \"a b\" nor [\"a\", \"b\"]", m.dump().c_str());
        }
    }
    cfg.ignore_merges = get_bool(model, "ignore_merges", false);

    if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
        for (const json& a : root["added_tokens"]) {
            AddedToken t;
            t.id = a.at("id").get<int32_t>();
            t.content = a.at("content").get<std::string>();
            t.special = get_bool(a, "special", false);
            t.lstrip = get_bool(a, "lstrip", false);
            t.rstrip = get_bool(a, "rstrip", false);
            t.single_word = get_bool(a, "single_word", false);
            t.normalized = get_bool(a, "normalized", !t.special);
            cfg.added.push_back(std::move(t));
        }
    }
    if (root.contains("normalizer")) parse_normalizer(root["normalizer"], cfg.pre);
    bool byte_level = false;
    if (root.contains("pre_tokenizer")) parse_pre(root["pre_tokenizer"], cfg.pre, byte_level);
    if (!byte_level) fail("pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
    if (root.contains("decoder")) check_decoder(root["decoder"]);
    return cfg;
}

}  // namespace

namespace {

// tokenizer.json's text, plus tokenizer_config.json at config_path when it is not empty (chat
// template, bos/eos); `what` names the input in errors.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& text, const std::string& what,
                                          const std::string& config_path) {
    BpeTokenizerConfig cfg;
    try {
        cfg = parse_tokenizer_json(json::parse(text));
        if (!config_path.empty()) {
            json c = json::parse(read_text(config_path));
            if (c.contains("chat_template")) {
                const json& ct = c["chat_template"];
                if (ct.is_string()) cfg.chat_template = ct.get<std::string>();
                else if (ct.is_array())
                    for (const json& e : ct)
                        if (e.value("name", "") == "default" || cfg.chat_template.empty())
                            cfg.chat_template = e.value("template", "");
            }
            if (c.contains("bos_token")) cfg.bos = lookup(cfg, token_content(c["bos_token"]));
            if (c.contains("eos_token")) cfg.eos = lookup(cfg, token_content(c["eos_token"]));
        }
        return std::make_unique<BpeTokenizer>(std::move(cfg));
    } catch (const json::exception& e) {
        fail("%s: malformed tokenizer JSON: %s", what.c_str(), e.what());
    } catch (const Error& e) {
        fail("%s: %s", what.c_str(), e.what());
    }
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_json_text(const std::string& text, const std::string& what) {
    return make_tokenizer(text, what, "");
}

std::unique_ptr<Tokenizer> Tokenizer::from_json_file(const std::string& path_in) {
    const std::string path = is_dir(path_in) ? path_in + "/tokenizer.json" : path_in;
    const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    const std::string cfg_path = dir + "/tokenizer_config.json";
    return make_tokenizer(read_text(path), path, is_file(cfg_path) ? cfg_path : "");
}

}  // namespace elastic
