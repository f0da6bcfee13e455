// Loads the tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp writes it for byte-level
// BPE models (tokenizer.ggml.model = "gpt2"). tokenizer.ggml.pre names the pre-tokenizer; each
// name maps to the pipeline of the model's HF tokenizer.json so ids match HF exactly:
//   smollm     Digits(individual) + ByteLevel(GPT-2 regex)
//   llama-bpe  Split(Llama-3 regex) + ByteLevel, ignore_merges        (llama3 is an alias)
//   qwen2      NFC + Split(Qwen2 regex) + ByteLevel
//   gpt2       ByteLevel(GPT-2 regex)                                  (default is an alias)
// token_type 3 (control) becomes a special added token, 4 (user-defined) a non-special one.
#include "core/error.h"
#include "formats/gguf.h"
#include "tokenizer/bpe-tokenizer.h"

namespace elastic {

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GGUFFile& g) {
    const std::string& file = g.path();
    try {
        std::string model = g.get_string("tokenizer.ggml.model");
        if (model != "gpt2")
            fail("tokenizer.ggml.model \"%s\" is not supported (only byte-level BPE, \"gpt2\")", model.c_str());
        BpeTokenizerConfig cfg;
        cfg.vocab = g.get_string_array("tokenizer.ggml.tokens");
        if (cfg.vocab.empty()) fail("missing or empty tokenizer.ggml.tokens");
        for (const std::string& m : g.get_string_array("tokenizer.ggml.merges")) {
            size_t sp = m.find(' ');
            if (sp == std::string::npos || m.find(' ', sp + 1) != std::string::npos)
                fail("tokenizer.ggml.merges entry \"%s\" is not two tokens separated by one space", m.c_str());
            cfg.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
        }
        std::vector<double> types = g.get_number_array("tokenizer.ggml.token_type");
        if (!types.empty() && types.size() != cfg.vocab.size())
            fail("tokenizer.ggml.token_type has %zu entries for %zu tokens", types.size(), cfg.vocab.size());
        for (size_t i = 0; i < types.size(); ++i) {
            if (types[i] != 3 && types[i] != 4) continue;
            AddedToken t;
            t.id = int32_t(i);
            t.content = cfg.vocab[i];
            t.special = types[i] == 3;
            if (!t.content.empty()) cfg.added.push_back(std::move(t));
        }

        std::string pre = g.get_string("tokenizer.ggml.pre", "default");
        PreTokenizer& p = cfg.pre;
        if (pre == "smollm") {
            p.steps.push_back(PreTokenizer::digits(true));
            p.steps.push_back(PreTokenizer::byte_level(false, true));
        } else if (pre == "llama-bpe" || pre == "llama3") {
            p.steps.push_back(PreTokenizer::split(kLlama3Pattern, SplitBehavior::Isolated));
            p.steps.push_back(PreTokenizer::byte_level(false, false));
            cfg.ignore_merges = true;
        } else if (pre == "qwen2") {
            p.nfc = true;
            p.steps.push_back(PreTokenizer::split(kQwen2Pattern, SplitBehavior::Isolated));
            p.steps.push_back(PreTokenizer::byte_level(false, false));
        } else if (pre == "gpt2" || pre == "default") {
            p.steps.push_back(PreTokenizer::byte_level(false, true));
        } else {
            fail("tokenizer.ggml.pre \"%s\" is not supported (supported: smollm, llama-bpe, qwen2, gpt2, default)", pre.c_str());
        }
        cfg.bos = int32_t(g.get_int("tokenizer.ggml.bos_token_id", -1));
        cfg.eos = int32_t(g.get_int("tokenizer.ggml.eos_token_id", -1));
        cfg.chat_template = g.get_string("tokenizer.chat_template");
        return std::make_unique<BpeTokenizer>(std::move(cfg));
    } catch (const Error& e) {
        fail("%s: %s", file.c_str(), e.what());
    }
}

}  // namespace elastic
