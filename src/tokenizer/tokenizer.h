// Byte-level BPE tokenizer (GPT-2 family: Llama-3, Qwen2/3, SmolLM2), loaded from a Hugging Face
// tokenizer.json or from GGUF metadata (tokenizer.ggml.*). Must match HF `tokenizers` exactly.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace elastic {

class GGUFFile;

struct ChatMessage {
    std::string role;     // "system", "user", "assistant"
    std::string content;
};

enum class ChatTemplate { None, ChatML, Llama3 };

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    static std::unique_ptr<Tokenizer> from_json_file(const std::string& path);  // tokenizer.json
    // tokenizer.json's text alone (no tokenizer_config.json beside it); `what` names it in errors.
    static std::unique_ptr<Tokenizer> from_json_text(const std::string& text, const std::string& what);
    static std::unique_ptr<Tokenizer> from_gguf(const GGUFFile& gguf);
    // Picks by extension: *.gguf -> GGUF metadata, otherwise tokenizer.json (file or directory).
    static std::unique_ptr<Tokenizer> from_path(const std::string& path);

    // Special/added tokens in `text` are matched first (when parse_special), the rest is
    // pre-tokenised by regex and BPE-merged. No BOS/EOS is added.
    virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const = 0;
    // Bytes of the tokens joined (byte-level decoding); special tokens are written as their text
    // unless skip_special.
    virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
    // The same bytes before invalid UTF-8 is replaced: a prefix of a longer output may end inside a
    // character (a byte-level token holds part of it), which streaming output must hold back
    // rather than print as U+FFFD.
    virtual std::string decode_bytes(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
    virtual std::string token_text(int32_t id) const = 0;  // raw vocabulary string
    virtual int32_t vocab_size() const = 0;
    virtual int32_t token_id(std::string_view text) const = 0;  // -1 if absent
    virtual bool is_special(int32_t id) const = 0;

    int32_t bos_id() const { return bos_; }
    int32_t eos_id() const { return eos_; }
    // All ids that end generation (eos plus e.g. <|im_end|>, <|eot_id|>).
    const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
    ChatTemplate chat_template() const { return chat_template_; }

    // Renders messages with the tokenizer's chat template (ChatML or Llama-3), ending with the
    // assistant header when add_generation_prompt.
    std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) const;

protected:
    // Picks the chat format from a Jinja template (ChatML when it has <|im_start|>, Llama-3 when it
    // has <|start_header_id|>; from the vocabulary when the template is empty), reads the default
    // system message a ChatML template inserts (SmolLM2 does), and fills stop_ids_.
    void init_chat(const std::string& jinja_template);

    int32_t bos_ = -1;
    int32_t eos_ = -1;
    std::vector<int32_t> stop_ids_;
    ChatTemplate chat_template_ = ChatTemplate::None;
    std::string default_system_;  // ChatML: system message used when the first one is not "system"
};

}  // namespace elastic
