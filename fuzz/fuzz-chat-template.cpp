// libFuzzer target for the chat templates: input = Jinja source, then "\x01"-separated message
// contents; the template picks the format (ChatML, Llama-3 or none) and the messages are rendered
// with it. A tokenizer with a few tokens of both formats carries the template.
#include "fuzz-common.h"
#include "tokenizer/bpe-tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string in = elastic::fuzz::as_string(data, size);
    const size_t cut = in.find('\x01');
    elastic::BpeTokenizerConfig cfg;
    cfg.vocab = {"a", "b", "c", "\xc4\x8a"};
    for (const char* s : {"<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                          "<|eot_id|>", "<|endoftext|>"}) {
        elastic::AddedToken a;
        a.id = int32_t(cfg.vocab.size() + cfg.added.size());
        a.content = s;
        a.special = true;
        cfg.added.push_back(a);
    }
    cfg.chat_template = in.substr(0, cut);
    try {
        elastic::BpeTokenizer t(cfg);
        std::vector<elastic::ChatMessage> msgs;
        const char* roles[] = {"system", "user", "assistant", "user"};
        size_t pos = cut == std::string::npos ? in.size() : cut + 1;
        for (int k = 0; pos < in.size() && k < 8; ++k) {
            const size_t next = std::min(in.find('\x01', pos), in.size());
            msgs.push_back({roles[k % 4], in.substr(pos, next - pos)});
            pos = next + 1;
        }
        for (bool gen : {true, false}) {
            volatile size_t n = t.apply_chat_template(msgs, gen).size();
            (void)n;
        }
    } catch (const elastic::Error&) {
    }
    return 0;
}
